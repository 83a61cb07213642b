package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/pebbletest"
)

// pebbleCA is this test binary's Pebble, with the ports its validation
// authority connects to (the ACME edges listen there, one at a time).
type pebbleCA struct {
	*pebbletest.Pebble
	dns               *pebbletest.DNS
	httpPort, tlsPort int
}

var sharedPebble struct {
	once sync.Once
	ca   *pebbleCA
	err  error
}

// acmeCA starts the binary's Pebble (TestMain stops it).
func acmeCA(t *testing.T) *pebbleCA {
	t.Helper()
	sharedPebble.once.Do(func() {
		d, err := pebbletest.StartDNS()
		if err != nil {
			sharedPebble.err = err
			return
		}
		http, tls := freePort(t), freePort(t)
		p, err := pebbletest.Start(context.Background(), pebbletest.Config{HTTPPort: http, TLSPort: tls, DNSServer: d.Addr})
		if err != nil {
			d.Close()
			sharedPebble.err = err
			return
		}
		sharedPebble.ca = &pebbleCA{Pebble: p, dns: d, httpPort: http, tlsPort: tls}
	})
	if sharedPebble.err != nil {
		t.Fatal(sharedPebble.err)
	}
	return sharedPebble.ca
}

func stopPebble() {
	if ca := sharedPebble.ca; ca != nil {
		ca.Stop()
		ca.dns.Close()
	}
}

// runEnv runs sluice with extra environment variables and returns its
// result.
func runEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sluiceBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

// Automatic TLS with the built binary against Pebble (real HTTP-01 and
// TLS-ALPN-01 validation): the stored tunnel's name, its custom hostname
// (sluice tunnels create --hostname) and the apex get certificates; a
// client trusting only Pebble's issuing root reaches the tunnel over HTTPS
// at both names through an agent that connected over wss://; an SNI name
// nobody claims gets a TLS error and no ACME order; a restart with
// the same --data serves the same certificates without a new order.
func TestACMEEdge(t *testing.T) {
	t.Parallel()
	ca := acmeCA(t)
	up := newTestUpstream(t)
	up.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "upstream saw %s %s", r.Host, r.Header.Get("X-Forwarded-Proto"))
	})
	addr := "127.0.0.1:" + strconv.Itoa(ca.tlsPort)
	edgeURL := "https://localhost:" + strconv.Itoa(ca.tlsPort)
	data := t.TempDir()
	startACME := func() *proc {
		p := startProc(t, "acme edge", "edge", "--listen", addr, "--http-listen", "127.0.0.1:"+strconv.Itoa(ca.httpPort),
			"--domain", "localhost", "--data", data, "--admin-token", "A",
			"--acme-email", "e2e@example.com", "--acme-ca", ca.DirectoryURL, "--acme-ca-root", ca.CAFile)
		if !p.waitOutput(p.stderr, "sluice edge listening on "+addr, 30*time.Second) {
			t.Fatalf("the edge did not start: %s", p.stderr)
		}
		return p
	}
	e := startACME()
	// Every command trusts Pebble's issuing root with --ca, as a user of
	// an edge with a private CA does.
	r := runEnv(t, nil, "tokens", "create", "--edge", edgeURL, "--admin-token", "A", "--ca", ca.IssuerRootFile)
	if r.code != 0 {
		t.Fatalf("tokens create: %d %s\nedge: %s", r.code, r.stderr, e.stderr)
	}
	secret := strings.TrimSpace(r.stdout)
	if r := runEnv(t, nil, "tunnels", "create", "app", "--upstream", "http://127.0.0.1:"+strconv.Itoa(up.port),
		"--agent-token", secret, "--hostname", "shop.example.test", "--edge", edgeURL, "--admin-token", "A", "--ca", ca.IssuerRootFile); r.code != 0 {
		t.Fatalf("tunnels create: %d %s", r.code, r.stderr)
	}
	// Without --ca the agent stops, saying what to fix.
	if r := runEnv(t, nil, "http", strconv.Itoa(up.port), "--edge", edgeURL, "--token", secret, "--name", "app"); r.code != 1 ||
		!strings.Contains(r.stderr, "--ca FILE") {
		t.Fatalf("an agent without --ca: exit %d, stderr %s; want 1 and a message naming --ca FILE", r.code, r.stderr)
	}
	a := startProc(t, "agent", "http", strconv.Itoa(up.port), "--edge", edgeURL, "--token", secret, "--name", "app", "--ca", ca.IssuerRootFile)
	want := fmt.Sprintf("Forwarding https://app.localhost:%d -> http://127.0.0.1:%d\n", ca.tlsPort, up.port)
	if !a.waitOutput(a.stdout, want, 2*time.Minute) {
		t.Fatalf("agent never printed %q\nstdout: %s\nstderr: %s", want, a.stdout, a.stderr)
	}

	pool := ca.IssuerPool
	c := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(fmt.Sprintf("https://app.localhost:%d/", ca.tlsPort))
	if err != nil {
		t.Fatalf("GET https://app.localhost: %v\nedge: %s", err, e.stderr)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != fmt.Sprintf("upstream saw app.localhost:%d https", ca.tlsPort) || resp.ProtoMajor != 2 {
		t.Fatalf("GET app: %s %s %q", resp.Proto, resp.Status, body)
	}
	resp, err = c.Get(fmt.Sprintf("https://shop.example.test:%d/", ca.tlsPort))
	if err != nil {
		t.Fatalf("GET https://shop.example.test: %v\nedge: %s", err, e.stderr)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != fmt.Sprintf("upstream saw shop.example.test:%d https", ca.tlsPort) || resp.ProtoMajor != 2 {
		t.Fatalf("GET the custom hostname: %s %s %q", resp.Proto, resp.Status, body)
	}

	handshake := func(sni string) (*x509.Certificate, error) {
		d := &tls.Dialer{Config: &tls.Config{ServerName: sni, RootCAs: pool}}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		return conn.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
	}
	orders := ca.Orders()
	for _, name := range []string{"nobody.localhost", "unclaimed.example.test"} {
		if _, err := handshake(name); err == nil {
			t.Fatalf("%s got a certificate", name)
		}
	}
	if n := ca.Orders(); n != orders {
		t.Fatalf("an unclaimed name caused %d orders", n-orders)
	}

	serials := map[string]string{}
	for _, name := range []string{"localhost", "app.localhost", "shop.example.test"} {
		leaf, err := handshake(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		serials[name] = leaf.SerialNumber.String()
	}
	e.kill()
	e = startACME()
	for _, name := range []string{"localhost", "app.localhost", "shop.example.test"} {
		leaf, err := handshake(name)
		if err != nil {
			t.Fatalf("after the restart, %s: %v\nedge: %s", name, err, e.stderr)
		}
		if leaf.SerialNumber.String() != serials[name] {
			t.Fatalf("after the restart, %s has a new certificate", name)
		}
	}
	if n := ca.Orders(); n != orders {
		t.Fatalf("the restart caused %d orders", n-orders)
	}
}
