package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/bindtest"
	"github.com/sluicehq/sluice/internal/pebbletest"
)

// TestDNS01Wildcard: an edge with ACME and a DNS provider obtains
// *.localhost and localhost from Pebble through DNS-01, Pebble reading
// the TXT records from a BIND the test runs (the zone "localhost", which
// takes updates signed with a TSIG key); a tunnel NAME.localhost is then
// served with the wildcard certificate, and a visitor's first request
// to it makes no ACME order. Once with --acme-dns rfc2136 (updates
// straight to BIND), once with --acme-dns exec (a hook script that runs
// BIND's nsupdate, as a user's script for a DNS host would).
func TestDNS01Wildcard(t *testing.T) {
	t.Parallel()
	ns := bindtest.Start(t, bindtest.Config{Zone: "localhost"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pb, err := pebbletest.Start(ctx, pebbletest.Config{DNSServer: ns.Addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pb.Stop)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "tsig.key")
	if err := os.WriteFile(keyFile, []byte(ns.Key.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"rfc2136", []string{"--acme-dns", "rfc2136", "--dns-server", ns.Addr, "--dns-tsig-key-file", keyFile}},
		{"exec", []string{"--acme-dns", "exec", "--dns-exec", ns.Hook(t)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orders := pb.Orders()
			args := append([]string{
				"--http-listen", "127.0.0.1:" + strconv.Itoa(freePort(t)),
				"--data", t.TempDir(), "--admin-token", "dns01-admin-token-0123",
				"--acme-email", "ops@localhost.test", "--acme-ca", pb.DirectoryURL, "--acme-ca-root", pb.CAFile,
				"--dns-resolvers", ns.Addr, "-v",
			}, tc.args...)
			e := startEdge(t, "dns01-agent-token-0123", args...)
			fail := func(format string, a ...any) {
				t.Helper()
				t.Fatalf(format+"\nedge stderr:\n%s\nPebble:\n%s", append(a, e.stderr, pb.Output())...)
			}

			dial := func(sni string) (*tls.Conn, error) {
				d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: &tls.Config{ServerName: sni, RootCAs: pb.IssuerPool}}
				c, err := d.DialContext(ctx, "tcp", e.addr)
				if err != nil {
					return nil, err
				}
				return c.(*tls.Conn), nil
			}
			// The apex's and the wildcard's certificates are obtained in
			// the background once the edge listens.
			for _, sni := range []string{"localhost", "probe.localhost"} {
				var lastErr error
				for deadline := time.Now().Add(3 * time.Minute); ; {
					c, err := dial(sni)
					if err == nil {
						c.Close()
						break
					}
					lastErr = err
					if e.exited() || time.Now().After(deadline) {
						fail("no certificate for %s: %v", sni, lastErr)
					}
					select {
					case <-e.done:
					case <-time.After(200 * time.Millisecond):
					}
				}
			}
			// The agent reaches the apex (localhost resolves to 127.0.0.1),
			// trusting Pebble's root (--ca).
			up := namedUpstream(t, "behind the wildcard "+tc.name)
			a := startProcEnv(t, "agent dns01", nil,
				"http", strconv.Itoa(up.port), "--edge", fmt.Sprintf("https://localhost:%d", e.port), "--token", "dns01-agent-token-0123", "--name", "demo", "--ca", pb.IssuerRootFile)
			want := fmt.Sprintf("Forwarding https://demo.localhost:%d -> http://127.0.0.1:%d\n", e.port, up.port)
			if !a.waitOutput(a.stdout, want, 30*time.Second) {
				fail("agent never printed %q\nstdout: %s\nstderr: %s", want, a.stdout, a.stderr)
			}

			// The tunnel is served with the wildcard certificate.
			c, err := dial("demo.localhost")
			if err != nil {
				fail("TLS to demo.localhost: %v", err)
			}
			leaf := c.ConnectionState().PeerCertificates[0]
			c.Close()
			if !slices.Contains(leaf.DNSNames, "*.localhost") {
				t.Errorf("demo.localhost is served a certificate for %v, want the wildcard *.localhost", leaf.DNSNames)
			}
			tr := &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: pb.IssuerPool},
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, network, e.addr)
				},
			}
			defer tr.CloseIdleConnections()
			resp, body, err := tryDo(&http.Client{Transport: tr}, "GET", fmt.Sprintf("https://demo.localhost:%d/", e.port), nil, nil, 30*time.Second)
			if err != nil {
				fail("GET demo.localhost: %v", err)
			}
			if resp.StatusCode != 200 || string(body) != "behind the wildcard "+tc.name {
				t.Errorf("GET demo.localhost: %d %q", resp.StatusCode, body)
			}
			// Two orders (the wildcard and the apex), none for the tunnel's
			// name; the challenges' records are gone.
			if n := pb.Orders() - orders; n != 2 {
				t.Errorf("%d ACME orders, want 2 (*.localhost and localhost)", n)
			}
			if txt := ns.TXT(t, "_acme-challenge"); len(txt) != 0 {
				t.Errorf("the challenges' TXT records are left: %q", txt)
			}
		})
	}
}
