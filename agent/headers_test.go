package agent

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/internal/errpage"
)

// tunnelTo runs an edge (adjusted by mut) and an agent with protocol
// that serves tunnel "unit" to h; it returns the edge's address once the
// tunnel is up.
func tunnelTo(t *testing.T, protocol string, mut func(*edge.Config), h http.Handler) (addr string) {
	t.Helper()
	up := httptest.NewServer(h)
	t.Cleanup(up.Close) // after the agent has stopped (cleanups run last first)
	upURL, _ := url.Parse(up.URL)
	return tunnelToConfig(t, protocol, mut, Config{Upstream: upURL})
}

// tunnelToConfig is tunnelTo with the agent's upstream and other settings
// from ac (its edge, token, name, protocol and OnConnect are set here).
func tunnelToConfig(t *testing.T, protocol string, mut func(*edge.Config), ac Config) (addr string) {
	t.Helper()
	addr, _ = tunnelAgent(t, protocol, mut, ac)
	return addr
}

// tunnelAgent is tunnelToConfig that also returns the agent.
func tunnelAgent(t *testing.T, protocol string, mut func(*edge.Config), ac Config) (addr string, a *Agent) {
	t.Helper()
	cfg := edge.DefaultConfig()
	cfg.Tokens = []string{"T"}
	if mut != nil {
		mut(&cfg)
	}
	srv, err := edge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ctx, ln, time.Second)
	}()
	connected := make(chan string, 4)
	ac.Edge, ac.Token, ac.Name, ac.Protocol = "http://"+ln.Addr().String(), "T", "unit", protocol
	ac.OnConnect = func(u, _ string) { connected <- u }
	a, err = New(ac)
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		a.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-ran
		<-served
	})
	select {
	case <-connected:
	case <-time.After(time.Minute):
		t.Fatal("the agent did not connect within a minute")
	}
	return ln.Addr().String(), a
}

// seenRequest is what the upstream saw.
type seenRequest struct {
	Method string
	Host   string
	Header http.Header
	Body   string
}

func echoRequest(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(seenRequest{r.Method, r.Host, r.Header, string(b)})
}

func publicDo(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// Finding 10 of issue 11: a visitor sends Sluice-Upgrade, the field the
// edge uses to carry an upgrade over protocol v2. The upstream must get
// the visitor's POST with its body, not an upgrade request without one;
// and the tunnel's fields the upstream sends never reach the visitor.
func TestVisitorCannotSendSluiceFields(t *testing.T) {
	t.Parallel()
	for _, protocol := range []string{"v1", "v2"} {
		t.Run(protocol, func(t *testing.T) {
			t.Parallel()
			addr := tunnelTo(t, protocol, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Sluice-Upgraded", "websocket")
				w.Header().Set("Sluice-Anything", "x")
				echoRequest(w, r)
			}))
			req, _ := http.NewRequest("POST", "http://"+addr+"/form", strings.NewReader("the body"))
			req.Host = "unit.localhost"
			req.Header.Set("Sluice-Upgrade", "websocket")
			req.Header.Set("sluice-other", "1")
			resp, body := publicDo(t, req)
			var seen seenRequest
			if err := json.Unmarshal(body, &seen); err != nil {
				t.Fatalf("status %d: %q: %v", resp.StatusCode, body, err)
			}
			if seen.Method != "POST" || seen.Body != "the body" {
				t.Errorf("upstream saw %s with body %q, want the POST with %q", seen.Method, seen.Body, "the body")
			}
			for k, v := range seen.Header {
				if strings.HasPrefix(strings.ToLower(k), "sluice-") || k == "Upgrade" || k == "Connection" {
					t.Errorf("upstream saw %s: %q", k, v)
				}
			}
			for k, v := range resp.Header {
				if strings.HasPrefix(strings.ToLower(k), "sluice-") {
					t.Errorf("visitor saw %s: %q", k, v)
				}
			}
		})
	}
}

