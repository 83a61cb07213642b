package edge_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/store"
)

// --trusted-proxies: behind a load balancer, a tunnel's allowlist applies
// to the visitor's address as the balancer wrote it in X-Forwarded-For
// (or Forwarded); a visitor who writes those fields itself, reaching the
// edge directly or through the balancer, cannot pass for a listed address.
func TestAllowlistBehindTrustedProxy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		trusted []netip.Prefix
		header  map[string]string
		allowed bool
	}{
		{nil, nil, false}, // the peer, 127.0.0.1, is not listed
		{nil, map[string]string{"X-Forwarded-For": "203.0.113.7"}, false},
		{nil, map[string]string{"Forwarded": "for=203.0.113.7"}, false},
		{[]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, map[string]string{"X-Forwarded-For": "203.0.113.7"}, true},
		{[]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, map[string]string{"X-Forwarded-For": "198.51.100.1"}, false},
		{[]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, map[string]string{"X-Forwarded-For": "203.0.113.7, 198.51.100.1"}, false},
		{[]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}, map[string]string{"X-Forwarded-For": "198.51.100.1, 203.0.113.7, 10.1.1.1"}, true},
		{[]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, map[string]string{"Forwarded": `for="203.0.113.7:4711";proto=https`}, true},
		{[]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, map[string]string{"Forwarded": `for=203.0.113.7, for=198.51.100.1`}, false},
	} {
		st, err := store.Open(context.Background(), t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		e := startEdge(t, func(c *edge.Config) { c.Store, c.TrustedProxies = st, tc.trusted })
		tok, _, err := st.CreateToken(context.Background(), store.KindAgent, "agent")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.CreateTunnel(context.Background(), store.Tunnel{Name: "web", Upstream: "http://127.0.0.1:1", AgentTokenID: tok.ID,
			Enabled: true, AllowCIDRs: []string{"203.0.113.0/24"}}); err != nil {
			t.Fatal(err)
		}
		req := e.newRequest(t, "GET", "web.localhost", "/", nil)
		for k, v := range tc.header {
			req.Header.Set(k, v)
		}
		r := e.do(req)
		if r.err != nil {
			t.Fatal(r.err)
		}
		// Admitted, the request finds no agent (404); refused, 403.
		if got := r.resp.StatusCode != 403; got != tc.allowed {
			t.Errorf("trusted %v, %v: status %d, want allowed=%v", tc.trusted, tc.header, r.resp.StatusCode, tc.allowed)
		}
		st.Close()
	}
}
