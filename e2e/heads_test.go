package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestMaxHeaderBytes: a request head over the edge's limit gets 431 (64
// KiB by default); --max-header-bytes raises it, and a 900 KiB head then
// reaches the local server through both protocols.
func TestMaxHeaderBytes(t *testing.T) {
	t.Parallel()
	up := newTestUpstream(t)
	up.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d", len(r.Header.Get("X-Big")))
	})
	big := strings.Repeat("b", 900<<10)

	def := startEdge(t, "T")
	c := tunnelClient(t, def.addr)
	resp, _ := do(t, c, "GET", def.publicURL("any")+"/", nil, http.Header{"X-Big": {strings.Repeat("b", 100<<10)}})
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a 100 KiB head at a default edge: %d, want 431", resp.StatusCode)
	}

	e := startEdge(t, "T", "--max-header-bytes", "1MiB")
	c = tunnelClient(t, e.addr)
	for _, proto := range protocols {
		name := "heads-" + proto
		startAgent(t, e, proto, name, "T", up.port)
		resp, body := do(t, c, "GET", e.publicURL(name)+"/", nil, http.Header{"X-Big": {big}})
		if resp.StatusCode != 200 || string(body) != fmt.Sprint(len(big)) {
			t.Errorf("%s: a 900 KiB head with --max-header-bytes 1MiB: %d %q, want 200 %d", proto, resp.StatusCode, body, len(big))
		}
	}
}
