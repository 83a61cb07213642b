package edge_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/internal/certstore"
	"github.com/sluicehq/sluice/store"
)

// A custom hostname of a stored tunnel gets its certificate on demand,
// through HTTP-01 and through TLS-ALPN-01 against Pebble (real
// validation), kept in the store (certstore); a client that trusts only
// Pebble's root reaches the tunnel over HTTPS at that hostname, and the
// upstream sees it; an SNI name no tunnel claims gets no certificate and
// causes no ACME order.
func TestACMECustomHostname(t *testing.T) {
	ca := sharedPebble(t)
	for _, c := range []struct {
		challenge string
		host      string
		mut       func(*edge.Config)
	}{
		{"http-01", "shop.http01.example", func(c *edge.Config) { c.ACME.DisableTLSALPN = true }},
		{"tls-alpn-01", "shop.alpn.example", func(c *edge.Config) { c.ACME.HTTPAddr = "" }},
	} {
		t.Run(c.challenge, func(t *testing.T) {
			ctx := context.Background()
			st, err := store.Open(ctx, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			tok, secret, err := st.CreateToken(ctx, store.KindAgent, "owner")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.CreateTunnel(ctx, store.Tunnel{Name: "app", AgentTokenID: tok.ID, Upstream: "http://127.0.0.1:1", Enabled: true,
				Hostnames: []string{c.host}}); err != nil {
				t.Fatal(err)
			}
			e := startACMEEdge(t, ca, "custom.test", func(cfg *edge.Config) {
				cfg.Store = st
				cfg.ACME.Storage = certstore.New(st)
				c.mut(cfg)
			})
			// The apex's certificate first: its order, which the edge
			// starts at once, must not fall among those counted below.
			e.mustHandshake(t, "custom.test")
			orders := ca.Orders()
			for _, name := range []string{"unclaimed.example", "x." + c.host, "nobody.custom.test"} {
				if _, err := e.handshake(name); err == nil {
					t.Fatalf("%s got a certificate", name)
				}
			}
			if n := ca.Orders(); n != orders {
				t.Fatalf("unclaimed names caused %d ACME orders", n-orders)
			}

			leaf := e.mustHandshake(t, c.host)
			if err := leaf.VerifyHostname(c.host); err != nil {
				t.Fatal(err)
			}
			httpValidated := strings.Contains(ca.Output(), "validate w/ HTTP: http://"+c.host+":"+strconv.Itoa(ca.httpPort)+"/.well-known/acme-challenge/")
			if httpValidated != (c.challenge == "http-01") {
				t.Fatalf("%s: validated through HTTP-01: %v", c.challenge, httpValidated)
			}
			keys, err := certstore.New(st).List(ctx, "certificates", true)
			if err != nil || !strings.Contains(strings.Join(keys, " "), c.host+".crt") {
				t.Fatalf("the certificate is not in the store: %q, %v", keys, err)
			}

			// The tunnel's agent, over wss://, and a visitor at the hostname.
			d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: ca.IssuerPool}, HandshakeTimeout: patience,
				NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, network, e.addr)
				}}
			ws, _, err := d.Dial("wss://custom.test/agent", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ws.Close()
			a := &rawAgent{ws: ws}
			a.send(t, `{"type":"register","tunnel_id":"app","agent_token":"`+secret+`"}`)
			if f := a.read(t, patience); f.typ() != "registered" {
				t.Fatalf("register: %s", f.raw)
			}
			hc := e.client()
			defer hc.CloseIdleConnections()
			type answer struct {
				resp *http.Response
				body []byte
				err  error
			}
			got := make(chan answer, 1)
			go func() {
				resp, err := hc.Get("https://" + c.host + "/page")
				if err != nil {
					got <- answer{err: err}
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				got <- answer{resp, body, err}
			}()
			r := a.expectRequest(t)
			if r.Path != "/page" || r.Headers["Host"] != c.host || r.Headers["X-Forwarded-Host"] != c.host || r.Headers["X-Forwarded-Proto"] != "https" {
				t.Errorf("upstream got %s with headers %v", r.Path, r.Headers)
			}
			a.respond(t, r.ID, 200, map[string]string{"Content-Type": "text/plain"}, []byte("through the tunnel"))
			ans := <-got
			if ans.err != nil || ans.resp.StatusCode != 200 || string(ans.body) != "through the tunnel" || ans.resp.ProtoMajor != 2 {
				t.Fatalf("GET https://%s/page: %+v", c.host, ans)
			}
		})
	}
}