// Finding 8 of issue 11 (cookie tossing): a tunnel sets cookies with
// Domain=<apex>, which browsers would send to every other tunnel. The edge
// makes those host-only and drops cookies for another tunnel; cookies for
// the tunnel's own host and without Domain pass byte for byte.
func TestCookiesStayWithTheirTunnel(t *testing.T) {
	t.Parallel()
	sent := []string{
		"a=1; Path=/; Domain=localhost; HttpOnly",
		"b=2; domain=.LOCALHOST.",
		"c=3; Domain=other.localhost",
		"d=4; Domain=unit.localhost; Secure",
		"e=5; Path=/",
		"f=6; Domain=evil.example",
	}
	want := []string{
		"a=1; Path=/; HttpOnly",
		"b=2",
		"d=4; Domain=unit.localhost; Secure",
		"e=5; Path=/",
	}
	for _, protocol := range []string{"v1", "v2"} {
		t.Run(protocol, func(t *testing.T) {
			t.Parallel()
			addr := tunnelTo(t, protocol, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header()["Set-Cookie"] = sent
				io.WriteString(w, "ok")
			}))
			req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
			req.Host = "unit.localhost"
			resp, _ := publicDo(t, req)
			got := resp.Header.Values("Set-Cookie")
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("Set-Cookie\n got %q\nwant %q", got, want)
			}
		})
	}
}

// The upstream sees one spelling of the public host: lowercase, no
// trailing dot, the port the visitor used unless it is the scheme's
// default.
func TestHostNormalised(t *testing.T) {
	t.Parallel()
	addr := tunnelTo(t, "v2", nil, http.HandlerFunc(echoRequest))
	for in, want := range map[string]string{
		"UNIT.Localhost.:8080": "unit.localhost:8080",
		"unit.localhost.":      "unit.localhost",
		"Unit.LOCALHOST:80":    "unit.localhost",
		"unit.localhost:0080":  "unit.localhost",
	} {
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		req.Host = in
		_, body := publicDo(t, req)
		var seen seenRequest
		if err := json.Unmarshal(body, &seen); err != nil {
			t.Fatalf("Host %q: %q: %v", in, body, err)
		}
		if seen.Host != want || seen.Header.Get("X-Forwarded-Host") != want {
			t.Errorf("Host %q: upstream saw Host %q, X-Forwarded-Host %q, want %q", in, seen.Host, seen.Header.Get("X-Forwarded-Host"), want)
		}
	}
}

// Finding 11 of issue 11: when the agent cannot reach its upstream, the
// visitor learns which upstream failed and how (refused, timed out,
// failed), never the socket error or the resolver's address; the agent's
// log has them under the page's request id.
func TestUpstreamErrorShowsNoInternals(t *testing.T) {
	t.Parallel()
	addr := runEdge(t)
	var logs syncBuffer
	connected := make(chan string, 4)
	// .invalid never resolves (RFC 6761): the error names the resolver.
	up := &url.URL{Scheme: "http", Host: "upstream.invalid:80"}
	a, err := New(Config{Edge: "http://" + addr, Token: "T", Name: "unit", Upstream: up,
		Logger:    slog.New(slog.NewTextHandler(&logs, nil)),
		OnConnect: func(u, _ string) { connected <- u }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		a.Run(ctx)
	}()
	defer func() {
		cancel()
		<-ran
	}()
	<-connected
	req, _ := http.NewRequest("GET", "http://"+addr+"/x", nil)
	req.Host = "unit.localhost"
	resp, body := publicDo(t, req)
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502: %s", resp.StatusCode, body)
	}
	id := resp.Header.Get(errpage.IDHeader)
	if !strings.Contains(string(body), "upstream.invalid:80") || !strings.Contains(string(body), id) || len(id) != 16 {
		t.Errorf("the page does not name the upstream and the request id %q: %s", id, body)
	}
	if strings.Contains(string(body), "lookup") || strings.Contains(string(body), "dial") {
		t.Errorf("the visitor sees the socket error: %s", body)
	}
	if l := logs.String(); !strings.Contains(l, "request_id="+id) || !strings.Contains(l, "lookup") {
		t.Errorf("the agent's log lacks the request id %s or the error:\n%s", id, l)
	}
}
