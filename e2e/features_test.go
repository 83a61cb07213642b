package e2e

import (
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
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testcert"
)

// selfSigned writes a certificate for localhost, *.localhost and 127.0.0.1
// and its key, and returns their paths and a pool that trusts it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	c := testcert.New(t, time.Time{}, time.Time{}, "localhost", "*.localhost", "127.0.0.1")
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, c.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, c.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, c.Pool
}

// TLS at the edge: public clients get HTTPS with HTTP/2, and the agent
// connects over wss:// (trusting the test CA through SSL_CERT_FILE).
func TestEdgeTLSAndHTTP2(t *testing.T) { forProtocols(t, testEdgeTLSAndHTTP2) }

func testEdgeTLSAndHTTP2(t *testing.T, proto string) {
	certFile, keyFile, pool := selfSigned(t)
	up := newTestUpstream(t)
	up.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "proto-at-upstream=%s host=%s xfp=%s", r.Proto, r.Host, r.Header.Get("X-Forwarded-Proto"))
	})
	e := startEdge(t, "T", "--tls-cert", certFile, "--tls-key", keyFile)
	a := startProcEnv(t, "agent tls", []string{"SSL_CERT_FILE=" + certFile},
		"http", strconv.Itoa(up.port), "--edge", "https://"+e.addr, "--token", "T", "--name", "secure", "--protocol", proto)
	want := fmt.Sprintf("Forwarding https://secure.localhost:%d -> http://127.0.0.1:%d\n", e.port, up.port)
	if !a.waitOutput(a.stdout, want, 15*time.Second) {
		t.Fatalf("agent never printed %q\nstdout: %s\nstderr: %s", want, a.stdout, a.stderr)
	}
	c := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, e.addr)
		},
	}}
	resp, err := c.Get(fmt.Sprintf("https://secure.localhost:%d/x", e.port))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Proto != "HTTP/2.0" {
		t.Errorf("public client got %s, want HTTP/2.0", resp.Proto)
	}
	if want := fmt.Sprintf("proto-at-upstream=HTTP/1.1 host=secure.localhost:%d xfp=https", e.port); string(body) != want {
		t.Errorf("upstream saw %q, want %q", body, want)
	}
}

func TestEdgeTokensFile(t *testing.T) { forProtocols(t, testEdgeTokensFile) }

func testEdgeTokensFile(t *testing.T, proto string) {
	file := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(file, []byte("# agents of the team\nalpha-token\n\n  beta-token  \n"), 0o600)
	up := namedUpstream(t, "up")
	e := startEdge(t, "", "--tokens", file)
	startAgent(t, e, proto, "alpha", "alpha-token", up.port)
	startAgent(t, e, proto, "beta", "beta-token", up.port)
	bad := startProc(t, "agent bad", "http", strconv.Itoa(up.port), "--edge", "http://"+e.addr, "--token", "T", "--name", "gamma", "--protocol", proto)
	select {
	case <-bad.done:
	case <-time.After(15 * time.Second):
		t.Fatal("an agent with a wrong token kept running")
	}
	if bad.err == nil || !strings.Contains(bad.stderr.String(), "wrong agent token") {
		t.Fatalf("wrong token: exit %v, stderr %q", bad.err, bad.stderr)
	}
}

func TestAgentHostHeader(t *testing.T) { forProtocols(t, testAgentHostHeader) }

func testAgentHostHeader(t *testing.T, proto string) {
	up := newTestUpstream(t)
	up.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Host) })
	e := startEdge(t, "T")
	c := tunnelClient(t, e.addr)
	cases := []struct{ flag, want string }{
		{"preserve", fmt.Sprintf("hh-preserve.localhost:%d", e.port)},
		{"rewrite", fmt.Sprintf("127.0.0.1:%d", up.port)},
		{"app.internal", "app.internal"},
	}
	for i, tc := range cases {
		name := []string{"hh-preserve", "hh-rewrite", "hh-literal"}[i]
		p := startProc(t, "agent "+name, "http", strconv.Itoa(up.port), "--edge", "http://"+e.addr, "--token", "T", "--name", name, "--host-header", tc.flag, "--protocol", proto)
		if !p.waitOutput(p.stdout, "Forwarding", 15*time.Second) {
			t.Fatalf("agent %s did not register: %s", name, p.stderr)
		}
		resp, body := do(t, c, "GET", e.publicURL(name)+"/", nil, nil)
		if resp.StatusCode != 200 || string(body) != tc.want {
			t.Errorf("--host-header %s: upstream saw Host %q, want %q", tc.flag, body, tc.want)
		}
	}
}

// SIGTERM: the edge stops accepting, lets a stream in flight run for the
// grace period, then aborts it and exits 0.
func TestEdgeGracefulShutdown(t *testing.T) { forProtocols(t, testEdgeGracefulShutdown) }

