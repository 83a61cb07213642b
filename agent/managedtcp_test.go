package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/store"
)

// echoTCP is a local TCP server that sends back what it reads, then
// half-closes; it returns its HOST:PORT.
func echoTCP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String()
}

// freePorts returns two ports free a moment ago, lower first.
func freePorts(t *testing.T) (int, int) {
	t.Helper()
	var ports []int
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return min(ports[0], ports[1]), max(ports[0], ports[1])
}

// echoThrough sends 1 MiB through the public port and checks that the
// same bytes come back.
func echoThrough(t *testing.T, port int) {
	t.Helper()
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(patience))
	sent := make([]byte, 1<<20)
	rand.Read(sent)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(sent)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read through the tunnel: %v (after %d bytes)", err, len(got))
	}
	if err := <-werr; err != nil {
		t.Fatalf("write through the tunnel: %v", err)
	}
	if !bytes.Equal(got, sent) {
		t.Fatalf("got %d bytes back, not the %d sent", len(got), len(sent))
	}
}

// waitStatus waits for a status line containing want.
func waitStatus(t *testing.T, status *statusLog, want string) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !strings.Contains(status.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q line within %v; status:\n%s", want, patience, status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A managed agent serves a stored tunnel of type tcp: it registers it as
// a TCP tunnel on the stored port, and bytes go through both ways. When
// the stored port changes, it registers again on the new one.
func TestManagedTCPTunnel(t *testing.T) {
	t.Parallel()
	port, port2 := freePorts(t)

	st, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := edge.DefaultConfig()
	cfg.Store, cfg.AdminTokens = st, []string{"A"}
	cfg.TCPPorts, cfg.TCPListenHost = edge.PortRange{Low: port, High: port2}, "127.0.0.1"
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
	local := echoTCP(t)
	if _, err := admin.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("db"), Type: ptr("tcp"), Upstream: ptr("tcp://" + local),
		RemotePort: ptr(port), AgentToken: ptr(secret)}); err != nil {
		t.Fatal(err)
	}
	status := &statusLog{}
	defer runManaged(t, ctx, ManagedConfig{Edge: "http://" + addr, Token: secret, Status: status.add})()
	waitStatus(t, status, "Forwarding tcp://localhost:"+strconv.Itoa(port)+" -> "+local)
	echoThrough(t, port)

	if _, err := admin.UpdateTunnel(ctx, "db", api.TunnelRequest{RemotePort: ptr(port2)}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, status, "Forwarding tcp://localhost:"+strconv.Itoa(port2)+" -> "+local)
	echoThrough(t, port2)
}
