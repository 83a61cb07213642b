package inspect

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
	if !equalHeaders(req.Header, want) || req.Method != "POST" || req.Host != "demo.localhost:8080" || req.URL.Path != "/p" ||
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
	if !equalHeaders(req.Header, http.Header{"X-New": {"1", "2"}, "Content-Length": {"11"}}) || req.Host != "other.localhost" ||
		req.Method != "PUT" || req.URL.Path != "/other" || req.ContentLength != 11 {
		t.Fatalf("%+v", req)
	}

	// No body, no Content-Length: none added.
	req, _ = buildReplay(Request{Method: "GET", Path: "/", RequestHeaders: http.Header{"Accept": {"*/*"}}}, nil, &ReplayRequest{}, 100)
	if !equalHeaders(req.Header, http.Header{"Accept": {"*/*"}}) || req.Body != http.NoBody || req.ContentLength != 0 {
		t.Fatalf("%+v", req)
	}
}

func equalHeaders(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, vs := range a {
		if strings.Join(vs, "\x00") != strings.Join(b[k], "\x00") {
			return false
		}
	}
	return true
}

var _ = httptest.NewRequest