func testEdgeGracefulShutdown(t *testing.T, proto string) {
	up := newTestUpstream(t)
	up.mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for i := 0; ; i++ {
			fmt.Fprintf(w, "data: %d\n\n", i)
			if rc.Flush() != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-up.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	const grace = 1500 * time.Millisecond
	e := startEdge(t, "T", "--shutdown-grace", grace.String())
	startAgent(t, e, proto, "grace", "T", up.port)
	c := tunnelClient(t, e.addr)
	resp, err := c.Get(e.publicURL("grace") + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 64)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatal(err)
	}
	e.cmd.Process.Signal(syscall.SIGTERM)
	stopped := time.Now()

	// New connections are refused soon.
	deadline := time.Now().Add(2 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", e.addr, 200*time.Millisecond)
		if err != nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("the edge still accepts connections after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The stream in flight goes on through the grace period, then ends
	// with an error (aborted), not cleanly.
	var readErr error
	for readErr == nil {
		_, readErr = resp.Body.Read(buf)
	}
	lived := time.Since(stopped)
	if lived < grace*8/10 {
		t.Errorf("the stream ended %v after SIGTERM, before the %v grace", lived, grace)
	}
	if errors.Is(readErr, io.EOF) {
		t.Errorf("the stream ended cleanly at shutdown, want an abort")
	}
	select {
	case <-e.done:
		var ee *exec.ExitError
		if errors.As(e.err, &ee) {
			t.Errorf("edge exit after SIGTERM: %v, want 0", e.err)
		}
	case <-time.After(grace + 5*time.Second):
		t.Fatal("the edge did not exit after the grace period")
	}
	t.Logf("stream lived %v after SIGTERM (grace %v), ended with %v", lived, grace, readErr)
}

// Response trailers cross the tunnel to the public client.
func TestTrailersThroughTunnel(t *testing.T) { forProtocols(t, testTrailersThroughTunnel) }

func testTrailersThroughTunnel(t *testing.T, proto string) {
	up := newTestUpstream(t)
	up.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		io.WriteString(w, "body part one, ")
		http.NewResponseController(w).Flush()
		io.WriteString(w, "part two")
		w.Header().Set("X-Checksum", "abc123")
	})
	e := startEdge(t, "T")
	startAgent(t, e, proto, "trailers", "T", up.port)
	resp, body := do(t, tunnelClient(t, e.addr), "GET", e.publicURL("trailers")+"/", nil, nil)
	if string(body) != "body part one, part two" {
		t.Fatalf("body %q", body)
	}
	if got := resp.Trailer.Get("X-Checksum"); got != "abc123" {
		t.Fatalf("trailer X-Checksum = %q (trailers %v)", got, resp.Trailer)
	}
}

// Protocol negotiation: "auto" (the default) speaks v2 with an edge that
// offers it and falls back to v1 with one that does not; "v2" against a
// v1-only edge stops with a clear message instead of retrying.
func TestProtocolNegotiation(t *testing.T) {
	t.Parallel()
	up := namedUpstream(t, "negotiated")
	for _, tc := range []struct {
		name      string
		edgeFlags []string
		want      string
	}{
		{"auto with a v2 edge", nil, "tunnel up, protocol v2"},
		{"auto with a v1-only edge", []string{"--protocols", "v1"}, "tunnel up, protocol v1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := startEdge(t, "T", tc.edgeFlags...)
			a := startProc(t, "agent auto", "http", strconv.Itoa(up.port), "--edge", "http://"+e.addr, "--token", "T", "--name", "auto")
			if !a.waitOutput(a.stderr, tc.want, 15*time.Second) {
				t.Fatalf("agent never printed %q\nstdout: %s\nstderr: %s", tc.want, a.stdout, a.stderr)
			}
			c := tunnelClient(t, e.addr)
			resp, body := do(t, c, "GET", e.publicURL("auto")+"/", nil, nil)
			if resp.StatusCode != 200 || string(body) != "negotiated" {
				t.Fatalf("GET: %d %q", resp.StatusCode, body)
			}
		})
	}
	t.Run("v2 with a v1-only edge", func(t *testing.T) {
		t.Parallel()
		e := startEdge(t, "T", "--protocols", "v1")
		r := run(t, 20*time.Second, "http", strconv.Itoa(up.port), "--edge", "http://"+e.addr, "--token", "T", "--name", "strict", "--protocol", "v2")
		if r.code == 0 || !strings.Contains(r.stderr, "does not offer protocol v2") {
			t.Fatalf("exit %d, stderr %q; want a non-zero exit saying the edge does not offer v2", r.code, r.stderr)
		}
	})
}
