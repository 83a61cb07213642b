package edge_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/edge"
)

// Issue 11, finding 6: one address cannot hold more than
// MaxPendingHandshakesPerIP unauthenticated agent connections; the next is
// answered 429 and counted, and once the pending ones are gone the address
// is served again. The refusals are logged within a rate, not once each.
func TestPendingHandshakesPerIP(t *testing.T) {
	const limit = 4
	e := startEdge(t, func(c *edge.Config) {
		c.MaxPendingHandshakesPerIP = limit
		c.RegisterTimeout = 10 * time.Minute // they stay pending
	})
	d := websocket.Dialer{HandshakeTimeout: time.Minute}
	var pending []*websocket.Conn
	for range limit {
		ws, _, err := d.Dial("ws://"+e.addr+"/agent", nil)
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, ws)
	}
	e.waitMetric(t, "sluice_agent_handshakes_pending", limit, time.Minute)
	for range 20 {
		_, resp, err := d.Dial("ws://"+e.addr+"/agent", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("handshake past the limit: %v, %v", err, resp)
		}
	}
	page := e.metrics(t)
	if got := metricValue(page, `sluice_agent_registrations_total{result="too_many_pending"}`); got != 20 {
		t.Errorf("too_many_pending = %v, want 20", got)
	}
	if n := strings.Count(e.logs.String(), "too many pending"); n == 0 || n > 5 {
		t.Errorf("%d log lines for 20 refusals, want 1 to 5", n)
	}
	for _, ws := range pending {
		ws.Close()
	}
	e.waitMetric(t, "sluice_agent_handshakes_pending", 0, time.Minute)
	e.register(t, "after", "T")
}
