package edge_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/internal/pebbletest"
	"github.com/sluicehq/sluice/store"
)

// acmeCA is the Pebble shared by this package's ACME tests, with the
// ports its validation authority connects to: the tests' edges listen
// there, one test at a time.
type acmeCA struct {
	*pebbletest.Pebble
	httpPort, tlsPort int
}

var pebbles struct {
	mu  sync.Mutex
	dns *pebbletest.DNS
	all []*pebbletest.Pebble
}

// startPebble starts a Pebble for this test binary (stopped by TestMain),
// with certificates valid for validity (0: 90 days).
func startPebble(t *testing.T, validity time.Duration) *acmeCA {
	t.Helper()
	pebbles.mu.Lock()
	defer pebbles.mu.Unlock()
	if pebbles.dns == nil {
		d, err := pebbletest.StartDNS()
		if err != nil {
			t.Fatal(err)
		}
		pebbles.dns = d
	}
	ports := make([]int, 2)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	p, err := pebbletest.Start(context.Background(), pebbletest.Config{HTTPPort: ports[0], TLSPort: ports[1], DNSServer: pebbles.dns.Addr, Validity: validity})
	if err != nil {
		t.Fatal(err)
	}
	pebbles.all = append(pebbles.all, p)
	return &acmeCA{Pebble: p, httpPort: ports[0], tlsPort: ports[1]}
}

var sharedCA struct {
	once sync.Once
	ca   *acmeCA
}

// sharedPebble is the package's Pebble with the default validity.
func sharedPebble(t *testing.T) *acmeCA {
	sharedCA.once.Do(func() { sharedCA.ca = startPebble(t, 0) })
	if sharedCA.ca == nil {
		t.Fatal("the shared Pebble did not start")
	}
	return sharedCA.ca
}

func stopPebbles() {
	pebbles.mu.Lock()
	defer pebbles.mu.Unlock()
	for _, p := range pebbles.all {
		p.Stop()
	}
	if pebbles.dns != nil {
		pebbles.dns.Close()
	}
}

type acmeEdge struct {
	srv  *edge.Server
	addr string // 127.0.0.1:tlsPort
	logs *logBuffer
	ca   *acmeCA
}

// startACMEEdge runs an edge with ACME from ca on ca's ports: TLS on
// tlsPort, and plain HTTP (challenges and redirects) on httpPort when
// mut leaves cfg.ACME.HTTPAddr set.
func startACMEEdge(t *testing.T, ca *acmeCA, domain string, mut func(*edge.Config)) *acmeEdge {
	t.Helper()
	logs := &logBuffer{}
	cfg := edge.Config{
		Tokens: []string{"T"},
		Domain: domain,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		ACME: edge.ACMEConfig{
			Email: "ops@" + domain, CA: ca.DirectoryURL, CARoots: ca.CAPool,
			Storage:  &certmagic.FileStorage{Path: t.TempDir()},
			HTTPAddr: "127.0.0.1:" + strconv.Itoa(ca.httpPort),
		},
	}
	if mut != nil {
		mut(&cfg)
	}
	srv, err := edge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(ca.tlsPort))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(ctx, ln, time.Second); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	if cfg.ACME.HTTPAddr != "" {
		hln, err := net.Listen("tcp", cfg.ACME.HTTPAddr)
		if err != nil {
			cancel()
			wg.Wait()
			t.Fatal(err)
		}
		wg.Go(func() {
			if err := srv.ServeRedirect(ctx, hln); err != nil {
				t.Errorf("ServeRedirect: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		srv.Close()
		if t.Failed() {
			t.Logf("edge logs:\n%s", logs)
		}
	})
	return &acmeEdge{srv: srv, addr: ln.Addr().String(), logs: logs, ca: ca}
}

// handshake does a TLS handshake with the edge for sni, trusting only
// Pebble's issuing root, and returns the verified leaf.
func (e *acmeEdge) handshake(sni string) (*x509.Certificate, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: patience}, Config: &tls.Config{ServerName: sni, RootCAs: e.ca.IssuerPool}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*patience)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", e.addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

func (e *acmeEdge) mustHandshake(t *testing.T, sni string) *x509.Certificate {
	t.Helper()
	leaf, err := e.handshake(sni)
	if err != nil {
		t.Fatalf("handshake for %s: %v\npebble:\n%s", sni, err, e.ca.Output())
	}
	return leaf
}

// client is an HTTPS client that trusts only Pebble's issuing root and
// reaches every host at the edge.
func (e *acmeEdge) client() *http.Client {
	return &http.Client{Timeout: 2 * patience, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: e.ca.IssuerPool},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, e.addr)
		},
	}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// storeWithTunnel returns a store holding tunnel name.
