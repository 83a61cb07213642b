package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"strconv"
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

// freeUDPPort returns a UDP port free a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port
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
	st, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := edge.DefaultConfig()
	cfg.Store, cfg.AdminTokens = st, []string{"A"}
	cfg.UDPPorts, cfg.TCPListenHost = anyPort, "127.0.0.1"
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
	status := &statusLog{}
	created := false
	port := forwardOnFreePort(t, status, "udp", local, freeUDPPort, func(port int) {
		if created {
			if _, err := admin.UpdateTunnel(ctx, "dns", api.TunnelRequest{RemotePort: ptr(port)}); err != nil {
				t.Fatal(err)
			}
			return
		}
		created = true
		if _, err := admin.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("dns"), Type: ptr("udp"), Upstream: ptr("udp://" + local),
			RemotePort: ptr(port), AgentToken: ptr(secret)}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(runManaged(t, ctx, ManagedConfig{Edge: "http://" + addr, Token: secret, Status: status.add}))
	})
	datagramsThrough(t, port)

	port2 := forwardOnFreePort(t, status, "udp", local, freeUDPPort, func(port int) {
		if _, err := admin.UpdateTunnel(ctx, "dns", api.TunnelRequest{RemotePort: ptr(port)}); err != nil {
			t.Fatal(err)
		}
	})
	datagramsThrough(t, port2)
}
