package edge_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/api"
)

// Concurrent PATCHes of one tunnel through the API all apply, one after
// the other: the version counts every one, and the last state is one of
// them.
func TestAPIConcurrentUpdates(t *testing.T) {
	t.Parallel()
	e, _, _, secret := storeEdge(t, 0)
	call := func(method, path, body string) (int, map[string]any) {
		req, _ := http.NewRequestWithContext(context.Background(), method, "http://"+e.addr+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer A")
		resp, err := e.client.Do(req)
		if err != nil {
			return 0, map[string]any{"error": err.Error()}
		}
		defer resp.Body.Close()
		var v map[string]any
		json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, v
	}
	if code, v := call("POST", "/api/tunnels", `{"name":"busy","upstream":"http://127.0.0.1:1","agent_token":"`+secret+`"}`); code != 201 {
		t.Fatalf("create: %d %v", code, v)
	}
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"upstream":"http://127.0.0.1:%d","host_header":"h%d"}`, 1000+i, i)
			if code, v := call("PATCH", "/api/tunnels/busy", body); code != 200 {
				errs <- fmt.Sprintf("PATCH %d: %d %v", i, code, v)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	code, v := call("GET", "/api/tunnels/busy", "")
	tun, _ := v["tunnel"].(map[string]any)
	if code != 200 || tun["version"] != float64(n+1) {
		t.Fatalf("after %d updates: %d %v, want version %d", n, code, v, n+1)
	}
	var i int
	if _, err := fmt.Sscanf(tun["host_header"].(string), "h%d", &i); err != nil || tun["upstream"] != fmt.Sprintf("http://127.0.0.1:%d", 1000+i) {
		t.Fatalf("inconsistent tunnel: upstream %v with host_header %v", tun["upstream"], tun["host_header"])
	}
}

// adminClient is an api.Client of e with token.
func adminClient(t *testing.T, e *testEdge, token string) *api.Client {
	t.Helper()
	c, err := api.NewClient("http://"+e.addr+"/", token, e.client)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wantAPIError returns err as an *api.Error, failing if it is not one
// with status and code.
func wantAPIError(t *testing.T, what string, err error, status int, code string) *api.Error {
	t.Helper()
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != status || ae.Code != code {
		t.Fatalf("%s: %v (%T), want HTTP %d %s", what, err, err, status, code)
	}
	return ae
}

func ptr[T any](v T) *T { return &v }

// Every endpoint through the typed client, and its typed errors.
func TestAPIClient(t *testing.T) {
	t.Parallel()
	e, _, agentID, agentSecret := storeEdge(t, 0)
	ctx := context.Background()
	c := adminClient(t, e, "A")

	created, err := c.CreateToken(ctx, api.CreateTokenRequest{Kind: api.KindAdmin, Name: "ops"})
	if err != nil || created.Token.Kind != api.KindAdmin || created.Token.Name != "ops" || created.Secret == "" || created.Token.CreatedAt.IsZero() {
		t.Fatalf("CreateToken: %+v %v", created, err)
	}
	// The new admin token works; an agent token is not an admin's.
	if _, err := adminClient(t, e, created.Secret).ListTokens(ctx); err != nil {
		t.Fatalf("ListTokens with a stored admin token: %v", err)
	}
	_, err = adminClient(t, e, agentSecret).ListTokens(ctx)
	wantAPIError(t, "ListTokens with an agent token", err, 401, api.CodeUnauthorized)
	ae := wantAPIError(t, "wrong admin token", func() error { _, err := adminClient(t, e, "nope").ListTunnels(ctx); return err }(), 401, api.CodeUnauthorized)
	if ae.Error() != "wrong admin token (HTTP 401, unauthorized)" {
		t.Errorf("error text %q", ae.Error())
	}
	toks, err := c.ListTokens(ctx)
	if err != nil || len(toks) != 2 {
		t.Fatalf("ListTokens: %+v %v", toks, err)
	}
	_, err = c.CreateToken(ctx, api.CreateTokenRequest{Kind: "root"})
	wantAPIError(t, "kind root", err, 400, api.CodeBadKind)

	tun, err := c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("web"), Upstream: ptr("http://127.0.0.1:3000"), AgentToken: ptr(agentSecret),
		HostHeader: ptr("rewrite"), BasicAuthUser: ptr("u"), BasicAuthPassword: ptr("p"), AllowCIDRs: ptr([]string{"10.0.0.0/8"})})
	if err != nil || tun.Name != "web" || tun.AgentTokenID != agentID || tun.Upstream != "http://127.0.0.1:3000" || tun.HostHeader != "rewrite" ||
		tun.BasicAuthUser != "u" || len(tun.AllowCIDRs) != 1 || !tun.Enabled || tun.Version != 1 {
		t.Fatalf("CreateTunnel: %+v %v", tun, err)
	}
	_, err = c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("web"), Upstream: ptr("http://127.0.0.1:3000"), AgentTokenID: ptr(agentID)})
	wantAPIError(t, "second web", err, 409, api.CodeExists)
	_, err = c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("ftp"), Upstream: ptr("ftp://x"), AgentTokenID: ptr(agentID)})
	if ae := wantAPIError(t, "ftp upstream", err, 400, api.CodeBadUpstream); ae.Message != `upstream "ftp://x" is not an http://, https:// or h2c:// URL` {
		t.Errorf("bad upstream message %q", ae.Message)
	}
	if tun, err := c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("grpc"), Upstream: ptr("h2c://127.0.0.1:50051"), AgentTokenID: ptr(agentID)}); err != nil || tun.Upstream != "h2c://127.0.0.1:50051" {
		t.Errorf("h2c upstream: %+v %v", tun, err)
	} else if _, err := c.DeleteTunnel(ctx, "grpc"); err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("Bad_Name"), Upstream: ptr("http://x"), AgentTokenID: ptr(agentID)})
	wantAPIError(t, "bad name", err, 400, api.CodeBadName)

	tun, err = c.UpdateTunnel(ctx, "web", api.TunnelRequest{Upstream: ptr("http://127.0.0.1:4000"), BasicAuthUser: ptr(""), BasicAuthPassword: ptr(""),
		AllowCIDRs: ptr([]string{}), Enabled: ptr(false)})
	if err != nil || tun.Upstream != "http://127.0.0.1:4000" || tun.BasicAuthUser != "" || len(tun.AllowCIDRs) != 0 || tun.Enabled || tun.Version != 2 {
		t.Fatalf("UpdateTunnel: %+v %v", tun, err)
	}
	if got, err := c.Tunnel(ctx, "web"); err != nil || got.Version != 2 || got.Upstream != tun.Upstream {
		t.Fatalf("Tunnel: %+v %v", got, err)
	}
	_, err = c.Tunnel(ctx, "nope")
	wantAPIError(t, "Tunnel nope", err, 404, api.CodeNotFound)
	if list, err := c.ListTunnels(ctx); err != nil || len(list) != 1 || list[0].Name != "web" {
		t.Fatalf("ListTunnels: %+v %v", list, err)
	}
	if _, err := c.UpdateTunnel(ctx, "web", api.TunnelRequest{Enabled: ptr(true)}); err != nil {
		t.Fatal(err)
	}

	ac := adminClient(t, e, agentSecret)
	cfg, err := ac.AgentConfig(ctx)
	if err != nil || cfg.AgentTokenID != agentID || len(cfg.Tunnels) != 1 || cfg.Edge.Domain != "localhost" {
		t.Fatalf("AgentConfig: %+v %v", cfg, err)
	}
	if at := cfg.Tunnels[0]; at.Name != "web" || at.Upstream != "http://127.0.0.1:4000" || !at.Enabled || at.Version != 3 || at.PublicURL == "" {
		t.Fatalf("AgentConfig tunnel: %+v", at)
	}
	// The config's push URL is the edge's public one (its domain); the
	// client, which reached the edge at 127.0.0.1, keeps to that host.
	if got, want := ac.PushURL(cfg), "http://"+e.addr+"/api/agent/push"; got != want || cfg.PushURL != "http://localhost:"+e.port+"/api/agent/push" {
		t.Fatalf("PushURL %q (config %q), want %q", got, cfg.PushURL, want)
	}
	if got, want := ac.PushURL(api.AgentConfig{}), "http://"+e.addr+"/api/agent/push"; got != want {
		t.Fatalf("PushURL without one from the edge: %q, want %q", got, want)
	}
	_, err = c.AgentConfig(ctx) // "A" is no agent token
	wantAPIError(t, "AgentConfig with the admin token", err, 401, api.CodeUnauthorized)

	// The push request opens the channel.
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := ac.NewPushRequest(pctx, ac.PushURL(cfg))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := e.client.Do(req)
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("push: %v %v", resp, err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != ": connected\n" {
		t.Fatalf("push first line %q %v", line, err)
	}
	if n, err := c.Notify(ctx); err != nil || n.Notified != 1 {
		t.Fatalf("Notify: %+v %v", n, err)
	}
	cancel()
	resp.Body.Close()

	if agents, err := c.ListAgents(ctx); err != nil || agents == nil {
		t.Fatalf("ListAgents: %+v %v", agents, err)
	}
	if del, err := c.DeleteTunnel(ctx, "web"); err != nil || del.Name != "web" {
		t.Fatalf("DeleteTunnel: %+v %v", del, err)
	}
	_, err = c.DeleteTunnel(ctx, "web")
	wantAPIError(t, "DeleteTunnel again", err, 404, api.CodeNotFound)
	rev, err := c.RevokeToken(ctx, agentID)
	if err != nil || rev.ID != agentID || rev.RevokedAt == nil {
		t.Fatalf("RevokeToken: %+v %v", rev, err)
	}
	_, err = ac.AgentConfig(ctx)
	wantAPIError(t, "AgentConfig with a revoked token", err, 401, api.CodeTokenRevoked)
}

