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

// freeTCPPort returns a TCP port free a moment ago.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// anyPort is an edge's port range that takes whatever port a test found
// free.
var anyPort = edge.PortRange{Low: 1024, High: 65535}

// forwardOnFreePort stores a free port for a tunnel (store) and waits until
// the managed agent forwards it (kind "tcp" or "udp", to local). A port
// something else took between the probe and the edge's bind (another test,
// or a suite running beside this one) is refused by the edge: then another
// is tried, up to five in all. It returns the port forwarded.
func forwardOnFreePort(t *testing.T, status *statusLog, kind, local string, free func(*testing.T) int, store func(port int)) int {
	t.Helper()
	for attempt := 1; ; attempt++ {
		port := free(t)
		store(port)
		p := strconv.Itoa(port)
		forwarding := "Forwarding " + kind + "://localhost:" + p + " -> " + local
		taken := " port " + p + " is in use"
		deadline := time.NewTimer(patience)
		for {
			changed := status.next()
			s := status.String()
			if strings.Contains(s, forwarding) {
				deadline.Stop()
				return port
			}
			if strings.Contains(s, taken) {
				break
			}
			select {
			case <-changed:
			case <-deadline.C:
				t.Fatalf("no %q line within %v; status:\n%s", forwarding, patience, status)
			}
		}
		deadline.Stop()
		if attempt == 5 {
			t.Fatalf("five free ports in a row were taken before the edge bound them; status:\n%s", status)
		}
	}
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

// A managed agent serves a stored tunnel of type tcp: it registers it as
// a TCP tunnel on the stored port, and bytes go through both ways. When
// the stored port changes, it registers again on the new one.
func TestManagedTCPTunnel(t *testing.T) {
	t.Parallel()
	st, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := edge.DefaultConfig()
	cfg.Store, cfg.AdminTokens = st, []string{"A"}
	cfg.TCPPorts, cfg.TCPListenHost = anyPort, "127.0.0.1"
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
	status := &statusLog{}
	created := false
	// The first port offered is taken (held here), as another process
	// could take it: the edge refuses it and another is tried.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	offers := 0
	free := func(t *testing.T) int {
		if offers++; offers == 1 {
			return held.Addr().(*net.TCPAddr).Port
		}
		return freeTCPPort(t)
	}
	port := forwardOnFreePort(t, status, "tcp", local, free, func(port int) {
		if created {
			if _, err := admin.UpdateTunnel(ctx, "db", api.TunnelRequest{RemotePort: ptr(port)}); err != nil {
				t.Fatal(err)
			}
			return
		}
		created = true
		if _, err := admin.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("db"), Type: ptr("tcp"), Upstream: ptr("tcp://" + local),
			RemotePort: ptr(port), AgentToken: ptr(secret)}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(runManaged(t, ctx, ManagedConfig{Edge: "http://" + addr, Token: secret, Status: status.add}))
	})
	if offers < 2 {
		t.Errorf("the agent forwarded the taken port %d", port)
	}
	echoThrough(t, port)

	port2 := forwardOnFreePort(t, status, "tcp", local, freeTCPPort, func(port int) {
		if _, err := admin.UpdateTunnel(ctx, "db", api.TunnelRequest{RemotePort: ptr(port)}); err != nil {
			t.Fatal(err)
		}
	})
	echoThrough(t, port2)
}
