package inspect

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/sse"
)

// apiFixture is an Inspector served by its Handler on a real loopback
// server.
type apiFixture struct {
	in  *Inspector
	srv *httptest.Server
}

func newAPIFixture(t *testing.T, cfg Config, hc HandlerConfig) *apiFixture {
	t.Helper()
	in := New(cfg)
	srv := httptest.NewServer(in.Handler(hc))
	// Close the inspector first: it ends the event streams the server's
	// Close would wait for.
	t.Cleanup(srv.Close)
	t.Cleanup(in.Close)
	return &apiFixture{in: in, srv: srv}
}

// do sends a request to the API and returns the answer with its body.
func (f *apiFixture) do(t *testing.T, method, path string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, path, err)
	}
	return resp, b
}

// record makes a finished request through the store's API.
func record(in *Inspector, method, target string, reqHeader http.Header, reqBody []byte, status int, respHeader http.Header, respBody []byte) *Entry {
	r := httptest.NewRequest(method, target, nil)
	r.Header = reqHeader
	e := in.Begin(r, "")
	if reqBody != nil {
		e.RequestBody(reqBody)
	}
	if status != 0 {
		e.Response(status, respHeader)
		if respBody != nil {
			e.ResponseBody(respBody)
		}
		e.End(nil)
	}
	return e
}

