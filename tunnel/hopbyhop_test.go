package tunnel

import (
	"net/http"
	"reflect"
	"testing"
)

func TestRemoveHopByHop(t *testing.T) {
	h := http.Header{
		"Connection":        {"keep-alive, X-Private", " x-other "},
		"Keep-Alive":        {"timeout=5"},
		"Proxy-Connection":  {"keep-alive"},
		"Te":                {"trailers"},
		"Trailer":           {"X-Sum"},
		"Transfer-Encoding": {"chunked"},
		"Upgrade":           {"websocket"},
		"X-Private":         {"1"},
		"X-Other":           {"2"},
		"X-Kept":            {"3"},
		"Set-Cookie":        {"a=1", "b=2"},
	}
	RemoveHopByHop(h)
	want := http.Header{"X-Kept": {"3"}, "Set-Cookie": {"a=1", "b=2"}}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("after RemoveHopByHop: %v, want %v", h, want)
	}
}

// RemoveHopByHop deletes hopHeaders' names from the map as they are, so
// each must be the canonical form a header map holds.
func TestHopHeadersCanonical(t *testing.T) {
	for _, name := range append(append([]string{}, hopHeaders...), ForwardingHeaders...) {
		if c := http.CanonicalHeaderKey(name); c != name {
			t.Errorf("%q is not canonical (%q): a map holding the field keeps it", name, c)
		}
	}
}
