package edge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/api"
)

// Hostnames through the API: normalized and sorted, shown by get and
// list, replaced by an update, cleared by an empty list; refused when
// taken (409 naming the tunnel), invalid, or under the edge's domain.
func TestAPIHostnames(t *testing.T) {
	t.Parallel()
	e, _, _, agentSecret := storeEdge(t, 0)
	ctx := context.Background()
	c := adminClient(t, e, "A")
	web, err := c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("web"), Upstream: ptr("http://127.0.0.1:3000"), AgentToken: ptr(agentSecret),
		Hostnames: &[]string{"WWW.Example.com.", "app.example.com", "www.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"app.example.com", "www.example.com"}; !reflect.DeepEqual(web.Hostnames, want) {
		t.Fatalf("created with hostnames %q, want %q", web.Hostnames, want)
	}
	if got, err := c.Tunnel(ctx, "web"); err != nil || !reflect.DeepEqual(got.Hostnames, web.Hostnames) {
		t.Fatalf("get: %+v, %v", got, err)
	}
	_, err = c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("api"), Upstream: ptr("http://127.0.0.1:3001"), AgentToken: ptr(agentSecret),
		Hostnames: &[]string{"app.example.com"}})
	if ae := wantAPIError(t, "a taken hostname", err, http.StatusConflict, api.CodeHostnameTaken); !strings.Contains(ae.Message, "app.example.com belongs to tunnel web") {
		t.Errorf("message %q does not name the hostname and its tunnel", ae.Message)
	}
	if _, err := c.Tunnel(ctx, "api"); err == nil {
		t.Fatal("the refused tunnel exists")
	}
	if _, err := c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("api"), Upstream: ptr("http://127.0.0.1:3001"), AgentToken: ptr(agentSecret)}); err != nil {
		t.Fatal(err)
	}
	_, err = c.UpdateTunnel(ctx, "api", api.TunnelRequest{Hostnames: &[]string{"api.example.com", "www.example.com"}})
	wantAPIError(t, "update with a taken hostname", err, http.StatusConflict, api.CodeHostnameTaken)
	for _, bad := range []struct{ host, says string }{
		{"localhost", "not a DNS name"}, {"a_b.example.com", "not a DNS name"}, {"*.example.com", "not a DNS name"},
		{"10.0.0.1", "not a DNS name"}, {"app.example.com:8080", "not a DNS name"}, {"", "not a DNS name"},
		{"web.localhost", "under this edge's domain localhost"}, {"a.b.LOCALHOST.", "under this edge's domain"},
	} {
		_, err := c.UpdateTunnel(ctx, "api", api.TunnelRequest{Hostnames: &[]string{bad.host}})
		if ae := wantAPIError(t, "hostname "+bad.host, err, http.StatusBadRequest, api.CodeBadHostname); !strings.Contains(ae.Message, bad.says) {
			t.Errorf("hostname %q: message %q does not say %q", bad.host, ae.Message, bad.says)
		}
	}
	many := make([]string, 101)
	for i := range many {
		many[i] = fmt.Sprintf("h%d.example.com", i)
	}
	_, err = c.UpdateTunnel(ctx, "api", api.TunnelRequest{Hostnames: &many})
	wantAPIError(t, "101 hostnames", err, http.StatusBadRequest, api.CodeBadHostname)
	// Replaced as a whole: www is free for api once web lets it go.
	if got, err := c.UpdateTunnel(ctx, "web", api.TunnelRequest{Hostnames: &[]string{"app.example.com"}}); err != nil || !reflect.DeepEqual(got.Hostnames, []string{"app.example.com"}) {
		t.Fatalf("replace: %+v, %v", got, err)
	}
	if got, err := c.UpdateTunnel(ctx, "api", api.TunnelRequest{Hostnames: &[]string{"www.example.com"}}); err != nil || !reflect.DeepEqual(got.Hostnames, []string{"www.example.com"}) {
		t.Fatalf("freed hostname: %+v, %v", got, err)
	}
	// An update of something else keeps them.
	if got, err := c.UpdateTunnel(ctx, "api", api.TunnelRequest{Upstream: ptr("http://127.0.0.1:3002")}); err != nil || !reflect.DeepEqual(got.Hostnames, []string{"www.example.com"}) {
		t.Fatalf("unrelated update: %+v, %v", got, err)
	}
	list, err := c.ListTunnels(ctx)
	if err != nil || len(list) != 2 || !reflect.DeepEqual(list[0].Hostnames, []string{"www.example.com"}) || !reflect.DeepEqual(list[1].Hostnames, []string{"app.example.com"}) {
		t.Fatalf("list: %+v, %v", list, err)
	}
	if got, err := c.UpdateTunnel(ctx, "web", api.TunnelRequest{Hostnames: &[]string{}}); err != nil || got.Hostnames != nil {
		t.Fatalf("clear: %+v, %v", got, err)
	}
	// The JSON: "hostnames" is a list, absent when there are none.
	res := e.do(func() *http.Request {
		r := e.newRequest(t, "GET", e.addr, "/api/tunnels", nil)
		r.Header.Set("Authorization", "Bearer A")
		return r
	}())
	var raw struct{ Tunnels []map[string]any }
	if err := json.Unmarshal(res.body, &raw); err != nil || len(raw.Tunnels) != 2 {
		t.Fatalf("list JSON: %s, %v", res.body, err)
	}
	if hs, _ := raw.Tunnels[0]["hostnames"].([]any); len(hs) != 1 || hs[0] != "www.example.com" {
		t.Errorf("hostnames in JSON: %s", res.body)
	}
	if _, ok := raw.Tunnels[1]["hostnames"]; ok {
		t.Errorf("a tunnel without hostnames shows them: %s", res.body)
	}
}

