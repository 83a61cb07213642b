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

// registerUDP registers a UDP tunnel as a plain v1 agent (extra: more
// fields of register) and returns it with its public address.
func registerUDP(t *testing.T, e *testEdge, name, extra string) (*rawAgent, *net.UDPAddr) {
	t.Helper()
	a := e.dial(t)
	a.send(t, `{"type":"register","tunnel_id":"`+name+`","agent_token":"T","tunnel_type":"udp"`+extra+`}`)
	f := a.read(t, 5*time.Second)
	if f.typ() != "registered" {
		t.Fatalf("register a UDP tunnel: %s", f.raw)
	}
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(f.str("public_url"), "udp://"))
	p, _ := strconv.Atoi(port)
	return a, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p}
}

// A UDP session lives while datagrams flow, either way, and ends
// --udp-idle-timeout after the last one: the agent gets the edge's
// tcp_close for it, no earlier than that long after the last datagram,
// and the next datagram of the address opens a new session. (Not under
// synctest: the public port is a real UDP socket. The one bound asserted
// on the clock is a lower one, which load cannot break; the session must
// outlive the timeout twice over while datagrams flow every 20 ms, first
// from the visitor alone, then from the agent alone.)
func TestUDPIdleTimeout(t *testing.T) {
	t.Parallel()
	const idle = time.Second
	rng := freeRange(t, 1)
	e := startEdge(t, func(c *edge.Config) { c.TCPPorts, c.TCPListenHost, c.UDPIdleTimeout = rng, "127.0.0.1", idle })
	a, public := registerUDP(t, e, "dns", "")
	c, err := net.DialUDP("udp", nil, public)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id := ""
	start := time.Now()
	for time.Since(start) < 2*idle { // visitor -> agent
		if _, err := c.Write([]byte("q")); err != nil {
			t.Fatal(err)
		}
		f := a.read(t, waitFor(10*time.Second))
		if f.typ() != "udp_data" || id != "" && f.str("connection_id") != id {
			t.Fatalf("%v after the first datagram, while datagrams from the visitor flowed every 20 ms, the agent got %s (the session is %s)", time.Since(start), f.raw, id)
		}
		id = f.str("connection_id")
		time.Sleep(20 * time.Millisecond)
	}
	buf := make([]byte, 100)
	var last time.Time
	for start := time.Now(); time.Since(start) < 2*idle; { // agent -> visitor
		last = time.Now()
		a.send(t, `{"type":"udp_data","connection_id":"`+id+`","data_b64":"`+base64.StdEncoding.EncodeToString([]byte("a"))+`"}`)
		c.SetReadDeadline(time.Now().Add(waitFor(10 * time.Second)))
		if n, err := c.Read(buf); err != nil || string(buf[:n]) != "a" {
			t.Fatalf("%v into the agent's datagrams (every 20 ms), the visitor read %q, %v", time.Since(start), buf[:n], err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	f := a.read(t, waitFor(10*time.Second))
	closed := time.Now()
	if f.typ() != "tcp_close" || f.str("connection_id") != id {
		t.Fatalf("after the datagrams, the agent got %s, want the tcp_close of session %s", f.raw, id)
	}
	if gap := closed.Sub(last); gap < idle {
		t.Fatalf("the session ended %v after the last datagram, before the idle timeout (%v)", gap, idle)
	}
	e.waitMetric(t, `sluice_open_connections{type="udp"}`, 0, 10*time.Second)
	// The address's next datagram opens a new session.
	if _, err := c.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	if f := a.read(t, waitFor(10*time.Second)); f.typ() != "udp_data" || f.str("connection_id") == id {
		t.Fatalf("after the idle end, a datagram reached the agent as %s (the old session was %s)", f.raw, id)
	}
}

// The UDP metrics, read from /metrics after real datagrams: a session
// counted once as ok and as open while it lasts, one refused by the
// tunnel's allowlist, and the bytes each way.
func TestUDPMetrics(t *testing.T) {
	t.Parallel()
	rng := freeRange(t, 1)
	e := startEdge(t, func(c *edge.Config) { c.TCPPorts, c.TCPListenHost = rng, "127.0.0.1" })
	a, public := registerUDP(t, e, "dns", `,"features":["access"],"allow_cidrs":["127.0.0.2/32"]`)
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)}, public)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	in, out := 0, 0
	buf := make([]byte, 5000)
	id := ""
	for _, size := range []int{10, 100, 1000} {
		q := strings.Repeat("q", size)
		if _, err := c.Write([]byte(q)); err != nil {
			t.Fatal(err)
		}
		in += size
		f := a.read(t, waitFor(10*time.Second))
		if f.typ() != "udp_data" {
			t.Fatalf("the agent got %s", f.raw)
		}
		id = f.str("connection_id")
		a.send(t, `{"type":"udp_data","connection_id":"`+id+`","data_b64":"`+base64.StdEncoding.EncodeToString([]byte(q+q))+`"}`)
		out += 2 * size
		c.SetReadDeadline(time.Now().Add(waitFor(10 * time.Second)))
		if n, err := c.Read(buf); err != nil || n != 2*size {
			t.Fatalf("reply of %d bytes, %v; want %d", n, err, 2*size)
		}
	}
	e.waitMetric(t, `sluice_connection_bytes_total{direction="in",type="udp"}`, float64(in), 10*time.Second)
	e.waitMetric(t, `sluice_connection_bytes_total{direction="out",type="udp"}`, float64(out), 10*time.Second)
	page := e.metrics(t)
	if got := metricValue(page, `sluice_connections_total{result="ok",type="udp"}`); got != 1 {
		t.Errorf(`sluice_connections_total{result="ok",type="udp"} = %v, want 1 (one address)`, got)
	}
	if got := metricValue(page, `sluice_open_connections{type="udp"}`); got != 1 {
		t.Errorf(`sluice_open_connections{type="udp"} = %v during the session, want 1`, got)
	}
	// An address the allowlist does not let in.
	other, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 3)}, public)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Write([]byte("refused")); err != nil {
		t.Fatal(err)
	}
	e.waitMetric(t, `sluice_connections_total{result="not_allowed",type="udp"}`, 1, 10*time.Second)
	// The agent ends the session: it is no longer open.
	a.send(t, `{"type":"tcp_close","connection_id":"`+id+`","reason":"idle"}`)
	e.waitMetric(t, `sluice_open_connections{type="udp"}`, 0, 10*time.Second)
	page = e.metrics(t)
	for series, want := range map[string]float64{
		`sluice_connection_bytes_total{direction="in",type="udp"}`:  float64(in),
		`sluice_connection_bytes_total{direction="out",type="udp"}`: float64(out),
		`sluice_connections_total{result="ok",type="udp"}`:          1,
		`sluice_connection_bytes_total{direction="in",type="tcp"}`:  0,
	} {
		if got := metricValue(page, series); got != want {
			t.Errorf("%s = %v at the end, want %v", series, got, want)
		}
	}
}

