package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// metricValue returns the value of series (name and labels as printed) on
// a /metrics page, or -1.
func metricValue(page, series string) float64 {
	for _, line := range strings.Split(page, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// Issue 11, finding 12: /metrics counts the answers the edge writes itself
// (404 no such tunnel, 502 agent offline) by status, and upgrades (101)
// with their bytes; the landing page shows the edge's real public scheme
// and port.
func TestEdgeCountsItsOwnAnswers(t *testing.T) {
	t.Parallel()
	up := newTestUpstream(t)
	up.mux.HandleFunc("/ws", wsEcho(make(chan int, 4)))
	e := startEdge(t, "T")
	a := startAgent(t, e, "auto", "counted", "T", up.port)
	c := tunnelClient(t, e.addr)
	get := func(url string) *http.Response {
		t.Helper()
		resp, _, err := tryDo(c, "GET", url, nil, nil, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for range 3 {
		if resp := get(e.publicURL("nobody") + "/"); resp.StatusCode != 404 {
			t.Fatalf("unknown tunnel: %d", resp.StatusCode)
		}
	}

	// A WebSocket through the tunnel: 101, and its bytes.
	d := websocket.Dialer{
		NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, network, e.addr)
		},
		HandshakeTimeout: time.Minute,
	}
	ws, _, err := d.Dial(fmt.Sprintf("ws://counted.localhost:%d/ws", e.port), nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := strings.Repeat("x", 10000)
	if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	if _, got, err := ws.ReadMessage(); err != nil || string(got) != msg {
		t.Fatalf("echo: %d bytes, %v", len(got), err)
	}
	ws.Close()

	a.kill()
	deadline := time.Now().Add(time.Minute)
	for get(e.publicURL("counted")+"/").StatusCode != 502 {
		if time.Now().After(deadline) {
			t.Fatal("the tunnel did not go offline")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The upgrade is counted when its handler returns, after the tunnel
	// closed it: wait for that.
	var page string
	deadline = time.Now().Add(time.Minute)
	for {
		resp, body, err := tryDo(c, "GET", "http://"+e.addr+"/metrics", nil, nil, time.Minute)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("/metrics: %v %v", resp, err)
		}
		page = string(body)
		if metricValue(page, "sluice_upgrades_total") == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for series, want := range map[string]float64{
		`sluice_requests_total{code="404"}`: 3,
		`sluice_requests_total{code="101"}`: 1,
		`sluice_upgrades_total`:             1,
	} {
		if got := metricValue(page, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if got := metricValue(page, `sluice_requests_total{code="502"}`); got < 1 {
		t.Errorf(`sluice_requests_total{code="502"} = %v, want at least 1`, got)
	}
	for _, dir := range []string{"in", "out"} {
		if got := metricValue(page, `sluice_upgraded_bytes_total{direction="`+dir+`"}`); got < 10000 {
			t.Errorf("upgraded bytes %s = %v, want at least the 10,000 of the message", dir, got)
		}
	}

	resp, body, err := tryDo(c, "GET", "http://"+e.addr+"/", nil, nil, time.Minute)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("landing page: %v %v", resp, err)
	}
	if want := fmt.Sprintf("http://NAME.localhost:%d", e.port); !strings.Contains(string(body), want) {
		t.Errorf("the landing page does not show %s: %s", want, body)
	}
}