// A custom hostname reaches its tunnel as NAME.DOMAIN does: the upstream
// sees the hostname in Host and X-Forwarded-Host, the visitor rules apply;
// a host no tunnel claims gets the apex; a hostname removed through the
// API stops routing at once.
func TestCustomHostnameRouting(t *testing.T) {
	t.Parallel()
	e, _, _, agentSecret := storeEdge(t, 0)
	ctx := context.Background()
	c := adminClient(t, e, "A")
	if _, err := c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("web"), Upstream: ptr("http://127.0.0.1:3000"), AgentToken: ptr(agentSecret),
		Hostnames: &[]string{"app.example.com"}}); err != nil {
		t.Fatal(err)
	}
	a := e.register(t, "web", agentSecret)
	roundTrip := func(host string) (request, result) {
		t.Helper()
		req := e.newRequest(t, "GET", host, "/page?x=1", nil)
		req.Header.Set("Cookie", "k=v")
		done := e.goDo(req)
		r := a.expectRequest(t)
		a.respond(t, r.ID, 200, map[string]string{"Content-Type": "text/plain", "Set-Cookie": "s=1; Domain=example.com"}, []byte("from web"))
		return r, await(t, done, 5*time.Second)
	}
	for _, host := range []string{"app.example.com", "App.Example.COM.", "app.example.com:" + e.port} {
		r, res := roundTrip(host)
		want := "app.example.com"
		if strings.HasSuffix(host, e.port) {
			want += ":" + e.port
		}
		if r.Path != "/page" || r.Query != "x=1" || r.Headers["Host"] != want || r.Headers["X-Forwarded-Host"] != want || r.Headers["Cookie"] != "k=v" {
			t.Errorf("Host %q: upstream got %s %s?%s with headers %v, want Host and X-Forwarded-Host %q", host, r.Method, r.Path, r.Query, r.Headers, want)
		}
		if res.err != nil || res.resp.StatusCode != 200 || string(res.body) != "from web" {
			t.Fatalf("Host %q: %v", host, res)
		}
		// The cookie for the hostname's parent is narrowed to the hostname.
		if sc := res.resp.Header.Get("Set-Cookie"); sc != "s=1" {
			t.Errorf("Host %q: Set-Cookie %q, want s=1", host, sc)
		}
	}
	// NAME.DOMAIN still reaches it.
	if r, res := roundTrip("web.localhost"); r.Headers["Host"] != "web.localhost" || res.err != nil || res.resp.StatusCode != 200 {
		t.Fatalf("web.localhost: %v, upstream Host %q", res, r.Headers["Host"])
	}
	// Visitor rules are the tunnel's.
	if _, err := c.UpdateTunnel(ctx, "web", api.TunnelRequest{AllowCIDRs: &[]string{"10.0.0.0/8"}}); err != nil {
		t.Fatal(err)
	}
	if res := e.get(t, "app.example.com", "/"); res.err != nil || res.resp.StatusCode != http.StatusForbidden || !strings.Contains(string(res.body), "app.example.com") {
		t.Fatalf("outside the tunnel's allowlist: %v", res)
	}
	if _, err := c.UpdateTunnel(ctx, "web", api.TunnelRequest{AllowCIDRs: &[]string{}}); err != nil {
		t.Fatal(err)
	}
	// A host nobody claims gets the apex, as before.
	if res := e.get(t, "nobody.example.org", "/"); res.err != nil || res.resp.StatusCode != 200 || !strings.Contains(string(res.body), "sluice edge") {
		t.Fatalf("unknown host: %v", res)
	}
	if res := e.get(t, "nobody.example.org", "/healthz"); res.err != nil || res.resp.StatusCode != 200 {
		t.Fatalf("unknown host /healthz: %v", res)
	}
	// Removed: the apex answers at once (no wait for the cache's TTL).
	if _, err := c.UpdateTunnel(ctx, "web", api.TunnelRequest{Hostnames: &[]string{"other.example.com"}}); err != nil {
		t.Fatal(err)
	}
	if res := e.get(t, "app.example.com", "/"); res.err != nil || res.resp.StatusCode != 200 || !strings.Contains(string(res.body), "sluice edge") {
		t.Fatalf("removed hostname: %v", res)
	}
	if r, res := roundTrip("other.example.com"); r.Headers["Host"] != "other.example.com" || res.err != nil || res.resp.StatusCode != 200 {
		t.Fatalf("added hostname: %v", res)
	}
	// Deleted with its tunnel.
	if _, err := c.DeleteTunnel(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if res := e.get(t, "other.example.com", "/"); res.err != nil || res.resp.StatusCode != 200 || !strings.Contains(string(res.body), "sluice edge") {
		t.Fatalf("hostname of a deleted tunnel: %v", res)
	}
}

