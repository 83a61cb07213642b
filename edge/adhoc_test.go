package edge_test

import (
	"context"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/store"
	"golang.org/x/crypto/bcrypt"
)

// adhocGet asks tunnel name from the local address ip, with basic auth
// user:pass when user is not "".
func adhocGet(t *testing.T, e *testEdge, name, ip, user, pass string) *http.Response {
	t.Helper()
	resp, err := adhocDo(e, name, ip, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func adhocDo(e *testEdge, name, ip, user, pass string) (*http.Response, error) {
	req, _ := http.NewRequest("GET", "http://"+e.addr+"/", nil)
	req.Host = name + ".localhost"
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 2 * time.Minute}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return resp, nil
}

// An ad-hoc tunnel's rules come with register and are enforced by the edge
// (a plain v1 agent here; the e2e tests run the real agent over v1 and
// v2), before and after the agent leaves; registered confirms "access".
func TestAdhocAccessEnforced(t *testing.T) {
	e := startEdge(t, nil)
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	a := e.dial(t)
	a.sendJSON(t, map[string]any{"type": "register", "tunnel_id": "adhoc", "agent_token": "T",
		"features":        []string{"request_stream", "access"},
		"basic_auth_user": "ann", "basic_auth_bcrypt": string(hash), "allow_cidrs": []string{"127.0.0.2/32"}})
	f := a.read(t, 5*time.Second)
	features, _ := f.m["features"].([]any)
	if f.typ() != "registered" || !slices.Contains(features, any("access")) {
		t.Fatalf("register with rules: %s, want registered confirming access", f.raw)
	}
	got := make(chan *http.Response, 1)
	go func() {
		resp, err := adhocDo(e, "adhoc", "127.0.0.2", "ann", "pw")
		if err != nil {
			resp = &http.Response{StatusCode: -1}
		}
		got <- resp
	}()
	req := a.expectRequest(t)
	for k := range req.Headers {
		if strings.EqualFold(k, "Authorization") {
			t.Errorf("the agent got the visitor's Authorization header")
		}
	}
	a.respond(t, req.ID, 200, nil, []byte("ok"))
	if resp := <-got; resp.StatusCode != 200 {
		t.Fatalf("right credentials, allowed address: %d", resp.StatusCode)
	}
	check := func(when string, want map[[3]string]int) {
		t.Helper()
		for k, status := range want {
			if resp := adhocGet(t, e, "adhoc", k[0], k[1], k[2]); resp.StatusCode != status {
				t.Errorf("%s: from %s as %q/%q: %d, want %d", when, k[0], k[1], k[2], resp.StatusCode, status)
			}
		}
	}
	check("online", map[[3]string]int{
		{"127.0.0.2", "", ""}:      401,
		{"127.0.0.2", "ann", "no"}: 401,
		{"127.0.0.3", "ann", "pw"}: 403,
	})
	a.ws.Close()
	// Offline, the name keeps its rules: a visitor who passes them learns
	// that the agent is offline, others do not.
	for deadline := time.Now().Add(time.Minute); adhocGet(t, e, "adhoc", "127.0.0.2", "ann", "pw").StatusCode != http.StatusBadGateway; {
		if time.Now().After(deadline) {
			t.Fatal("the tunnel is not offline a minute after its agent left")
		}
		time.Sleep(10 * time.Millisecond)
	}
	check("offline", map[[3]string]int{
		{"127.0.0.2", "", ""}:      401,
		{"127.0.0.3", "ann", "pw"}: 403,
	})
}

// Rules that the edge cannot enforce as sent are refused at registration,
// and so are rules sent for a stored tunnel, whose own rules win.
func TestAdhocAccessRefused(t *testing.T) {
	e, st, tokID, secret := storeEdge(t, time.Minute)
	if _, err := st.CreateTunnel(context.Background(), store.Tunnel{Name: "kept", AgentTokenID: tokID, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	costly := strings.Replace(string(hash), "$04$", "$14$", 1)
	cases := []struct {
		name, tunnel, token, code string
		rules                     map[string]any
	}{
		{"bad CIDR", "a1", "T", "bad_access", map[string]any{"allow_cidrs": []string{"10.0.0.0/8", "nope"}}},
		{"not a bcrypt hash", "a2", "T", "bad_access", map[string]any{"basic_auth_user": "ann", "basic_auth_bcrypt": "pw"}},
		{"bcrypt cost above the edge's", "a3", "T", "bad_access", map[string]any{"basic_auth_user": "ann", "basic_auth_bcrypt": costly}},
		{"user without a hash", "a4", "T", "bad_access", map[string]any{"basic_auth_user": "ann"}},
		{"user with a colon", "a5", "T", "bad_access", map[string]any{"basic_auth_user": "a:b", "basic_auth_bcrypt": string(hash)}},
		{"stored tunnel", "kept", secret, "access_stored", map[string]any{"allow_cidrs": []string{"10.0.0.0/8"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			reg := map[string]any{"type": "register", "tunnel_id": tc.tunnel, "agent_token": tc.token, "features": []string{"access"}}
			for k, v := range tc.rules {
				reg[k] = v
			}
			a := e.dial(t)
			a.sendJSON(t, reg)
			f := a.read(t, 5*time.Second)
			if f.typ() != "error" || f.str("code") != tc.code {
				t.Fatalf("got %s, want error %s", f.raw, tc.code)
			}
		})
	}
	// Without rules, the stored tunnel's owner registers as before.
	a := e.dial(t)
	a.sendJSON(t, map[string]any{"type": "register", "tunnel_id": "kept", "agent_token": secret, "features": []string{"access"}})
	if f := a.read(t, 5*time.Second); f.typ() != "registered" {
		t.Fatalf("owner without rules: %s", f.raw)
	}
}