// A reply too large for the visitor's address family (above 65,507 bytes
// toward IPv4) is dropped and counted as oversized_datagram, never as a
// write failure, never truncated; the session goes on.
func TestUDPOversizedReply(t *testing.T) {
	t.Parallel()
	rng := freeRange(t, 1)
	e := startEdge(t, func(c *edge.Config) { c.TCPPorts, c.TCPListenHost = rng, "127.0.0.1" })
	a, public := registerUDP(t, e, "dns", "")
	c, err := net.DialUDP("udp", nil, public)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	f := a.read(t, waitFor(10*time.Second))
	if f.typ() != "udp_data" {
		t.Fatalf("the agent got %s", f.raw)
	}
	id := f.str("connection_id")
	for _, b := range [][]byte{make([]byte, 65520), []byte("fits")} {
		a.send(t, `{"type":"udp_data","connection_id":"`+id+`","data_b64":"`+base64.StdEncoding.EncodeToString(b)+`"}`)
	}
	buf := make([]byte, 65535)
	c.SetReadDeadline(time.Now().Add(waitFor(10 * time.Second)))
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "fits" {
		t.Fatalf("the visitor read %d bytes, %v; want the reply that fits", n, err)
	}
	e.waitMetric(t, frameErrors("oversized_datagram"), 1, 10*time.Second)
	if got := metricValue(e.metrics(t), frameErrors("udp_write_failed")); got != 0 {
		t.Errorf("%s = %v, want 0", frameErrors("udp_write_failed"), got)
	}
}