// Hosts that look like hostnames but belong to no tunnel cost no store
// query each: the edge reads the map of hostnames at most once per TTL.
func TestRandomHostsCostNoStoreQueryEach(t *testing.T) {
	t.Parallel()
	e, _, _, agentSecret := storeEdge(t, 0)
	c := adminClient(t, e, "A")
	if _, err := c.CreateTunnel(context.Background(), api.TunnelRequest{Name: ptr("web"), Upstream: ptr("http://127.0.0.1:3000"),
		AgentToken: ptr(agentSecret), Hostnames: &[]string{"app.example.com"}}); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	start := time.Now()
	for i := range n {
		res := e.get(t, fmt.Sprintf("r%d-%x.example.net", i, rand.Uint64()), "/healthz")
		if res.err != nil || res.resp.StatusCode != 200 {
			t.Fatalf("random host: %v", res)
		}
	}
	elapsed := time.Since(start)
	page := e.metrics(t)
	one := metricValue(page, `sluice_access_store_queries_total{kind="hostname"}`)
	all := metricValue(page, `sluice_access_store_queries_total{kind="hostnames"}`)
	t.Logf("%d random hosts in %v: %v map reads, %v single lookups", n, elapsed, all, one)
	if one != 0 {
		t.Errorf("%v single-hostname store queries, want 0", one)
	}
	if maxAll := 2 + elapsed.Seconds()/5; all < 1 || all > maxAll {
		t.Errorf("%v reads of the hostname map in %v, want 1 to %v", all, elapsed, maxAll)
	}
}