func storeWithTunnel(t *testing.T, name string) *store.Store {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tok, _, err := st.CreateToken(ctx, "agent", "owner")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateTunnel(ctx, store.Tunnel{Name: name, AgentTokenID: tok.ID, Upstream: "http://127.0.0.1:1", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	return st
}

// TLS-ALPN-01 (the edge has no HTTP listener, so no HTTP-01): the apex, a
// stored tunnel's name and an online ad-hoc tunnel's name get certificates
// that chain to Pebble's root, and HTTPS (h2) reaches the edge's routing;
// SNI names nobody claims get a TLS error and cause no ACME order.
func TestACMETLSALPN01(t *testing.T) {
	ca := sharedPebble(t)
	const domain = "alpn.test"
	e := startACMEEdge(t, ca, domain, func(c *edge.Config) {
		c.ACME.HTTPAddr = ""
		c.Store = storeWithTunnel(t, "app")
	})
	for _, name := range []string{domain, "app." + domain} {
		leaf := e.mustHandshake(t, name)
		if err := leaf.VerifyHostname(name); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := e.client().Get("https://app." + domain + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || resp.ProtoMajor != 2 || !strings.Contains(string(body), "app."+domain) {
		t.Fatalf("GET app: %s %s %s, want the edge's 404 naming the host (no agent yet) over HTTP/2", resp.Proto, resp.Status, body)
	}

	// An ad-hoc tunnel, online at this edge (its agent over wss://).
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: ca.IssuerPool}, HandshakeTimeout: patience,
		NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, e.addr)
		}}
	ws, _, err := d.Dial("wss://"+domain+"/agent", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	a := &rawAgent{ws: ws}
	a.send(t, `{"type":"register","tunnel_id":"adhoc","agent_token":"T"}`)
	if f := a.read(t, patience); f.typ() != "registered" {
		t.Fatalf("register: %s", f.raw)
	}
	e.mustHandshake(t, "adhoc."+domain)

	if strings.Contains(ca.Output(), "validate w/ HTTP: http://app."+domain) {
		t.Fatal("HTTP-01 was used without an HTTP listener")
	}

	orders := ca.Orders()
	for _, name := range []string{"nobody." + domain, "stranger.example", "a.b." + domain, "-x." + domain} {
		if _, err := e.handshake(name); err == nil {
			t.Fatalf("%s got a certificate", name)
		}
	}
	if n := ca.Orders(); n != orders {
		t.Fatalf("unclaimed names caused %d ACME orders", n-orders)
	}
	for line := range strings.Lines(e.logs.String()) {
		if strings.Contains(line, "nobody") && (strings.Contains(line, "obtain") || strings.Contains(line, "lock")) {
			t.Fatalf("the edge tried to obtain a certificate for nobody's name: %s", line)
		}
	}
}

// HTTP-01 (TLS-ALPN-01 off): the CA fetches the challenges from the
// edge's HTTP listener, for the apex and a stored tunnel; that listener
// redirects everything else to HTTPS.
func TestACMEHTTP01(t *testing.T) {
	ca := sharedPebble(t)
	const domain = "http01.test"
	e := startACMEEdge(t, ca, domain, func(c *edge.Config) {
		c.ACME.DisableTLSALPN = true
		c.Store = storeWithTunnel(t, "app")
	})
	for _, name := range []string{domain, "app." + domain} {
		e.mustHandshake(t, name)
		if want := "validate w/ HTTP: http://" + name + ":" + strconv.Itoa(ca.httpPort) + "/.well-known/acme-challenge/"; !strings.Contains(ca.Output(), want) {
			t.Fatalf("Pebble did not validate %s through HTTP-01", name)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:"+strconv.Itoa(ca.httpPort)+"/x/y?z=1", nil)
	req.Host = "app." + domain
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := "https://app." + domain + ":" + strconv.Itoa(ca.tlsPort) + "/x/y?z=1"
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Fatalf("plain HTTP: %s Location %q, want 308 to %q", resp.Status, resp.Header.Get("Location"), want)
	}
}

// A certificate close to expiry is renewed without a restart: with
// Pebble's certificates valid 12 s and a renewal check every second, the
// edge soon serves a new certificate from a second order.
func TestACMERenewal(t *testing.T) {
	ca := startPebble(t, 12*time.Second)
	const domain = "renew.test"
	e := startACMEEdge(t, ca, domain, func(c *edge.Config) {
		c.ACME.HTTPAddr = ""
		c.ACME.RenewCheckInterval = time.Second
	})
	first := e.mustHandshake(t, domain)
	deadline := time.Now().Add(2 * patience)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		leaf, err := e.handshake(domain)
		if err == nil && leaf.SerialNumber.Cmp(first.SerialNumber) != 0 {
			if !leaf.NotBefore.After(first.NotBefore) && !leaf.NotBefore.Equal(first.NotBefore) {
				t.Fatalf("the new certificate is older")
			}
			break
		}
		var verr *tls.CertificateVerificationError
		if err != nil && !errors.As(err, &verr) {
			t.Fatalf("handshake: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the certificate was never renewed\n%s", e.logs)
		}
	}
	if n := ca.Orders(); n < 2 {
		t.Fatalf("%d orders, want a second one for the renewal", n)
	}
	if !strings.Contains(e.logs.String(), "renewal=true") {
		t.Fatalf("no renewal logged:\n%s", e.logs)
	}
}
