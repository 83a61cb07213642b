package inspect

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// harValidator is the HAR 1.2 validator: npm's har-validator, installed
// by bash .ci/run (npm ci --prefix .ci/har) beside its script.
const harValidator = "../../.ci/har"

// validateHAR runs har-validator on the file. Without it the test is
// skipped (visibly), except under CI, where it fails.
func validateHAR(t *testing.T, file string) {
	t.Helper()
	node, err := exec.LookPath("node")
	_, statErr := os.Stat(filepath.Join(harValidator, "node_modules", "har-validator"))
	if err != nil || statErr != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the HAR validator is not installed (node: %v; %v): bash .ci/run installs it", err, statErr)
		}
		t.Skipf("the HAR validator is not installed: npm ci --prefix .ci/har (node: %v; %v)", err, statErr)
	}
	out, err := exec.Command(node, filepath.Join(harValidator, "validate.js"), file).CombinedOutput()
	if err != nil {
		t.Fatalf("har-validator: %v\n%s", err, out)
	}
}

func TestHARExport(t *testing.T) {
	f := newAPIFixture(t, Config{BodyLimit: 1000}, HandlerConfig{Version: "v9.9.9"})
	start := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	now := start
	f.in.cfg.Now = func() time.Time { return now }

	// A JSON POST with a query, cookies and a redirect.
	r := httptest.NewRequest("POST", "/api/items?q=a%20b&flag&n=1&n=2", nil)
	r.Host = "demo.localhost:8080"
	r.Header = http.Header{"Content-Type": {"application/json"}, "Cookie": {"sid=abc; theme=dark"},
		"X-Forwarded-Proto": {"https"}, "Accept": {"*/*"}}
	e := f.in.Begin(r, "")
	e.RequestBody([]byte(`{"name":"é"}`))
	now = now.Add(20 * time.Millisecond)
	e.Response(303, http.Header{"Location": {"/api/items/1"}, "Set-Cookie": {"sid=def; Path=/; HttpOnly; Secure; Expires=Wed, 21 Oct 2026 07:28:00 GMT", "b=2"}})
	now = now.Add(5 * time.Millisecond)
	e.End(nil)
	post := e.ID()

	// Binary bodies both ways, the response cut at the limit.
	bin := []byte{0, 1, 2, 0xff, 0xfe}
	e = record(f.in, "PUT", "/blob", http.Header{"Content-Type": {"application/octet-stream"}}, bin,
		200, http.Header{"Content-Type": {"image/png"}}, append([]byte{0x89}, make([]byte, 1499)...))
	blob := e.ID()

	// A WebSocket, a replay, a failed request, one still waiting.
	e = f.in.Begin(httptest.NewRequest("GET", "/ws", nil), "")
	e.Response(101, http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}})
	e.SetStream(StreamWebSocket)
	e.AddItem(Item{Kind: "message", Direction: "in", Opcode: "text", Text: "hi", Size: 2})
	e.AddItem(Item{Kind: "message", Direction: "out", Opcode: "binary", Text: "0102", Size: 2})
	e.End(nil)
	ws := e.ID()
	e = f.in.Begin(httptest.NewRequest("GET", "/again", nil), post)
	e.Response(200, nil)
	e.End(nil)
	e = f.in.Begin(httptest.NewRequest("GET", "/broken", nil), "")
	e.End(errFailed)
	f.in.Begin(httptest.NewRequest("GET", "/slow", nil), "")

	resp, body := f.do(t, "GET", "/api/requests.har", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %v", resp.StatusCode, resp.Header)
	}
	file := filepath.Join(t.TempDir(), "sluice.har")
	if err := os.WriteFile(file, body, 0o600); err != nil {
		t.Fatal(err)
	}
	checkHARStructure(t, body)
	validateHAR(t, file)

	var har struct {
		Log struct {
			Version string
			Creator struct{ Name, Version string }
			Entries []harEntry
		}
	}
	if err := json.Unmarshal(body, &har); err != nil {
		t.Fatal(err)
	}
	if har.Log.Version != "1.2" || har.Log.Creator.Name != "sluice" || har.Log.Creator.Version != "v9.9.9" || len(har.Log.Entries) != 6 {
		t.Fatalf("log %+v", har.Log)
	}
	byID := map[string]harEntry{}
	for i, en := range har.Log.Entries {
		byID[en.ID] = en
		if i > 0 && en.StartedDateTime < har.Log.Entries[i-1].StartedDateTime {
			t.Errorf("entries not oldest first")
		}
	}

	p := byID[post]
	if p.StartedDateTime != "2025-03-01T12:00:00.000Z" || p.Time != 25 || p.Timings.Wait != 20 || p.Timings.Receive != 5 || p.Timings.Send != 0 {
		t.Errorf("times %+v %+v", p.StartedDateTime, p.Timings)
	}
	if p.Request.URL != "https://demo.localhost:8080/api/items?q=a%20b&flag&n=1&n=2" || p.Request.Method != "POST" || p.Request.HTTPVersion != "HTTP/1.1" {
		t.Errorf("request %+v", p.Request)
	}
	if q := p.Request.QueryString; len(q) != 4 || q[0] != (harNV{"q", "a b"}) || q[1] != (harNV{"flag", ""}) || q[3] != (harNV{"n", "2"}) {
		t.Errorf("query %+v", q)
	}
	if c := p.Request.Cookies; len(c) != 2 || c[0].Name != "sid" || c[1].Value != "dark" {
		t.Errorf("cookies %+v", c)
	}
	if pd := p.Request.PostData; pd == nil || pd.Text != `{"name":"é"}` || pd.MimeType != "application/json" || pd.Encoding != "" || pd.Comment != "" {
		t.Errorf("postData %+v", pd)
	}
	if rs := p.Response; rs.Status != 303 || rs.StatusText != "See Other" || rs.RedirectURL != "/api/items/1" || len(rs.Cookies) != 2 ||
		!rs.Cookies[0].HTTPOnly || !rs.Cookies[0].Secure || rs.Cookies[0].Path != "/" || rs.Cookies[0].Expires != "2026-10-21T07:28:00.000Z" ||
		rs.Content.MimeType != "x-unknown" || rs.Content.Size != 0 {
		t.Errorf("response %+v", rs)
	}

	b := byID[blob]
	if pd := b.Request.PostData; pd == nil || pd.Encoding != "base64" || pd.Text != base64.StdEncoding.EncodeToString(bin) || b.Request.BodySize != 5 {
		t.Errorf("binary postData %+v", pd)
	}
	if c := b.Response.Content; c.Encoding != "base64" || c.Size != 1500 || b.Response.BodySize != 1500 || !strings.Contains(c.Comment, "1000 of 1500 bytes") {
		t.Errorf("cut content %+v", c)
	} else if raw, _ := base64.StdEncoding.DecodeString(c.Text); len(raw) != 1000 {
		t.Errorf("cut content has %d bytes", len(raw))
	}

	w := byID[ws]
	if w.Response.Status != 101 || len(w.WebSocket) != 2 || w.WebSocket[0].Type != "send" || w.WebSocket[0].Opcode != 1 || w.WebSocket[1].Type != "receive" || w.WebSocket[1].Opcode != 2 {
		t.Errorf("websocket %+v", w)
	}
	for _, en := range har.Log.Entries {
		switch en.Request.URL {
		case "http://example.com/again":
			if !strings.Contains(en.Comment, "replay of request "+post) {
				t.Errorf("replay comment %q", en.Comment)
			}
		case "http://example.com/broken":
			if !strings.Contains(en.Comment, "failed: ") || en.Response.Status != 0 {
				t.Errorf("failed entry %+v", en)
			}
		case "http://example.com/slow":
			if !strings.Contains(en.Comment, "still waiting") {
				t.Errorf("pending entry comment %q", en.Comment)
			}
		}
	}
}

