package inspect

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sse"
)

func TestReplayRefusals(t *testing.T) {
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the upstream got %s %s: a refused replay went out", r.Method, r.URL)
	})
	f := newAPIFixture(t, Config{BodyLimit: 10}, HandlerConfig{Upstream: upstream, MaxReplayBody: 1000})
	cut := record(f.in, "POST", "/upload", http.Header{"Content-Type": {"text/plain"}}, []byte("0123456789abcdef"), 200, nil, nil)
	ok := record(f.in, "GET", "/", nil, nil, 200, nil, nil)
	big := `{"body":"` + strings.Repeat("x", 1001) + `"}`
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code, msg                string
	}{
		{"unknown id", "POST", "/api/requests/99/replay", "", 404, "not_found", `no request "99"`},
		{"wrong method", "GET", "/api/requests/1/replay", "", 405, CodeMethodNotAllowed, "only POST"},
		{"cut body", "POST", "/api/requests/" + cut.ID() + "/replay", "", 409, CodeBodyCut, "10 of 16 bytes kept"},
		{"cut body, edits without a body", "POST", "/api/requests/" + cut.ID() + "/replay", `{"method":"PUT"}`, 409, CodeBodyCut, "edited body"},
		{"not JSON", "POST", "/api/requests/" + ok.ID() + "/replay", `{"method":`, 400, "bad_json", "not the JSON expected"},
		{"unknown field", "POST", "/api/requests/" + ok.ID() + "/replay", `{"verb":"PUT"}`, 400, "bad_json", "verb"},
		{"two objects", "POST", "/api/requests/" + ok.ID() + "/replay", `{} {}`, 400, "bad_json", "more than one"},
		{"bad method", "POST", "/api/requests/" + ok.ID() + "/replay", `{"method":"GE T"}`, 400, CodeBadReplay, "not an HTTP method"},
		{"relative path", "POST", "/api/requests/" + ok.ID() + "/replay", `{"path":"x/y"}`, 400, CodeBadReplay, "starting with /"},
		{"space in path", "POST", "/api/requests/" + ok.ID() + "/replay", `{"path":"/a b"}`, 400, CodeBadReplay, "without spaces"},
		{"bad header name", "POST", "/api/requests/" + ok.ID() + "/replay", `{"headers":{"Bad Name":["x"]}}`, 400, CodeBadReplay, "header name"},
		{"bad header value", "POST", "/api/requests/" + ok.ID() + "/replay", `{"headers":{"X":["a\nb"]}}`, 400, CodeBadReplay, "not valid"},
		{"header values not an array", "POST", "/api/requests/" + ok.ID() + "/replay", `{"headers":{"X":"a"}}`, 400, "bad_json", "headers"},
		{"both bodies", "POST", "/api/requests/" + ok.ID() + "/replay", `{"body":"a","body_base64":"YQ=="}`, 400, CodeBadReplay, "not both"},
		{"bad base64", "POST", "/api/requests/" + ok.ID() + "/replay", `{"body_base64":"!!"}`, 400, CodeBadReplay, "body_base64"},
		{"body too large", "POST", "/api/requests/" + ok.ID() + "/replay", big, 400, CodeBadReplay, "at most"},
		{"edits too large", "POST", "/api/requests/" + ok.ID() + "/replay", `{"body_base64":"` + strings.Repeat("A", 1000/3*4+maxReplayHeaderBytes+64<<10) + `"}`, 413, CodeTooLarge, "over"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := f.do(t, tc.method, tc.path, strings.NewReader(tc.body))
			code, msg := apiErrorOf(t, resp, body, tc.status)
			if code != tc.code || !strings.Contains(msg, tc.msg) {
				t.Fatalf("%s: %s, want %s: ...%s...", code, msg, tc.code, tc.msg)
			}
		})
	}
	// Many headers.
	var hs []string
	for i := range maxReplayHeaders + 1 {
		hs = append(hs, `"X-H`+strings.Repeat("a", i%50)+`-`+string(rune('a'+i%26))+`":["v"]`)
	}
	resp, body := f.do(t, "POST", "/api/requests/"+ok.ID()+"/replay", strings.NewReader(`{"headers":{`+strings.Join(hs, ",")+`}}`))
	if code, msg := apiErrorOf(t, resp, body, 400); code != CodeBadReplay || !strings.Contains(msg, "at most 256 values") {
		t.Fatalf("%s: %s", code, msg)
	}
}