// apiErrorOf checks that an answer is the API's JSON error with that
// status and returns its code and message.
func apiErrorOf(t *testing.T, resp *http.Response, body []byte, status int) (code, msg string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q; body %s", ct, body)
	}
	var v struct {
		Error struct {
			Code    string `json:"code"`
			Status  int    `json:"status"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("not JSON: %v: %s", err, body)
	}
	if v.Error.Status != status || v.Error.Code == "" || v.Error.Message == "" {
		t.Fatalf("error %+v", v.Error)
	}
	return v.Error.Code, v.Error.Message
}

// checkContract checks the fields of a request object that tests outside
// the project read (the interface), by their JSON types.
func checkContract(t *testing.T, obj map[string]any) {
	t.Helper()
	for _, k := range []string{"id", "method", "path"} {
		if _, ok := obj[k].(string); !ok {
			t.Errorf("%s: %#v, want a string", k, obj[k])
		}
	}
	for _, k := range []string{"status", "duration_ms", "request_body_size", "response_body_size"} {
		if _, ok := obj[k].(float64); !ok {
			t.Errorf("%s: %#v, want a number", k, obj[k])
		}
	}
	for _, k := range []string{"request_headers", "response_headers"} {
		h, ok := obj[k].(map[string]any)
		if !ok {
			t.Errorf("%s: %#v, want an object", k, obj[k])
			continue
		}
		for name, vs := range h {
			arr, ok := vs.([]any)
			if !ok || len(arr) == 0 {
				t.Errorf("%s[%s]: %#v, want an array of strings", k, name, vs)
				continue
			}
			for _, v := range arr {
				if _, ok := v.(string); !ok {
					t.Errorf("%s[%s]: %#v, want strings", k, name, v)
				}
			}
		}
	}
}

func TestAPIListContract(t *testing.T) {
	f := newAPIFixture(t, Config{}, HandlerConfig{})
	resp, body := f.do(t, "GET", "/api/requests", nil)
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("empty list: %d %q", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}

	record(f.in, "POST", "/upload?x=1", http.Header{"Content-Type": {"application/json"}, "X-Multi": {"a", "b"}},
		[]byte(`{"a":1}`), 201, http.Header{"Set-Cookie": {"a=1", "b=2"}}, []byte("made"))
	record(f.in, "GET", "/pending", nil, nil, 0, nil, nil) // no headers, no response yet

	resp, body = f.do(t, "GET", "/api/requests", nil)
	var list []map[string]any
	if err := json.Unmarshal(body, &list); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %v: %s", resp.StatusCode, err, body)
	}
	if len(list) != 2 {
		t.Fatalf("%d requests: %s", len(list), body)
	}
	for _, obj := range list {
		checkContract(t, obj)
		if _, ok := obj["items"]; ok {
			t.Errorf("the list carries items: %v", obj)
		}
	}
	newest, oldest := list[0], list[1]
	if newest["id"] != "2" || newest["path"] != "/pending" || newest["status"] != 0.0 || newest["state"] != StateWaiting {
		t.Errorf("newest %v", newest)
	}
	if len(newest["request_headers"].(map[string]any)) != 0 || len(newest["response_headers"].(map[string]any)) != 0 {
		t.Errorf("headers of a request without any: %v", newest)
	}
	if oldest["id"] != "1" || oldest["method"] != "POST" || oldest["path"] != "/upload?x=1" || oldest["status"] != 201.0 ||
		oldest["request_body_size"] != 7.0 || oldest["response_body_size"] != 4.0 || oldest["state"] != StateDone {
		t.Errorf("oldest %v", oldest)
	}
	if got := oldest["request_headers"].(map[string]any)["X-Multi"]; len(got.([]any)) != 2 {
		t.Errorf("multi-value header %v", got)
	}
	if got := oldest["response_headers"].(map[string]any)["Set-Cookie"]; len(got.([]any)) != 2 {
		t.Errorf("Set-Cookie %v", got)
	}
}

func TestAPIListFilters(t *testing.T) {
	f := newAPIFixture(t, Config{}, HandlerConfig{})
	record(f.in, "GET", "/users/1", nil, nil, 200, nil, nil)
	record(f.in, "POST", "/users", nil, nil, 201, nil, nil)
	record(f.in, "GET", "/missing", nil, nil, 404, nil, nil)
	record(f.in, "DELETE", "/Users/2", nil, nil, 500, nil, nil)
	for _, tc := range []struct {
		query string
		want  []string // paths, newest first
	}{
		{"", []string{"/Users/2", "/missing", "/users", "/users/1"}},
		{"?method=get", []string{"/missing", "/users/1"}},
		{"?status=404", []string{"/missing"}},
		{"?status=2xx", []string{"/users", "/users/1"}},
		{"?status=5XX", []string{"/Users/2"}},
		{"?path=users", []string{"/Users/2", "/users", "/users/1"}},
		{"?path=users&method=GET&status=200", []string{"/users/1"}},
		{"?status=418", nil},
	} {
		t.Run(tc.query, func(t *testing.T) {
			_, body := f.do(t, "GET", "/api/requests"+tc.query, nil)
			var list []Request
			if err := json.Unmarshal(body, &list); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range list {
				got = append(got, r.Path)
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") || list == nil {
				t.Fatalf("got %v, want %v (%s)", got, tc.want, body)
			}
		})
	}
	resp, body := f.do(t, "GET", "/api/requests?status=abc", nil)
	if code, _ := apiErrorOf(t, resp, body, 400); code != CodeBadFilter {
		t.Fatalf("code %q", code)
	}
}

func TestAPIGetAndErrors(t *testing.T) {
	f := newAPIFixture(t, Config{}, HandlerConfig{})
	e := f.in.Begin(httptest.NewRequest("GET", "/events", nil), "")
	e.Response(200, http.Header{"Content-Type": {"text/event-stream"}})
	e.SetStream(StreamSSE)
	e.AddItem(Item{Kind: "event", Event: "tick", EventID: "7", Text: "hello", Size: 5})
	e.End(nil)

	resp, body := f.do(t, "GET", "/api/requests/"+e.ID(), nil)
	var obj map[string]any
	if err := json.Unmarshal(body, &obj); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %v: %s", resp.StatusCode, err, body)
	}
	checkContract(t, obj)
	var got Request
	json.Unmarshal(body, &got)
	if got.ID != e.ID() || got.Stream != StreamSSE || len(got.Items) != 1 || got.Items[0].Text != "hello" || got.Items[0].EventID != "7" {
		t.Fatalf("got %+v", got)
	}

	for _, tc := range []struct {
		name, method, path string
		status             int
		code               string
	}{
		{"unknown id", "GET", "/api/requests/99", 404, "not_found"},
		{"unknown id body", "GET", "/api/requests/99/body", 404, "not_found"},
		{"unknown route", "GET", "/api/nothing", 404, "not_found"},
		{"wrong method list", "POST", "/api/requests", 405, CodeMethodNotAllowed},
		{"wrong method get", "DELETE", "/api/requests/1", 405, CodeMethodNotAllowed},
		{"wrong method events", "POST", "/api/events", 405, CodeMethodNotAllowed},
		{"bad side", "GET", "/api/requests/1/body?side=both", 400, CodeBadSide},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := f.do(t, tc.method, tc.path, nil)
			if code, _ := apiErrorOf(t, resp, body, tc.status); code != tc.code {
				t.Fatalf("code %q, want %q", code, tc.code)
			}
			if tc.status == 405 && resp.Header.Get("Allow") == "" {
				t.Fatal("405 without Allow")
			}
		})
	}
}

func TestAPIBody(t *testing.T) {
	f := newAPIFixture(t, Config{BodyLimit: 8}, HandlerConfig{})
	e := record(f.in, "PUT", "/p", http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, []byte("0123456789"),
		200, http.Header{"Content-Type": {"image/png"}, "Content-Encoding": {"gzip"}}, []byte{0x89, 'P', 'N', 'G'})
	for _, tc := range []struct {
		side, ct, size, captured, truncated, enc string
		body                                     string
	}{
		{"request", "text/plain; charset=utf-8", "10", "8", "true", "", "01234567"},
		{"response", "image/png", "4", "4", "false", "gzip", "\x89PNG"},
		{"", "image/png", "4", "4", "false", "gzip", "\x89PNG"},
	} {
		t.Run("side="+tc.side, func(t *testing.T) {
			resp, body := f.do(t, "GET", "/api/requests/"+e.ID()+"/body?side="+tc.side, nil)
			h := resp.Header
			if resp.StatusCode != 200 || string(body) != tc.body || h.Get("Content-Type") != tc.ct ||
				h.Get(HeaderBodySize) != tc.size || h.Get(HeaderBodyCaptured) != tc.captured ||
				h.Get(HeaderBodyTruncated) != tc.truncated || h.Get(HeaderBodyEncoding) != tc.enc ||
				h.Get("X-Content-Type-Options") != "nosniff" {
				t.Fatalf("%d %q %v", resp.StatusCode, body, h)
			}
		})
	}
	// A request without a body, nor a Content-Type.
	e = record(f.in, "GET", "/", nil, nil, 204, nil, nil)
	resp, body := f.do(t, "GET", "/api/requests/"+e.ID()+"/body?side=request", nil)
	if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("Content-Type") != "application/octet-stream" || resp.Header.Get(HeaderBodySize) != "0" {
		t.Fatalf("%d %q %v", resp.StatusCode, body, resp.Header)
	}
}

func TestAPIEvents(t *testing.T) {
	f := newAPIFixture(t, Config{}, HandlerConfig{})
	// readEvents reads events from /api/events after lastID until enough
	// says they are enough.
	readEvents := func(lastID string, during func(), enough func([]sse.Event) bool) []sse.Event {
		t.Helper()
		req, _ := http.NewRequest("GET", f.srv.URL+"/api/events", nil)
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("%d %v", resp.StatusCode, resp.Header)
		}
		if during != nil {
			during()
		}
		p := sse.NewParser(resp.Body, sse.ParserConfig{})
		var out []sse.Event
		got := make(chan error, 1)
		go func() {
			for !enough(out) {
				ev, err := p.Next()
				if err != nil {
					got <- err
					return
				}
				out = append(out, ev)
			}
			got <- nil
		}()
		select {
		case err := <-got:
			if err != nil {
				t.Fatalf("after %d events: %v", len(out), err)
			}
		case <-time.After(30 * time.Second):
			resp.Body.Close()
			<-got
			t.Fatalf("not enough events in 30 s: %+v", out)
		}
		return out
	}
	// requestIn decodes a "request" event.
	requestIn := func(ev sse.Event) Request {
		t.Helper()
		var r Request
		if err := json.Unmarshal([]byte(ev.Data), &r); err != nil {
			t.Fatalf("event %+v: %v", ev, err)
		}
		return r
	}
	// doneWith says whether evs hold the end of the request with path.
	doneWith := func(path string) func([]sse.Event) bool {
		return func(evs []sse.Event) bool {
			for _, ev := range evs {
				if ev.Type == EventRequest && strings.Contains(ev.Data, `"path":"`+path+`"`) && strings.Contains(ev.Data, `"state":"done"`) {
					return true
				}
			}
			return false
		}
	}
	// checkStates checks that evs are "request" events of path whose
	// states only move on, the last one done, and returns that one.
	order := map[string]int{StateWaiting: 0, StateStreaming: 1, StateDone: 2}
	checkStates := func(evs []sse.Event, path string) Request {
		t.Helper()
		var last Request
		for i, ev := range evs {
			r := requestIn(ev)
			if ev.Type != EventRequest || ev.ID == "" || r.Path != path || (i > 0 && order[r.State] < order[last.State]) {
				t.Fatalf("event %d of %+v", i, evs)
			}
			last = r
		}
		if last.State != StateDone {
			t.Fatalf("the last event %+v", last)
		}
		return last
	}

	// Live: the headers are out before anything is published, then the
	// request's latest state (its begin, response and end close together
	// are one event, or more when a batch falls between them, each later
	// than the one before), and its item; the request's first event comes
	// before its item.
	var item *ItemEvent
	evs := readEvents("", func() {
		e := f.in.Begin(httptest.NewRequest("GET", "/live", nil), "")
		e.Response(200, http.Header{"Content-Type": {"application/x-ndjson"}})
		e.AddItem(Item{Kind: "line", Text: `{"n":1}`})
		e.End(nil)
	}, func(evs []sse.Event) bool {
		return doneWith("/live")(evs) && slices.ContainsFunc(evs, func(ev sse.Event) bool { return ev.Type == EventItem })
	})
	if evs[0].Type != EventRequest {
		t.Fatalf("first event %+v", evs[0])
	}
	var states []sse.Event
	for _, ev := range evs {
		if ev.Type == EventItem {
			if item != nil || ev.ID == "" {
				t.Fatalf("items %+v", evs)
			}
			item = new(ItemEvent)
			if err := json.Unmarshal([]byte(ev.Data), item); err != nil {
				t.Fatal(err)
			}
			continue
		}
		states = append(states, ev)
	}
	r := checkStates(states, "/live")
	if len(states) > 3 || r.Status != 200 || r.ResponseHeaders.Get("Content-Type") != "application/x-ndjson" || r.ItemCount != 1 {
		t.Fatalf("%d request events, the last %+v", len(states), r)
	}
	if item.ID != r.ID || item.Item.N != 1 || item.Item.Text != `{"n":1}` {
		t.Fatalf("item %+v", item)
	}

	// Last-Event-ID: a reconnecting page gets what changed after it (in
	// its latest state: a request recorded while nobody watched is
	// published when a watcher comes).
	record(f.in, "GET", "/later", nil, nil, 200, nil, nil)
	evs2 := readEvents(evs[len(evs)-1].ID, nil, doneWith("/later"))
	checkStates(evs2, "/later")
}

func TestAPIHeadAndJSONShape(t *testing.T) {
	f := newAPIFixture(t, Config{}, HandlerConfig{})
	record(f.in, "GET", "/", nil, nil, 200, nil, nil)
	resp, body := f.do(t, "HEAD", "/api/requests", nil)
	if resp.StatusCode != 200 || len(body) != 0 {
		t.Fatalf("HEAD: %d %q", resp.StatusCode, body)
	}
	_, body = f.do(t, "GET", "/api/requests/1", nil)
	if !bytes.Contains(body, []byte(`"response_headers": {}`)) || !bytes.Contains(body, []byte(`"request_headers": {`)) {
		t.Fatalf("headers not objects: %s", body)
	}
}

// TestGuard: the inspector answers only for an IP address or localhost
// (DNS rebinding), and refuses another site's POSTs (CSRF); its own page
// and tools pass.
func TestGuard(t *testing.T) {
	f := newAPIFixture(t, Config{}, HandlerConfig{})
	record(f.in, "GET", "/", nil, nil, 200, nil, nil)
	port := strings.TrimPrefix(f.srv.URL, "http://127.0.0.1")
	for _, tc := range []struct {
		name, method, host string
		header             http.Header
		status             int
		code               string
	}{
		{"ip", "GET", "127.0.0.1" + port, nil, 200, ""},
		{"ipv6", "GET", "[::1]" + port, nil, 200, ""},
		{"localhost", "GET", "localhost" + port, nil, 200, ""},
		{"under localhost", "GET", "inspect.localhost" + port, nil, 200, ""},
		{"rebound name", "GET", "evil.example" + port, nil, 403, CodeBadHost},
		{"rebound name without port", "GET", "evil.example", nil, 403, CodeBadHost},
		{"cross-site read", "GET", "127.0.0.1" + port, http.Header{"Sec-Fetch-Site": {"cross-site"}}, 200, ""},
		{"cross-site replay", "POST", "127.0.0.1" + port, http.Header{"Sec-Fetch-Site": {"cross-site"}}, 403, CodeCrossOrigin},
		{"cross-origin replay", "POST", "127.0.0.1" + port, http.Header{"Origin": {"http://evil.example"}}, 403, CodeCrossOrigin},
		{"own page's replay", "POST", "127.0.0.1" + port, http.Header{"Sec-Fetch-Site": {"same-origin"}, "Origin": {f.srv.URL}}, 503, CodeNoUpstream},
		{"a tool's replay", "POST", "127.0.0.1" + port, nil, 503, CodeNoUpstream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "/api/requests"
			if tc.method == "POST" {
				path = "/api/requests/1/replay"
			}
			req, _ := http.NewRequest(tc.method, f.srv.URL+path, nil)
			req.Host = tc.host
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp, err := f.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if tc.code == "" {
				if resp.StatusCode != tc.status {
					t.Fatalf("%d %s", resp.StatusCode, body)
				}
				return
			}
			if code, _ := apiErrorOf(t, resp, body, tc.status); code != tc.code {
				t.Fatalf("code %s", code)
			}
		})
	}
}
