package agent

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/internal/errpage"
	"github.com/sluicehq/sluice/store"
)

// protoEcho answers with the protocol the request arrived in, streamed
// (no Content-Length), and an undeclared trailer, as gRPC servers send.
func protoEcho(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "%s %s", r.Proto, r.Host)
	http.NewResponseController(w).Flush()
	w.Header().Set(http.TrailerPrefix+"X-Proto", r.Proto)
}

// h2cServer serves h on loopback in HTTP/2 with prior knowledge only
// (no HTTP/1.1) and returns its h2c:// URL.
func h2cServer(t *testing.T, h http.Handler) *url.URL {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	u.Scheme = "h2c"
	return u
}

// The agent speaks HTTP/2 to local servers that want it: h2c:// with prior
// knowledge, https:// through ALPN (with the certificate trusted through
// UpstreamCA, or not checked with UpstreamInsecure; refused otherwise,
// with a 502 that says so).
func TestUpstreamHTTP2(t *testing.T) {
	t.Parallel()
	h2cURL := h2cServer(t, http.HandlerFunc(protoEcho))

	tlsUp := httptest.NewUnstartedServer(http.HandlerFunc(protoEcho))
	tlsUp.EnableHTTP2 = true
	tlsUp.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted case's handshake errors
	tlsUp.StartTLS()
	t.Cleanup(tlsUp.Close)
	tlsURL, _ := url.Parse(tlsUp.URL)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsUp.Certificate().Raw})

	for _, proto := range []string{"v1", "v2"} {
		for _, tc := range []struct {
			name string
			cfg  Config
		}{
			{"h2c", Config{Upstream: h2cURL}},
			{"https with UpstreamCA", Config{Upstream: tlsURL, UpstreamCA: ca}},
			{"https with UpstreamInsecure", Config{Upstream: tlsURL, UpstreamInsecure: true}},
		} {
			t.Run(proto+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				addr := tunnelToConfig(t, proto, nil, tc.cfg)
				req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
				req.Host = "unit.localhost"
				resp, body := publicDo(t, req)
				if want := "HTTP/2.0 unit.localhost"; resp.StatusCode != 200 || string(body) != want {
					t.Fatalf("%d %q, want 200 %q", resp.StatusCode, body, want)
				}
				if got := resp.Trailer.Get("X-Proto"); got != "HTTP/2.0" {
					t.Errorf("trailer X-Proto = %q, want HTTP/2.0 (trailers %v)", got, resp.Trailer)
				}
			})
		}
		t.Run(proto+"/https untrusted", func(t *testing.T) {
			t.Parallel()
			var logs syncBuffer
			addr := tunnelToConfig(t, proto, nil, Config{Upstream: tlsURL, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
			req.Host = "unit.localhost"
			resp, body := publicDo(t, req)
			if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "does not trust the TLS certificate of "+tlsURL.Host) ||
				!strings.Contains(string(body), "--upstream-ca") {
				t.Fatalf("%d %s; want 502 naming the untrusted certificate", resp.StatusCode, body)
			}
			id := resp.Header.Get(errpage.IDHeader)
			if l := logs.String(); !strings.Contains(l, "request_id="+id) || !strings.Contains(l, "x509: certificate signed by unknown authority") {
				t.Errorf("the agent's log lacks the request id %s or the certificate error:\n%s", id, l)
			}
		})
	}
}

func TestNewUpstreamSchemes(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"http://127.0.0.1:1", "https://127.0.0.1:1", "h2c://127.0.0.1:1"} {
		u, _ := url.Parse(s)
		if _, err := New(Config{Edge: "http://x", Name: "a", Upstream: u}); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	u, _ := url.Parse("grpc://127.0.0.1:1")
	if _, err := New(Config{Edge: "http://x", Name: "a", Upstream: u}); err == nil || !strings.Contains(err.Error(), "h2c://") {
		t.Errorf("grpc://: %v, want an error naming the schemes", err)
	}
	if _, err := New(Config{Edge: "http://x", Name: "a", Upstream: &url.URL{Scheme: "https", Host: "x"}, UpstreamCA: []byte("no PEM")}); err == nil {
		t.Error("an UpstreamCA without a certificate was accepted")
	}
}

// A managed tunnel takes an h2c:// upstream too.
func TestManagedH2CUpstream(t *testing.T) {
	t.Parallel()
	addr, st, admin := storeEdge(t)
	ctx := context.Background()
	_, secret, err := st.CreateToken(ctx, store.KindAgent, "owner")
	if err != nil {
		t.Fatal(err)
	}
	up := h2cServer(t, http.HandlerFunc(protoEcho))
	if _, err := admin.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("grpc"), Upstream: ptr(up.String()), AgentToken: ptr(secret)}); err != nil {
		t.Fatal(err)
	}
	m, err := NewManaged(ManagedConfig{Edge: "http://" + addr, Token: secret})
	if err != nil {
		t.Fatal(err)
	}
	mctx, mcancel := context.WithCancel(ctx)
	mdone := make(chan error, 1)
	go func() { mdone <- m.Run(mctx) }()
	defer func() {
		mcancel()
		if err := <-mdone; err != nil {
			t.Errorf("managed Run: %v", err)
		}
	}()
	waitServes(t, addr, "grpc", "HTTP/2.0 grpc.localhost")
}
