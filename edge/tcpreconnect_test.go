package edge_test

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice/edge"
)

// An agent that reconnects while the edge still holds its old session
// (same name and token, before the pong timeout) takes its port over: the
// reconnect is granted the port it asks for, the old session is retired,
// and the port's new connections go to the new session. Another tunnel
// asking for the port is still refused.
func TestTCPReconnectKeepsPort(t *testing.T) {
	t.Parallel()
	rng := freeRange(t, 1)
	e := startEdge(t, func(c *edge.Config) { c.TCPPorts, c.TCPListenHost = rng, "127.0.0.1" })
	want := "tcp://localhost:" + strconv.Itoa(rng.Low)
	first, f := registerTCP(t, e, "db", rng.Low, "")
	if f.typ() != "registered" || f.str("public_url") != want {
		t.Fatalf("first registration: %s, want public_url %s", f.raw, want)
	}
	second, f := registerTCP(t, e, "db", rng.Low, "")
	if f.typ() != "registered" || f.str("public_url") != want {
		t.Fatalf("the reconnect of the same tunnel was not given its port: %s", f.raw)
	}
	expectRetired(t, first, "tunnel_replaced")
	if _, f := registerTCP(t, e, "other", rng.Low, ""); f.typ() != "error" || f.str("code") != "port_unavailable" {
		t.Fatalf("a port held by another tunnel: %s", f.raw)
	}
	// The port is still open after the old session ended, and its
	// connections go to the new session.
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(rng.Low))
	if err != nil {
		t.Fatalf("the port no longer accepts connections: %v", err)
	}
	defer c.Close()
	if f := second.read(t, waitFor(5*time.Second)); f.typ() != "tcp_connect" {
		t.Fatalf("the new session got %s, want tcp_connect", f.raw)
	}
	// The new session ends: the port goes back to the range.
	second.ws.Close()
	deadline := time.Now().Add(waitFor(10 * time.Second))
	for {
		b, f := registerTCP(t, e, "other", rng.Low, "")
		b.ws.Close()
		if f.typ() == "registered" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the port was not given back after its last session ended: %s", f.raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
