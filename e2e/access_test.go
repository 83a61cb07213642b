package e2e

// Visitor rules of ad-hoc tunnels: "sluice http --basic-auth --allow"
// sends them at registration and the edge enforces them; an edge that does
// not confirm them is refused.

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// clientFrom is tunnelClient with connections from the local address ip
// (127.0.0.2, 127.0.0.3: other loopback addresses, so that the edge sees
// other visitors).
func clientFrom(t *testing.T, edgeAddr, ip string) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
			return d.DialContext(ctx, network, edgeAddr)
		},
		DisableCompression: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// authUpstream answers "ok" and the Authorization header it received,
// which the edge must have removed.
func authUpstream(t *testing.T) *testUpstream {
	up := newTestUpstream(t)
	up.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok" + r.Header.Get("Authorization")))
	})
	return up
}

// checkVisitorRules asks base (a tunnel with basic auth ann:s3cret-pass
// and --allow 127.0.0.1/32,127.0.0.2/32) as visitors with and without
// credentials, from allowed and other addresses.
func checkVisitorRules(t *testing.T, edgeAddr, base string) {
	t.Helper()
	creds := http.Header{"Authorization": {"Basic " + basicAuth("ann", "s3cret-pass")}}
	wrong := http.Header{"Authorization": {"Basic " + basicAuth("ann", "guess")}}
	cases := []struct {
		name   string
		from   string
		hdr    http.Header
		status int
	}{
		{"no credentials", "127.0.0.2", nil, 401},
		{"wrong password", "127.0.0.2", wrong, 401},
		{"credentials", "127.0.0.2", creds, 200},
		{"credentials, first address", "127.0.0.1", creds, 200},
		{"credentials, address not allowed", "127.0.0.3", creds, 403},
		{"no credentials, address not allowed", "127.0.0.3", nil, 403},
	}
	for _, tc := range cases {
		resp, body := do(t, clientFrom(t, edgeAddr, tc.from), "GET", base+"/", nil, tc.hdr)
		if resp.StatusCode != tc.status {
			t.Errorf("%s (from %s): %d %q, want %d", tc.name, tc.from, resp.StatusCode, body, tc.status)
			continue
		}
		switch tc.status {
		case 200:
			if string(body) != "ok" {
				t.Errorf("%s: upstream answered %q, want ok (no Authorization header)", tc.name, body)
			}
		case 401:
			if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("%s: 401 without a Basic challenge: %v", tc.name, resp.Header)
			}
		}
	}
}

func basicAuth(user, pass string) string {
	r, _ := http.NewRequest("GET", "http://x/", nil)
	r.SetBasicAuth(user, pass)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}

func TestAdhocVisitorRules(t *testing.T) { forProtocols(t, testAdhocVisitorRules) }

func testAdhocVisitorRules(t *testing.T, proto string) {
	up := authUpstream(t)
	e := startEdge(t, "T")
	file := filepath.Join(t.TempDir(), "visitor")
	os.WriteFile(file, []byte("ann:s3cret-pass\n"), 0o600)
	p := startAgent(t, e, proto, "guarded", "T", up.port, "--basic-auth-file", file, "--allow", "127.0.0.1/32, 127.0.0.2/32")
	if !p.waitOutput(p.stderr, "visitors must give basic auth", 15*time.Second) {
		t.Errorf("the agent does not say that visitors must authenticate: %s", p.stderr)
	}
	checkVisitorRules(t, e.addr, e.publicURL("guarded"))

	// Another ad-hoc tunnel without rules stays open to all.
	startAgent(t, e, proto, "open", "T", up.port)
	resp, body := do(t, clientFrom(t, e.addr, "127.0.0.3"), "GET", e.publicURL("open")+"/", nil, nil)
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Errorf("a tunnel without rules: %d %q", resp.StatusCode, body)
	}
}

// The embedded edge ("sluice http" without --edge) enforces them too.
func TestAdhocVisitorRulesEmbedded(t *testing.T) {
	t.Parallel()
	up := authUpstream(t)
	p := startProcEnv(t, "embedded", []string{"SLUICE_BASIC_AUTH=ann:s3cret-pass"},
		"http", strconv.Itoa(up.port), "--name", "guarded", "--allow", "127.0.0.1/32,127.0.0.2/32")
	if !p.waitOutput(p.stdout, "Forwarding ", 15*time.Second) {
		t.Fatalf("no Forwarding line: %s %s", p.stdout, p.stderr)
	}
	m := regexp.MustCompile(`Forwarding (http://guarded\.localhost:(\d+)) `).FindStringSubmatch(p.stdout.String())
	if m == nil {
		t.Fatalf("Forwarding line: %q", p.stdout)
	}
	checkVisitorRules(t, "127.0.0.1:"+m[2], m[1])
}

// An edge that ignores the rules (one older than the feature: it answers
// registered without "access") must not get the tunnel: the agent stops
// with a clear error instead of serving unprotected.
func TestAdhocVisitorRulesOldEdge(t *testing.T) { forProtocols(t, testAdhocVisitorRulesOldEdge) }

func testAdhocVisitorRulesOldEdge(t *testing.T, proto string) {
	registers := make(chan map[string]any, 4)
	up := websocket.Upgrader{Subprotocols: []string{"sluice.v2"}}
	old := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		_, msg, err := ws.ReadMessage()
		if err != nil {
			return
		}
		var reg map[string]any
		json.Unmarshal(msg, &reg)
		registers <- reg
		// An old edge confirms the features it knows, which "access" is not.
		var features []any
		for _, f := range reg["features"].([]any) {
			if f != "access" {
				features = append(features, f)
			}
		}
		answer, _ := json.Marshal(map[string]any{"type": "registered", "tunnel_id": reg["tunnel_id"],
			"public_url": "http://guarded.old.example", "features": features})
		ws.WriteMessage(websocket.TextMessage, answer)
		ws.SetReadDeadline(time.Now().Add(time.Minute))
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	}))
	t.Cleanup(old.Close)
	p := startProc(t, "agent", "http", "3000", "--edge", old.URL, "--token", "T", "--name", "guarded",
		"--protocol", proto, "--basic-auth", "ann:s3cret-pass", "--allow", "10.0.0.0/8")
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatal("the agent kept running against an edge that does not enforce its visitor rules")
	}
	if p.err == nil || !strings.Contains(p.stderr.String(), "does not enforce visitor rules") {
		t.Errorf("exit %v, stderr %q", p.err, p.stderr)
	}
	if strings.Contains(p.stdout.String(), "Forwarding") {
		t.Errorf("the agent announced the tunnel: %q", p.stdout)
	}
	reg := <-registers
	if len(registers) != 0 {
		t.Errorf("the agent registered %d more times", len(registers))
	}
	hash, _ := reg["basic_auth_bcrypt"].(string)
	if reg["basic_auth_user"] != "ann" || !strings.HasPrefix(hash, "$2") {
		t.Errorf("register without the rules: %v", reg)
	}
	if allow, _ := reg["allow_cidrs"].([]any); len(allow) != 1 || allow[0] != "10.0.0.0/8" {
		t.Errorf("allow_cidrs: %v", reg["allow_cidrs"])
	}
	raw, _ := json.Marshal(reg)
	if strings.Contains(string(raw), "s3cret-pass") {
		t.Errorf("the password crossed the wire: %s", raw)
	}
}
