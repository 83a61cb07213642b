package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/pgtest"
)

// The edge with a SQLite store and an admin token: tokens and tunnels made
// with "sluice tokens" and "sluice tunnels" (the interface other tests use),
// agents authenticated by the store's tokens, tunnels owned by their token,
// the API's JSON errors, and everything still there after a restart.
func TestStoreAndAdminCLI(t *testing.T) {
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		testStoreAndAdminCLI(t, []string{"--data", t.TempDir()})
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		testStoreAndAdminCLI(t, []string{"--store", pgtest.Schema(t)})
	})
}

func testStoreAndAdminCLI(t *testing.T, storeFlags []string) {
	up := namedUpstream(t, "from the store's tunnel")
	e := startEdge(t, "", append(storeFlags, "--admin-token", "A")...)
	edgeURL := "http://" + e.addr
	admin := []string{"--edge", edgeURL, "--admin-token", "A"}

	// tokens create prints the secret alone on its last line.
	r := run(t, 20*time.Second, append([]string{"tokens", "create", "--name", `team "laptop"`}, admin...)...)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	secret := lines[len(lines)-1]
	if r.code != 0 || !strings.HasPrefix(secret, "slag_") || len(secret) < 40 {
		t.Fatalf("tokens create: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	r = run(t, 20*time.Second, append([]string{"tunnels", "create", "web", "--upstream", "http://127.0.0.1:" + strconv.Itoa(up.port), "--agent-token", secret}, admin...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "web -> http://127.0.0.1:"+strconv.Itoa(up.port)) {
		t.Fatalf("tunnels create: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// An agent with the store's token serves the tunnel.
	a := startAgent(t, e, "v2", "web", secret, up.port)
	c := tunnelClient(t, e.addr)
	resp, body := do(t, c, "GET", e.publicURL("web")+"/", nil, nil)
	if resp.StatusCode != 200 || string(body) != "from the store's tunnel" {
		t.Fatalf("GET through the store's tunnel: %d %q", resp.StatusCode, body)
	}

	// Another token cannot take the stored tunnel's name.
	r2 := run(t, 20*time.Second, append([]string{"tokens", "create"}, admin...)...)
	other := strings.TrimSpace(r2.stdout)
	r = run(t, 20*time.Second, "http", strconv.Itoa(up.port), "--edge", edgeURL, "--token", other, "--name", "web")
	if r.code == 0 || !strings.Contains(r.stderr, "belongs to another agent token") {
		t.Fatalf("other token on a stored tunnel: exit %d, stderr %q", r.code, r.stderr)
	}

	// Wrong admin token: exit 1 with the API's message; raw, a 401 JSON.
	r = run(t, 20*time.Second, "tunnels", "list", "--edge", edgeURL, "--admin-token", "wrong")
	if r.code != 1 || !strings.Contains(r.stderr, "wrong admin token (HTTP 401, unauthorized)") {
		t.Fatalf("wrong admin token: exit %d, stderr %q", r.code, r.stderr)
	}
	apiCall := func(method, path, token, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(context.Background(), method, edgeURL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			t.Fatalf("%s %s: not JSON: %v", method, path, err)
		}
		return resp.StatusCode, v
	}
	errCode := func(v map[string]any) string {
		e, _ := v["error"].(map[string]any)
		s, _ := e["code"].(string)
		return s
	}
	// The agent's connection is recorded: its version and this edge.
	if st, v := apiCall("GET", "/api/agents", "A", ""); st != 200 || !strings.Contains(fmt.Sprint(v["agents"]), "version:sluice/") {
		t.Fatalf("GET /api/agents: %d %v", st, v)
	}
	if st, v := apiCall("GET", "/api/tunnels", "nope", ""); st != 401 || errCode(v) != "unauthorized" {
		t.Fatalf("API with a wrong token: %d %v", st, v)
	}
	if st, v := apiCall("POST", "/api/tunnels", "A", `{"name":"Bad Name!","upstream":"http://127.0.0.1:1","agent_token":"`+secret+`"}`); st != 400 || errCode(v) != "bad_name" {
		t.Fatalf("invalid name: %d %v", st, v)
	}
	// Quotes, SQL and markup are data.
	hostile := `x'); DROP TABLE tunnels; -- <script>"`
	if st, v := apiCall("POST", "/api/tunnels", "A", fmt.Sprintf(`{"name":"odd","upstream":"http://127.0.0.1:1/?q=%s","host_header":%q,"agent_token":%q}`,
		"%27%3B", hostile, secret)); st != 201 {
		t.Fatalf("hostile fields: %d %v", st, v)
	}
	if st, v := apiCall("GET", "/api/tunnels/odd", "A", ""); st != 200 || v["tunnel"].(map[string]any)["host_header"] != hostile {
		t.Fatalf("hostile fields read back: %d %v", st, v)
	}

	// Restart on the same data: tokens and tunnels are still there, and
	// the agent comes back by itself.
	e.kill()
	e2, err := startEdgeAt(t, e.port, "", append(storeFlags, "--admin-token", "A")...)
	if err != nil {
		t.Fatal(err)
	}
	r = run(t, 20*time.Second, append([]string{"tunnels", "list"}, admin...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "web ") || !strings.Contains(r.stdout, "odd ") {
		t.Fatalf("tunnels after restart: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, body, err := tryDo(c, "GET", e2.publicURL("web")+"/", nil, nil, 5*time.Second)
		if err == nil && resp.StatusCode == 200 && string(body) == "from the store's tunnel" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not come back after the edge restarted: %v %v\nagent stderr: %s", resp, err, a.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}

	r = run(t, 20*time.Second, append([]string{"tunnels", "delete", "odd"}, admin...)...)
	if r.code != 0 {
		t.Fatalf("tunnels delete: exit %d, stderr %q", r.code, r.stderr)
	}
	if st, v := apiCall("GET", "/api/tunnels/odd", "A", ""); st != 404 || errCode(v) != "not_found" {
		t.Fatalf("deleted tunnel: %d %v", st, v)
	}

	// Deleting the tunnel an agent serves ends it: the agent is told, and
	// stops instead of reconnecting.
	if r := run(t, 20*time.Second, append([]string{"tunnels", "delete", "web"}, admin...)...); r.code != 0 {
		t.Fatalf("tunnels delete web: %q", r.stderr)
	}
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the agent of a deleted tunnel kept running\nstderr: %s", a.stderr)
	}
	if !strings.Contains(a.stderr.String(), "the edge ended the tunnel") {
		t.Fatalf("agent stderr: %s", a.stderr)
	}
}

// Visitor access per tunnel, enforced at the edge through the tunnel:
// basic auth (the upstream never sees the visitor's credentials), an IP
// allowlist, and disabling.
func TestVisitorAccess(t *testing.T) {
	t.Parallel()
	up := newTestUpstream(t)
	up.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "authorization=%q", r.Header.Get("Authorization"))
	})
	e := startEdge(t, "", "--data", t.TempDir(), "--admin-token", "A")
	edgeURL := "http://" + e.addr
	admin := []string{"--edge", edgeURL, "--admin-token", "A"}
	secret := strings.TrimSpace(run(t, 20*time.Second, append([]string{"tokens", "create"}, admin...)...).stdout)
	tunnels := func(args ...string) {
		t.Helper()
		if r := run(t, 20*time.Second, append(append([]string{"tunnels"}, args...), admin...)...); r.code != 0 {
			t.Fatalf("tunnels %v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	tunnels("create", "guarded", "--upstream", "http://127.0.0.1:"+strconv.Itoa(up.port), "--agent-token", secret, "--basic-auth", "alice:s3cret pass")
	startAgent(t, e, "v2", "guarded", secret, up.port)
	c := tunnelClient(t, e.addr)
	url := e.publicURL("guarded") + "/"
	get := func(user, pass string) (*http.Response, string) {
		t.Helper()
		h := http.Header{}
		if user != "" {
			req, _ := http.NewRequest("GET", url, nil)
			req.SetBasicAuth(user, pass)
			h = req.Header
		}
		resp, body := do(t, c, "GET", url, nil, h)
		return resp, string(body)
	}
	if resp, _ := get("", ""); resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "Basic") {
		t.Fatalf("no credentials: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if resp, _ := get("alice", "wrong"); resp.StatusCode != 401 {
		t.Fatalf("wrong password: %d", resp.StatusCode)
	}
	if resp, _ := get("mallory", "s3cret pass"); resp.StatusCode != 401 {
		t.Fatalf("wrong user: %d", resp.StatusCode)
	}
	for i := 0; i < 2; i++ { // the second time from the edge's memory
		if resp, body := get("alice", "s3cret pass"); resp.StatusCode != 200 || body != `authorization=""` {
			t.Fatalf("right credentials: %d %q (the upstream must not see them)", resp.StatusCode, body)
		}
	}

	// An allowlist that leaves out 127.0.0.1, then one that has it.
	tunnels("update", "guarded", "--basic-auth", "", "--allow", "10.0.0.0/8,192.168.0.0/16")
	if resp, _ := get("", ""); resp.StatusCode != 403 {
		t.Fatalf("address not in the allowlist: %d", resp.StatusCode)
	}
	tunnels("update", "guarded", "--allow", "10.0.0.0/8,127.0.0.0/8")
	if resp, body := get("", ""); resp.StatusCode != 200 {
		t.Fatalf("address in the allowlist: %d %q", resp.StatusCode, body)
	}

	tunnels("update", "guarded", "--disabled")
	if resp, _ := get("", ""); resp.StatusCode != 503 {
		t.Fatalf("disabled tunnel: %d", resp.StatusCode)
	}
}
