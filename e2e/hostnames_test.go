package e2e

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A custom hostname given with "sluice tunnels create --hostname" (the
// interface other tests use) reaches the tunnel over plain HTTP, and the
// upstream sees it as Host; a host no tunnel claims gets the apex; the
// hostname cleared with sluice tunnels update --hostname "" stops
// routing.
func TestCustomHostnameCLI(t *testing.T) {
	t.Parallel()
	up := newTestUpstream(t)
	up.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "upstream saw "+r.Host+" "+r.Header.Get("X-Forwarded-Host"))
	})
	e := startEdge(t, "", "--data", t.TempDir(), "--admin-token", "A")
	admin := []string{"--edge", "http://" + e.addr, "--admin-token", "A"}
	r := run(t, 20*time.Second, append([]string{"tokens", "create"}, admin...)...)
	secret := strings.TrimSpace(r.stdout)
	r = run(t, 20*time.Second, append([]string{"tunnels", "create", "web", "--upstream", "http://127.0.0.1:" + strconv.Itoa(up.port),
		"--agent-token", secret, "--hostname", "app.example.test"}, admin...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "hostnames: app.example.test") {
		t.Fatalf("tunnels create --hostname: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	startAgent(t, e, "v2", "web", secret, up.port)
	c := tunnelClient(t, e.addr)
	host := "app.example.test:" + strconv.Itoa(e.port)
	resp, body := do(t, c, "GET", "http://"+host+"/", nil, nil)
	if want := "upstream saw " + host + " " + host; resp.StatusCode != 200 || string(body) != want {
		t.Fatalf("GET the custom hostname: %d %q, want %q", resp.StatusCode, body, want)
	}
	resp, body = do(t, c, "GET", "http://unclaimed.example.test:"+strconv.Itoa(e.port)+"/", nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "sluice edge") {
		t.Fatalf("GET a host no tunnel claims: %d %q, want the apex", resp.StatusCode, body)
	}
	r = run(t, 20*time.Second, append([]string{"tunnels", "update", "web", "--hostname", ""}, admin...)...)
	if r.code != 0 || strings.Contains(r.stdout, "hostnames") {
		t.Fatalf("tunnels update --hostname '': exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	resp, body = do(t, c, "GET", "http://"+host+"/", nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "sluice edge") {
		t.Fatalf("GET a removed hostname: %d %q, want the apex", resp.StatusCode, body)
	}
}