// The JSON on the wire is docs/api.md's: the field names of each body,
// the error envelope, and no password or hash in a tunnel.
func TestAPIJSONShape(t *testing.T) {
	t.Parallel()
	e, _, _, secret := storeEdge(t, 0)
	call := func(method, path, token, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(context.Background(), method, "http://"+e.addr+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: Content-Type %q", method, path, ct)
		}
		var v map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		return resp.StatusCode, v
	}
	keys := func(v any) string {
		m, _ := v.(map[string]any)
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		return strings.Join(ks, ",")
	}
	check := func(what string, v any, want string) {
		t.Helper()
		if got := keys(v); got != want {
			t.Errorf("%s: keys %s, want %s", what, got, want)
		}
	}
	first := func(v any) any {
		l, _ := v.([]any)
		if len(l) == 0 {
			return nil
		}
		return l[0]
	}

	st, v := call("POST", "/api/tokens", "A", `{"name":"x"}`)
	if st != 201 {
		t.Fatalf("create token: %d %v", st, v)
	}
	check("create token", v, "secret,token")
	check("token", v["token"], "created_at,id,kind,name")
	id := v["token"].(map[string]any)["id"].(string)
	_, v = call("GET", "/api/tokens", "A", "")
	check("list tokens", v, "tokens")
	check("listed token", first(v["tokens"]), "created_at,id,kind,name")

	st, v = call("POST", "/api/tunnels", "A", `{"name":"web","upstream":"http://127.0.0.1:1","agent_token":"`+secret+`","host_header":"h","basic_auth_user":"u","basic_auth_password":"p","allow_cidrs":["10.0.0.0/8"],"enabled":true}`)
	if st != 201 {
		t.Fatalf("create tunnel: %d %v", st, v)
	}
	check("create tunnel", v, "tunnel")
	full := "agent_token_id,allow_cidrs,basic_auth_user,created_at,enabled,host_header,name,type,updated_at,upstream,version"
	check("tunnel", v["tunnel"], full)
	_, v = call("PATCH", "/api/tunnels/web", "A", `{"host_header":"","basic_auth_user":"","basic_auth_password":"","allow_cidrs":[]}`)
	check("patched tunnel", v["tunnel"], "agent_token_id,created_at,enabled,name,type,updated_at,upstream,version")
	_, v = call("GET", "/api/tunnels", "A", "")
	check("list tunnels", v, "tunnels")
	_, v = call("GET", "/api/tunnels/web", "A", "")
	check("get tunnel", v, "tunnel")
	_, v = call("GET", "/api/agents", "A", "")
	check("list agents", v, "agents")
	_, v = call("POST", "/api/agents/notify", "A", "")
	check("notify", v, "notified,took_ms")

	_, v = call("GET", "/api/agent/config", secret, "")
	check("agent config", v, "agent_token_id,edge,push_url,tunnels")
	check("agent config tunnel", first(v["tunnels"]), "enabled,name,public_url,type,upstream,version")
	check("agent config edge", v["edge"], "domain")

	st, v = call("GET", "/api/tunnels", "nope", "")
	check("error", v, "error")
	check("error body", v["error"], "code,message,status")
	if e := v["error"].(map[string]any); st != 401 || e["code"] != "unauthorized" || e["status"] != float64(401) {
		t.Errorf("wrong token: %d %v", st, v)
	}
	if st, v = call("POST", "/api/tunnels", "A", `{"nope":1}`); st != 400 || v["error"].(map[string]any)["code"] != "bad_json" {
		t.Errorf("unknown field: %d %v", st, v)
	}
	if st, v = call("GET", "/api/nothing", "A", ""); st != 404 || v["error"].(map[string]any)["code"] != "not_found" {
		t.Errorf("unknown route: %d %v", st, v)
	}

	st, v = call("DELETE", "/api/tokens/"+id, "A", "")
	check("revoke", v, "token")
	check("revoked token", v["token"], "created_at,id,kind,name,revoked_at")
	if st != 200 {
		t.Errorf("revoke: %d", st)
	}
	st, v = call("DELETE", "/api/tunnels/web", "A", "")
	check("delete tunnel", v, "tunnel")
	if st != 200 {
		t.Errorf("delete tunnel: %d", st)
	}
}
