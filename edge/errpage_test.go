package edge_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/errpage"
)

// Finding 11 of issue 11: an internal error of the tunnel (here an agent
// that ends a response before its head, with its resolver's error as the
// reason) is not shown to the visitor: the page has a generic message and
// a request id, and the edge's log has the detail under that id.
func TestTunnelErrorShowsNoInternals(t *testing.T) {
	t.Parallel()
	e := startEdge(t, nil)
	a := e.register(t, "alpha", "T")
	const secret = "dial tcp: lookup db.internal on 10.0.0.2:53: no such host"
	for _, accept := range []string{"application/json", "text/html", ""} {
		req := e.newRequest(t, "GET", "alpha.localhost", "/x", nil)
		req.Header.Set("Accept", accept)
		c := e.goDo(req)
		r := a.expectRequest(t)
		a.sendJSON(t, map[string]any{"type": "http_response_end", "request_id": r.ID, "error": secret})
		res := await(t, c, patience)
		if res.err != nil || res.resp.StatusCode != 502 {
			t.Fatalf("Accept %q: %v, want 502", accept, res)
		}
		body := string(res.body)
		if strings.Contains(body, "10.0.0.2") || strings.Contains(body, "lookup") || strings.Contains(body, "dial tcp") {
			t.Errorf("Accept %q: the visitor sees the internal error: %s", accept, body)
		}
		id := res.resp.Header.Get(errpage.IDHeader)
		if len(id) != 16 || !strings.Contains(body, id) {
			t.Errorf("Accept %q: request id %q (%s) not in the page: %s", accept, errpage.IDHeader, id, body)
		}
		if accept == "application/json" {
			var eb struct {
				Error struct {
					RequestID string `json:"request_id"`
				} `json:"error"`
			}
			if err := json.Unmarshal(res.body, &eb); err != nil || eb.Error.RequestID != id {
				t.Errorf("JSON request_id %q, want %q (%v)", eb.Error.RequestID, id, err)
			}
		}
		found := false
		for line := range strings.SplitSeq(e.logs.String(), "\n") {
			if strings.Contains(line, "request_id="+id) && strings.Contains(line, "10.0.0.2:53") {
				found = true
			}
		}
		if !found {
			t.Errorf("Accept %q: no log line with request_id=%s and the detail:\n%s", accept, id, e.logs.String())
		}
	}
}
