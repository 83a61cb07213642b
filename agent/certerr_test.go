package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/internal/testcert"
	"github.com/sluicehq/sluice/store"
)

// tlsEdge runs an in-process edge with cfg behind httptest's TLS
// (a certificate for 127.0.0.1 and example.com from httptest's own CA);
// it returns the edge's port and a pool that trusts the certificate.
func tlsEdge(t *testing.T, cfg edge.Config) (port string, pool *x509.CertPool) {
	t.Helper()
	return tlsEdgeCert(t, cfg, nil)
}

// tlsEdgeCert is tlsEdge with cert instead of httptest's, if not nil.
func tlsEdgeCert(t *testing.T, cfg edge.Config, cert *tls.Certificate) (port string, pool *x509.CertPool) {
	t.Helper()
	srv, err := edge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(srv)
	if cert != nil {
		ts.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}}
	}
	ts.StartTLS()
	t.Cleanup(func() {
		srv.Close()
		ts.Close()
	})
	pool = x509.NewCertPool()
	pool.AddCert(ts.Certificate())
	if cert != nil {
		pool.AddCert(cert.Leaf)
	}
	u, _ := url.Parse(ts.URL)
	return u.Port(), pool
}

// An agent whose edge's certificate fails verification stops after
// CertAttempts connections with a *CertError that says what to fix; with
// the CA trusted it connects over wss://.
func TestAgentCertError(t *testing.T) {
	t.Parallel()
	cfg := edge.DefaultConfig()
	cfg.Tokens = []string{"T"}
	port, pool := tlsEdge(t, cfg)
	up := &url.URL{Scheme: "http", Host: "127.0.0.1:1"}
	cases := []struct {
		name, host string
		tls        *tls.Config
		want       string // in the message
		as         any
	}{
		{"unknown authority", "127.0.0.1", nil, "give that CA's certificate (PEM) with --ca FILE", &x509.UnknownAuthorityError{}},
		{"name mismatch", "localhost", &tls.Config{RootCAs: pool}, "not valid for localhost", &x509.HostnameError{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var retries atomic.Int32
			a, err := New(Config{Edge: "https://" + tc.host + ":" + port, Token: "T", Name: "c", Upstream: up, TLSClientConfig: tc.tls,
				OnRetry: func(error, time.Duration) { retries.Add(1) }})
			if err != nil {
				t.Fatal(err)
			}
			err = a.Run(context.Background())
			var ce *CertError
			if !errors.As(err, &ce) {
				t.Fatalf("Run = %v, want a *CertError", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("message %q does not say %q", err, tc.want)
			}
			switch want := tc.as.(type) {
			case *x509.UnknownAuthorityError:
				if !errors.As(err, want) {
					t.Errorf("%v is not an x509.UnknownAuthorityError", err)
				}
			case *x509.HostnameError:
				if !errors.As(err, want) {
					t.Errorf("%v is not an x509.HostnameError", err)
				}
			}
			if got := retries.Load(); got != CertAttempts-1 {
				t.Errorf("%d retries, want %d (CertAttempts %d connections)", got, CertAttempts-1, CertAttempts)
			}
		})
	}
	t.Run("expired", func(t *testing.T) {
		t.Parallel()
		cert, pool := expiredCert(t)
		port, _ := tlsEdgeCert(t, cfg, cert)
		var retries atomic.Int32
		a, _ := New(Config{Edge: "https://127.0.0.1:" + port, Token: "T", Name: "c", Upstream: up, TLSClientConfig: &tls.Config{RootCAs: pool},
			OnRetry: func(error, time.Duration) { retries.Add(1) }})
		err := a.Run(context.Background())
		var ce *CertError
		var ci x509.CertificateInvalidError
		if !errors.As(err, &ce) || !errors.As(err, &ci) || ci.Reason != x509.Expired || !strings.Contains(err.Error(), "has expired") {
			t.Fatalf("Run = %v, want a *CertError for an expired certificate", err)
		}
		if got := retries.Load(); got != CertAttempts-1 {
			t.Errorf("%d retries, want %d", got, CertAttempts-1)
		}
	})
	t.Run("trusted", func(t *testing.T) {
		t.Parallel()
		connected := make(chan string, 1)
		a, err := New(Config{Edge: "https://127.0.0.1:" + port, Token: "T", Name: "ok", Upstream: up, TLSClientConfig: &tls.Config{RootCAs: pool},
			OnConnect: func(u, _ string) { connected <- u }})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		select {
		case <-connected:
		case err := <-done:
			t.Fatalf("Run = %v before connecting", err)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// A managed agent stops on a certificate error too: at once for its config
// request; with the CA trusted it serves its tunnels over wss://.
func TestManagedCertError(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := store.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := edge.DefaultConfig()
	cfg.Store = st
	port, pool := tlsEdge(t, cfg)
	tok, secret, err := st.CreateToken(ctx, store.KindAgent, "owner")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateTunnel(ctx, store.Tunnel{Name: "web", Upstream: "http://127.0.0.1:1", AgentTokenID: tok.ID, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	edgeURL := "https://127.0.0.1:" + port

	m, err := NewManaged(ManagedConfig{Edge: edgeURL, Token: secret})
	if err != nil {
		t.Fatal(err)
	}
	err = m.Run(ctx)
	var ce *CertError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "--ca FILE") {
		t.Fatalf("Run = %v, want a *CertError naming --ca FILE", err)
	}

	status := &statusLog{}
	defer runManaged(t, ctx, ManagedConfig{Edge: edgeURL, Token: secret, TLSClientConfig: &tls.Config{RootCAs: pool}, Status: status.add})()
	deadline := time.Now().Add(patience)
	for !strings.Contains(status.String(), "Forwarding") {
		if time.Now().After(deadline) {
			t.Fatalf("the managed agent did not connect its tunnel; status:\n%s", status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// expiredCert returns a self-signed certificate for 127.0.0.1 that
// expired an hour ago, and a pool that trusts it.
func expiredCert(t *testing.T) (*tls.Certificate, *x509.CertPool) {
	c := testcert.New(t, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour), "127.0.0.1")
	return &c.TLS, c.Pool
}
