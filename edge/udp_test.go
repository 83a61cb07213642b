package edge_test

import (
	"encoding/base64"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/edge"
)

// TestUDPPlainJettyAgent: an agent that speaks only Jetty's frames
// registers a UDP tunnel; datagrams from two client addresses reach it as
// udp_data under two connection_ids with their remote_addr, and its
// replies go back to each address; its tcp_close ends a session.
func TestUDPPlainJettyAgent(t *testing.T) {
	t.Parallel()
	rng := freeRange(t, 1)
	e := startEdge(t, func(c *edge.Config) { c.TCPPorts, c.TCPListenHost = rng, "127.0.0.1" })
	a := e.dial(t)
	a.send(t, `{"type":"register","tunnel_id":"dns","agent_token":"T","tunnel_type":"udp"}`)
	f := a.read(t, 5*time.Second)
	want := "udp://localhost:" + strconv.Itoa(rng.Low)
	if f.typ() != "registered" || f.str("public_url") != want {
		t.Fatalf("registered %s, want public_url %s", f.raw, want)
	}
	public := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: rng.Low}
	clients := map[string]*net.UDPConn{}
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)}, public)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients[ip] = c
		if _, err := c.Write([]byte("q from " + ip)); err != nil {
			t.Fatal(err)
		}
	}
	ids := map[string]string{}
	for range 2 {
		d := a.read(t, 10*time.Second)
		b, _ := base64.StdEncoding.DecodeString(d.str("data_b64"))
		ip, _, _ := net.SplitHostPort(d.str("remote_addr"))
		if d.typ() != "udp_data" || d.str("connection_id") == "" || string(b) != "q from "+ip {
			t.Fatalf("a datagram reached the agent as %s", d.raw)
		}
		ids[ip] = d.str("connection_id")
		a.send(t, `{"type":"udp_data","connection_id":"`+ids[ip]+`","data_b64":"`+base64.StdEncoding.EncodeToString([]byte("a for "+ip))+`"}`)
	}
	if len(ids) != 2 || ids["127.0.0.2"] == ids["127.0.0.3"] {
		t.Fatalf("sessions %v, want one per client address", ids)
	}
	for ip, c := range clients {
		c.SetReadDeadline(time.Now().Add(waitFor(10 * time.Second)))
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != "a for "+ip {
			t.Fatalf("%s read %q, %v", ip, buf[:n], err)
		}
	}
	// The agent ends one session: a datagram from that address then
	// opens a new one. (One sent while the old session ends may be lost,
	// as UDP may lose it: the client sends until one arrives.)
	a.send(t, `{"type":"tcp_close","connection_id":"`+ids["127.0.0.2"]+`","reason":"idle"}`)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			clients["127.0.0.2"].Write([]byte("again"))
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	for { // datagrams may reach the old session before the edge reads tcp_close
		d := a.read(t, 10*time.Second)
		if d.typ() != "udp_data" || !strings.HasPrefix(d.str("remote_addr"), "127.0.0.2:") {
			t.Fatalf("after the session's end, a datagram reached the agent as %s", d.raw)
		}
		if d.str("connection_id") != ids["127.0.0.2"] {
			break
		}
	}
}

// TestUDPNoPorts: --udp-ports none refuses UDP tunnels while TCP ones
// still get ports.
func TestUDPNoPorts(t *testing.T) {
	t.Parallel()
	rng := freeRange(t, 1)
	e := startEdge(t, func(c *edge.Config) { c.TCPPorts, c.TCPListenHost, c.NoUDP = rng, "127.0.0.1", true })
	a := e.dial(t)
	a.send(t, `{"type":"register","tunnel_id":"dns","agent_token":"T","tunnel_type":"udp"}`)
	if f := a.read(t, 5*time.Second); f.typ() != "error" || f.str("code") != "no_udp_ports" || !strings.Contains(f.str("message"), "--udp-ports") {
		t.Fatalf("a UDP tunnel at an edge with --udp-ports none: %s", f.raw)
	}
}