// errFailed is a request's failure in the tests.
var errFailed = &url.Error{Op: "Get", URL: "http://127.0.0.1:1/", Err: os.ErrDeadlineExceeded}

// isoTime is HAR's date format: ISO 8601 with the zone.
var isoTime = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$`)

// checkHARStructure checks, field by field, what HAR 1.2 requires of a
// log (its "required" fields, their types, and the rules the schema does
// not state: time is the sum of the timings, sizes are -1 or more, URLs
// absolute).
func checkHARStructure(t *testing.T, body []byte) {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	errorf := func(path, format string, args ...any) {
		t.Helper()
		t.Errorf(path+": "+format, args...)
	}
	obj := func(path string, v any) map[string]any {
		o, ok := v.(map[string]any)
		if !ok {
			errorf(path, "%#v, want an object", v)
		}
		return o
	}
	str := func(path string, o map[string]any, k string) string {
		s, ok := o[k].(string)
		if !ok {
			errorf(path+"."+k, "%#v, want a string", o[k])
		}
		return s
	}
	num := func(path string, o map[string]any, k string, integer bool, least float64) float64 {
		n, ok := o[k].(float64)
		if !ok || (integer && n != float64(int64(n))) || n < least {
			errorf(path+"."+k, "%#v, want a number (integer %v) of at least %v", o[k], integer, least)
		}
		return n
	}
	arr := func(path string, o map[string]any, k string) []any {
		a, ok := o[k].([]any)
		if !ok {
			errorf(path+"."+k, "%#v, want an array", o[k])
		}
		return a
	}
	nameValues := func(path string, o map[string]any, k string) {
		for i, v := range arr(path, o, k) {
			nv := obj(path+"."+k, v)
			str(path+"."+k+"["+string(rune('0'+i%10))+"]", nv, "name")
			str(path+"."+k+"["+string(rune('0'+i%10))+"]", nv, "value")
		}
	}

	log := obj("log", doc["log"])
	if str("log", log, "version") != "1.2" {
		errorf("log.version", "want 1.2")
	}
	creator := obj("log.creator", log["creator"])
	str("log.creator", creator, "name")
	str("log.creator", creator, "version")
	for i, v := range arr("log", log, "entries") {
		p := "log.entries[" + string(rune('0'+i)) + "]"
		en := obj(p, v)
		if !isoTime.MatchString(str(p, en, "startedDateTime")) {
			errorf(p+".startedDateTime", "%v is not ISO 8601 with a zone", en["startedDateTime"])
		}
		total := num(p, en, "time", false, 0)
		obj(p+".cache", en["cache"])
		tm := obj(p+".timings", en["timings"])
		sum := num(p+".timings", tm, "send", false, 0) + num(p+".timings", tm, "wait", false, 0) + num(p+".timings", tm, "receive", false, 0)
		if d := sum - total; d > 0.001 || d < -0.001 {
			errorf(p, "time %v is not the sum of the timings %v", total, sum)
		}

		rq := obj(p+".request", en["request"])
		str(p+".request", rq, "method")
		if u, err := url.Parse(str(p+".request", rq, "url")); err != nil || !u.IsAbs() {
			errorf(p+".request.url", "%v is not an absolute URL", rq["url"])
		}
		str(p+".request", rq, "httpVersion")
		nameValues(p+".request", rq, "cookies")
		nameValues(p+".request", rq, "headers")
		nameValues(p+".request", rq, "queryString")
		num(p+".request", rq, "headersSize", true, -1)
		num(p+".request", rq, "bodySize", true, -1)
		if pd, ok := rq["postData"]; ok {
			pdo := obj(p+".request.postData", pd)
			str(p+".request.postData", pdo, "mimeType")
			str(p+".request.postData", pdo, "text")
		}

		rs := obj(p+".response", en["response"])
		num(p+".response", rs, "status", true, 0)
		str(p+".response", rs, "statusText")
		str(p+".response", rs, "httpVersion")
		nameValues(p+".response", rs, "cookies")
		nameValues(p+".response", rs, "headers")
		str(p+".response", rs, "redirectURL")
		num(p+".response", rs, "headersSize", true, -1)
		num(p+".response", rs, "bodySize", true, -1)
		c := obj(p+".response.content", rs["content"])
		num(p+".response.content", c, "size", true, 0)
		str(p+".response.content", c, "mimeType")
		if enc, ok := c["encoding"]; ok && enc != "base64" {
			errorf(p+".response.content.encoding", "%v", enc)
		}
		for k := range en {
			switch k {
			case "pageref", "startedDateTime", "time", "request", "response", "cache", "timings", "serverIPAddress", "connection", "comment":
			default:
				if !strings.HasPrefix(k, "_") {
					errorf(p, "field %q is not HAR's and does not start with _", k)
				}
			}
		}
	}
}