func TestReplayWithoutUpstream(t *testing.T) {
	f := newAPIFixture(t, Config{}, HandlerConfig{})
	e := record(f.in, "GET", "/", nil, nil, 200, nil, nil)
	resp, body := f.do(t, "POST", "/api/requests/"+e.ID()+"/replay", nil)
	if code, _ := apiErrorOf(t, resp, body, 503); code != CodeNoUpstream {
		t.Fatalf("code %s", code)
	}
}

// TestBuildReplay checks the request a record becomes: the record's
// method, target, Host and headers less the hop-by-hop ones, and a
// Content-Length that fits the body.
func TestBuildReplay(t *testing.T) {
	orig := Request{
		Method: "POST", Path: "/p?q=1", Host: "demo.localhost:8080", Proto: "HTTP/2.0",
		RequestHeaders: http.Header{
			"Content-Length": {"3"}, "Content-Type": {"text/plain"}, "X-Forwarded-For": {"203.0.113.7"},
			"Connection": {"keep-alive, X-Hop"}, "X-Hop": {"1"}, "Keep-Alive": {"timeout=5"}, "Te": {"trailers"},
			"Upgrade": {"h2c"}, "Authorization": {"Bearer t"}, "Cookie": {"a=1", "b=2"},
		},
		RequestBodySize: 3, RequestBodyCaptured: 3,
	}
	req, err := buildReplay(orig, []byte("abc"), &ReplayRequest{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	want := http.Header{"Content-Length": {"3"}, "Content-Type": {"text/plain"}, "X-Forwarded-For": {"203.0.113.7"},
		"Authorization": {"Bearer t"}, "Cookie": {"a=1", "b=2"}}
	if !maps.EqualFunc(req.Header, want, slices.Equal) || req.Method != "POST" || req.Host != "demo.localhost:8080" || req.URL.Path != "/p" ||
		req.URL.RawQuery != "q=1" || req.RequestURI != "/p?q=1" || req.ContentLength != 3 || req.ProtoMajor != 2 {
		t.Fatalf("%+v", req)
	}
	if orig.RequestHeaders.Get("Connection") == "" {
		t.Fatal("the record's headers were changed")
	}

	body := "edited body"
	req, err = buildReplay(orig, []byte("abc"), &ReplayRequest{Method: "PUT", Path: "/other", Body: &body,
		Headers: http.Header{"host": {"other.localhost"}, "x-new": {"1", "2"}, "content-length": {"99"}}}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(req.Header, http.Header{"X-New": {"1", "2"}, "Content-Length": {"11"}}, slices.Equal) || req.Host != "other.localhost" ||
		req.Method != "PUT" || req.URL.Path != "/other" || req.ContentLength != 11 {
		t.Fatalf("%+v", req)
	}

	// No body, no Content-Length: none added.
	req, _ = buildReplay(Request{Method: "GET", Path: "/", RequestHeaders: http.Header{"Accept": {"*/*"}}}, nil, &ReplayRequest{}, 100)
	if !maps.EqualFunc(req.Header, http.Header{"Accept": {"*/*"}}, slices.Equal) || req.Body != http.NoBody || req.ContentLength != 0 {
		t.Fatalf("%+v", req)
	}
}

// localServer is the local server of the replay tests: it keeps what each
// request brought (method, target, Host, headers, body).
type localServer struct {
	*httptest.Server
	mu   sync.Mutex
	seen []seenRequest
}

type seenRequest struct {
	method, target, host string
	header               http.Header
	body                 []byte
}

func newLocalServer(t *testing.T, h http.HandlerFunc) *localServer {
	t.Helper()
	ls := &localServer{}
	ls.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("local server: reading the body: %v", err)
		}
		ls.mu.Lock()
		ls.seen = append(ls.seen, seenRequest{r.Method, r.RequestURI, r.Host, r.Header.Clone(), body})
		ls.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "got %d bytes", len(body))
	}))
	t.Cleanup(ls.Close)
	return ls
}

func (ls *localServer) requests() []seenRequest {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return append([]seenRequest(nil), ls.seen...)
}

// proxyTo is a reverse proxy to the local server like the agent's: Host
// and forwarding headers kept as they came.
func proxyTo(ls *localServer) http.Handler {
	u, _ := url.Parse(ls.URL)
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
}

// agentFixture is an inspector recording what a proxy to the local server
// serves (the agent's side), and its API with that proxy as Upstream.
type agentFixture struct {
	*apiFixture
	local *localServer
	agent *httptest.Server // Wrap(proxy)
}

