package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/store"
)

// echoUDP is a local UDP server that sends each datagram back to its
// sender; it returns its HOST:PORT.
func echoUDP(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], addr)
		}
	}()
	return pc.LocalAddr().String()
}

// freeUDPPorts returns two UDP ports free a moment ago, lower first.
func freeUDPPorts(t *testing.T) (int, int) {
	t.Helper()
	var ports []int
	for range 2 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		ports = append(ports, pc.LocalAddr().(*net.UDPAddr).Port)
	}
	return min(ports[0], ports[1]), max(ports[0], ports[1])
}

// datagramsThrough sends datagrams of a few sizes to the public UDP port,
// one at a time, and checks that each comes back whole.
func datagramsThrough(t *testing.T, port int) {
	t.Helper()
	c, err := net.Dial("udp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 65535)
	for _, size := range []int{1, 512, 1400, 9000, 60000} {
		sent := make([]byte, size)
		rand.Read(sent)
		if _, err := c.Write(sent); err != nil {
			t.Fatalf("send %d bytes: %v", size, err)
		}
		c.SetReadDeadline(time.Now().Add(patience))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("the reply to a %d-byte datagram: %v", size, err)
		}
		if !bytes.Equal(buf[:n], sent) {
			t.Fatalf("a %d-byte datagram came back as %d other bytes", size, n)
		}
	}
}

// A managed agent serves a stored tunnel of type udp: it registers it as
// a UDP tunnel on the stored port, datagrams reach the local server and
// its replies come back. When the stored port changes, it registers again
// on the new one.
func TestManagedUDPTunnel(t *testing.T) {
	t.Parallel()
	port, port2 := freeUDPPorts(t)

	st, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := edge.DefaultConfig()
	cfg.Store, cfg.AdminTokens = st, []string{"A"}
	cfg.UDPPorts, cfg.TCPListenHost = edge.PortRange{Low: port, High: port2}, "127.0.0.1"
	addr := serveEdge(t, cfg)
	admin, err := api.NewClient("http://"+addr, "A", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, secret, err := st.CreateToken(ctx, store.KindAgent, "owner")
	if err != nil {
		t.Fatal(err)
	}
	local := echoUDP(t)
	if _, err := admin.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("dns"), Type: ptr("udp"), Upstream: ptr("udp://" + local),
		RemotePort: ptr(port), AgentToken: ptr(secret)}); err != nil {
		t.Fatal(err)
	}
	status := &statusLog{}
	defer runManaged(t, ctx, ManagedConfig{Edge: "http://" + addr, Token: secret, Status: status.add})()
	waitStatus(t, status, "Forwarding udp://localhost:"+strconv.Itoa(port)+" -> "+local)
	datagramsThrough(t, port)

	if _, err := admin.UpdateTunnel(ctx, "dns", api.TunnelRequest{RemotePort: ptr(port2)}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, status, "Forwarding udp://localhost:"+strconv.Itoa(port2)+" -> "+local)
	datagramsThrough(t, port2)
}

// Config.UDPIdleTimeout ends the agent's UDP session (its local socket)
// after that long without a datagram, well before the edge's own timeout
// (a minute): the session's console line, printed when it ends, comes.
func TestUDPIdleTimeoutAtAgent(t *testing.T) {
	t.Parallel()
	port, _ := freeUDPPorts(t)
	cfg := edge.DefaultConfig()
	cfg.Tokens, cfg.UDPPorts, cfg.TCPListenHost = []string{"T"}, edge.PortRange{Low: port, High: port}, "127.0.0.1"
	addr := serveEdge(t, cfg)
	local := echoUDP(t)
	var console syncBuffer
	connected := make(chan string, 4)
	a, err := New(Config{Edge: "http://" + addr, Token: "T", Name: "dns", Type: "udp", LocalAddr: local, UDPIdleTimeout: 200 * time.Millisecond,
		Console: &console, OnConnect: func(u, _ string) { connected <- u }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	select {
	case <-connected:
	case <-time.After(patience):
		t.Fatal("the agent did not register")
	}
	c, err := net.Dial("udp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(patience))
	buf := make([]byte, 10)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "q" {
		t.Fatalf("reply %q, %v", buf[:n], err)
	}
	const ceiling = 30 * time.Second // the edge would end it after 60 s
	deadline := time.Now().Add(ceiling)
	for !strings.Contains(console.String(), "UDP") {
		if time.Now().After(deadline) {
			t.Fatalf("no session line within %v: the agent's idle timeout did not end the session", ceiling)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if line := console.String(); !containsAll(line, "in 1 datagrams", "out 1 datagrams") || strings.Contains(line, "failed") {
		t.Fatalf("session line %q", line)
	}
}
