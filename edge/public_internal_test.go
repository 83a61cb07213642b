package edge

import (
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMarkStreamed: X-Accel-Buffering: no on a response without a length
// or of a streamed media type (whatever its case and parameters), never
// on a bodiless one, and an upstream's own value kept.
func TestMarkStreamed(t *testing.T) {
	for _, tc := range []struct {
		name, method, ctype, own string
		status                   int
		length                   int64
		want                     string
	}{
		{"sse", "GET", "text/event-stream", "", 200, 100, "no"},
		{"sse with parameters, any case", "GET", " Text/Event-Stream ; charset=utf-8", "", 200, 100, "no"},
		{"ndjson", "GET", "application/x-ndjson", "", 200, 5, "no"},
		{"no length", "GET", "application/json", "", 200, -1, "no"},
		{"known length", "GET", "application/json", "", 200, 10, ""},
		{"prefix only", "GET", "text/event-streams", "", 200, 10, ""},
		{"head", "HEAD", "text/event-stream", "", 200, -1, ""},
		{"no content", "GET", "text/event-stream", "", 204, -1, ""},
		{"not modified", "GET", "text/event-stream", "", 304, -1, ""},
		{"informational", "GET", "text/event-stream", "", 103, -1, ""},
		{"upstream's own", "GET", "text/event-stream", "yes", 200, -1, "yes"},
	} {
		resp := &http.Response{StatusCode: tc.status, ContentLength: tc.length, Header: http.Header{},
			Request: &http.Request{Method: tc.method}}
		resp.Header.Set("Content-Type", tc.ctype)
		if tc.own != "" {
			resp.Header.Set("X-Accel-Buffering", tc.own)
		}
		if err := markStreamed(resp); err != nil {
			t.Fatal(err)
		}
		if got := resp.Header.Get("X-Accel-Buffering"); got != tc.want {
			t.Errorf("%s: X-Accel-Buffering %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestSplitHostPort: a Host field with or without a port, IPv6 literals,
// and no allocation for the common Host without a port.
func TestSplitHostPort(t *testing.T) {
	for _, tc := range []struct {
		in, host, port string
		ok             bool
	}{
		{"demo.example.com", "demo.example.com", "", false},
		{"demo.example.com:8080", "demo.example.com", "8080", true},
		{"[::1]:443", "::1", "443", true},
		{"[::1]", "[::1]", "", false},
		{"a:b:c", "a:b:c", "", false},
		{"", "", "", false},
	} {
		host, port, ok := splitHostPort(tc.in)
		if host != tc.host || port != tc.port || ok != tc.ok {
			t.Errorf("splitHostPort(%q) = %q, %q, %v; want %q, %q, %v", tc.in, host, port, ok, tc.host, tc.port, tc.ok)
		}
	}
	if n := testing.AllocsPerRun(100, func() { splitHostPort("demo.example.com") }); n != 0 {
		t.Errorf("%v allocations for a Host without a port", n)
	}
}

// TestRequestCount: requests{code} counted through the per-code cache
// and around it (codes outside 100-599), only the codes counted listed,
// and a cached code counted without allocating.
func TestRequestCount(t *testing.T) {
	m := newMetrics()
	for _, code := range []int{200, 200, 404, 42, 999, 999} {
		m.requestCount(code).Inc()
	}
	for code, want := range map[string]float64{"200": 2, "404": 1, "42": 1, "999": 2} {
		if got := testutil.ToFloat64(m.requests.WithLabelValues(code)); got != want {
			t.Errorf("requests{code=%q} = %v, want %v", code, got, want)
		}
	}
	if n := testutil.CollectAndCount(m.requests); n != 4 {
		t.Errorf("%d series, want 4 (the codes counted)", n)
	}
	if n := testing.AllocsPerRun(100, func() { m.requestCount(200).Inc() }); n != 0 {
		t.Errorf("counting a cached code allocates %v times, want 0", n)
	}
}