func newAgentFixture(t *testing.T, cfg Config, h http.HandlerFunc) *agentFixture {
	t.Helper()
	ls := newLocalServer(t, h)
	proxy := proxyTo(ls)
	f := newAPIFixture(t, cfg, HandlerConfig{Upstream: proxy})
	agent := httptest.NewServer(f.in.Wrap(proxy))
	t.Cleanup(agent.Close)
	return &agentFixture{apiFixture: f, local: ls, agent: agent}
}

// send sends a request through the agent and returns the answer's body.
func (f *agentFixture) send(t *testing.T, req *http.Request) []byte {
	t.Helper()
	resp, err := f.agent.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// replay replays id with the edits (nil: none) and returns the new
// request's object.
func (f *agentFixture) replay(t *testing.T, id string, edits any) Request {
	t.Helper()
	var body io.Reader
	if edits != nil {
		b, _ := json.Marshal(edits)
		body = bytes.NewReader(b)
	}
	resp, b := f.do(t, "POST", "/api/requests/"+id+"/replay", body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("replay: %d %s", resp.StatusCode, b)
	}
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	checkContract(t, obj)
	var r Request
	json.Unmarshal(b, &r)
	if loc := resp.Header.Get("Location"); loc != "/api/requests/"+r.ID {
		t.Errorf("Location %q for %s", loc, r.ID)
	}
	return r
}

// TestReplayBigPOSTByteExact: a POST with a 5 MiB body, recorded whole
// (BodyLimit 8 MiB), replays with the same method, target, Host, headers
// and body at the local server; the replay is in the list, marked.
func TestReplayBigPOSTByteExact(t *testing.T) {
	f := newAgentFixture(t, Config{BodyLimit: 8 << 20, MaxBytes: 64 << 20}, nil)
	payload := make([]byte, 5<<20)
	rand.Read(payload)
	req, _ := http.NewRequest("POST", f.agent.URL+"/upload/v1?x=1&y=%2F", bytes.NewReader(payload))
	req.Host = "demo.localhost:8080"
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Authorization", "Bearer secret")
	req.Header["X-Multi"] = []string{"one", "two"}
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("Connection", "keep-alive, X-Hop")
	req.Header.Set("X-Hop", "dropped by every proxy")
	if got := f.send(t, req); string(got) != "got 5242880 bytes" {
		t.Fatalf("through the agent: %q", got)
	}
	orig, _ := f.in.Get("1")
	if orig.RequestBodySize != 5<<20 || orig.RequestBodyTruncated || orig.State != StateDone {
		t.Fatalf("the record: %+v", orig)
	}

	r := f.replay(t, "1", nil)
	if r.ID != "2" || r.ReplayOf != "1" || r.Method != "POST" || r.Path != "/upload/v1?x=1&y=%2F" || r.Status != 200 ||
		r.State != StateDone || r.RequestBodySize != 5<<20 || r.ResponseBodySize != int64(len("got 5242880 bytes")) {
		t.Fatalf("the replay's record: %+v", r)
	}
	seen := f.local.requests()
	if len(seen) != 2 {
		t.Fatalf("the local server saw %d requests", len(seen))
	}
	a, b := seen[0], seen[1]
	if a.method != b.method || a.target != b.target || a.host != b.host || a.host != "demo.localhost:8080" {
		t.Errorf("first %s %s (Host %s), replay %s %s (Host %s)", a.method, a.target, a.host, b.method, b.target, b.host)
	}
	if !maps.EqualFunc(a.header, b.header, slices.Equal) {
		t.Errorf("headers differ:\nfirst  %v\nreplay %v", a.header, b.header)
	}
	if a.header.Get("X-Hop") != "" || a.header.Get("Authorization") != "Bearer secret" || len(a.header["X-Multi"]) != 2 {
		t.Errorf("the proxy's headers: %v", a.header)
	}
	if !bytes.Equal(a.body, payload) || !bytes.Equal(b.body, payload) {
		t.Errorf("bodies: %d and %d bytes, equal to the payload: %v %v", len(a.body), len(b.body), bytes.Equal(a.body, payload), bytes.Equal(b.body, payload))
	}
	list := f.in.List()
	if len(list) != 2 || list[0].ID != "2" || list[0].ReplayOf != "1" {
		t.Fatalf("list %+v", ids(list))
	}
}

// TestReplayCutBodyNeedsEdit: at the default limit (1 MiB) a 5 MiB body
// is cut; its replay is refused unless the body is edited.
func TestReplayCutBodyNeedsEdit(t *testing.T) {
	f := newAgentFixture(t, Config{}, nil)
	payload := bytes.Repeat([]byte("z"), 5<<20)
	req, _ := http.NewRequest("POST", f.agent.URL+"/big", bytes.NewReader(payload))
	f.send(t, req)
	resp, body := f.do(t, "GET", "/api/requests/1", nil)
	var orig Request
	json.Unmarshal(body, &orig)
	if resp.StatusCode != 200 || !orig.RequestBodyTruncated || orig.RequestBodyCaptured != DefaultBodyLimit || orig.RequestBodySize != 5<<20 {
		t.Fatalf("the record: %+v", orig)
	}
	resp, body = f.do(t, "POST", "/api/requests/1/replay", nil)
	if code, msg := apiErrorOf(t, resp, body, 409); code != CodeBodyCut || !strings.Contains(msg, "1048576 of 5242880 bytes") {
		t.Fatalf("%s: %s", code, msg)
	}
	if n := len(f.local.requests()); n != 1 {
		t.Fatalf("the local server saw %d requests", n)
	}

	edited := "a new body"
	r := f.replay(t, "1", ReplayRequest{Body: &edited})
	seen := f.local.requests()
	if r.RequestBodySize != int64(len(edited)) || len(seen) != 2 || string(seen[1].body) != edited || seen[1].header.Get("Content-Length") != "10" {
		t.Fatalf("record %+v; local server saw %d requests", r, len(seen))
	}
}

// TestReplayEdits: method, path, headers (Host among them) and a binary
// body, edited.
func TestReplayEdits(t *testing.T) {
	f := newAgentFixture(t, Config{}, nil)
	req, _ := http.NewRequest("GET", f.agent.URL+"/a?b=c", nil)
	req.Header.Set("X-Old", "1")
	f.send(t, req)
	bin := []byte{0, 1, 2, 0xff}
	b64 := base64.StdEncoding.EncodeToString(bin)
	r := f.replay(t, "1", ReplayRequest{Method: "PATCH", Path: "/z?q=%20", BodyBase64: &b64,
		Headers: http.Header{"x-new": {"a", "b"}, "Host": {"edited.localhost"}, "Content-Type": {"application/x-thing"}}})
	seen := f.local.requests()[1]
	if seen.method != "PATCH" || seen.target != "/z?q=%20" || seen.host != "edited.localhost" || !bytes.Equal(seen.body, bin) ||
		seen.header.Get("X-Old") != "" || strings.Join(seen.header["X-New"], ",") != "a,b" || seen.header.Get("Content-Type") != "application/x-thing" {
		t.Fatalf("the local server saw %+v", seen)
	}
	if r.Method != "PATCH" || r.Path != "/z?q=%20" || r.Host != "edited.localhost" || r.ReplayOf != "1" || r.RequestBodySize != 4 {
		t.Fatalf("the replay's record %+v", r)
	}
}

// TestReplayStream: a replayed event stream is answered once its headers
// have come, and goes on, recorded, until the inspector closes.
func TestReplayStream(t *testing.T) {
	// Each request's events come on a channel of its own: the first
	// request's handler, which may not have seen its client leave yet,
	// cannot take the replay's event.
	first, second := make(chan string, 4), make(chan string, 4)
	streams := make(chan chan string, 2)
	streams <- first
	streams <- second
	f := newAgentFixture(t, Config{}, func(w http.ResponseWriter, r *http.Request) {
		events := <-streams
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		for {
			select {
			case ev := <-events:
				fmt.Fprintf(w, "data: %s\n\n", ev)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	})
	// The first request: one event, then the client leaves.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", f.agent.URL+"/events", nil)
	resp, err := f.agent.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	first <- "one"
	p := sse.NewParser(resp.Body, sse.ParserConfig{})
	if ev, err := p.Next(); err != nil || ev.Data != "one" {
		t.Fatalf("%v %+v", err, ev)
	}
	cancel()
	resp.Body.Close()

	r := f.replay(t, "1", nil)
	if r.ReplayOf != "1" || r.Stream != StreamSSE || r.State != StateStreaming || r.Status != 200 {
		t.Fatalf("the replay's record %+v", r)
	}
	second <- "two"
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, _ := f.in.Get(r.ID)
		if len(got.Items) == 1 && got.Items[0].Text == "two" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replayed stream's event was not recorded: %+v", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The cleanup closes the inspector: the replay ends (goleak checks).
}
