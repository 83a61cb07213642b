package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/wire"
)

// tcpProtocols are the protocols the TCP tests run over: our agent over
// v1 (with its features) and over v2.
var tcpProtocols = []string{ProtocolV2}

// tcpSession starts an edge session and an agent of a TCP tunnel whose
// connections go to local (a loopback listener's handler, run per
// connection), or whose dial fails with dialErr. It returns the session.
func tcpSession(t *testing.T, proto string, edgeCfg Config, local func(c *net.TCPConn), dialErr error) Session {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var lwg sync.WaitGroup
	lwg.Add(1)
	go func() {
		defer lwg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			lwg.Add(1)
			go func() {
				defer lwg.Done()
				defer c.Close()
				local(c.(*net.TCPConn))
			}()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	sessions := make(chan Session, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := Accept(w, r, AcceptConfig{Config: edgeCfg, Authorize: func(_ context.Context, reg *Registration) (*Grant, error) {
			if reg.Type != wire.TunnelTCP {
				return nil, &RegisterError{Code: wire.CodeBadRegister, Message: "want tcp"}
			}
			return &Grant{TunnelID: reg.TunnelID, PublicURL: "tcp://127.0.0.1:1"}, nil
		}})
		if err != nil {
			return
		}
		sessions <- s
		s.Run(ctx)
	}))
	dc := DialConfig{URL: "ws" + strings.TrimPrefix(srv.URL, "http"), TunnelID: "t", Protocol: proto, Type: wire.TunnelTCP,
		DialTCP: func(ctx context.Context, remoteAddr string) (net.Conn, error) {
			if dialErr != nil {
				return nil, dialErr
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", ln.Addr().String())
		}}
	as, err := Dial(ctx, dc)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		as.Serve(ctx, http.NotFoundHandler())
	}()
	sess := <-sessions
	t.Cleanup(func() {
		cancel()
		sess.Close()
		wg.Wait()
		srv.CloseClientConnections()
		srv.Close()
		ln.Close()
		lwg.Wait()
	})
	return sess
}

func forTCP(t *testing.T, f func(t *testing.T, proto string)) {
	for _, proto := range tcpProtocols {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			f(t, proto)
		})
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestTCPBytesAndHalfCloses: a few MiB each way, byte-exact, with the
// local server half-closing first (its EOF reaches the edge while the edge
// still writes) and then the edge (its EOF reaches the local server).
func TestTCPBytesAndHalfCloses(t *testing.T) {
	forTCP(t, func(t *testing.T, proto string) {
		down, up := randomBytes(3<<20+17), randomBytes(2<<20+5)
		got := make(chan []byte, 1)
		sess := tcpSession(t, proto, Config{}, func(c *net.TCPConn) {
			if _, err := c.Write(down); err != nil {
				t.Error(err)
			}
			c.CloseWrite()
			b, err := io.ReadAll(c)
			if err != nil {
				t.Error(err)
			}
			got <- b
		}, nil)
		st, err := sess.OpenTCP(context.Background(), "203.0.113.1:5000")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		b, err := io.ReadAll(st)
		if err != nil || !bytes.Equal(b, down) {
			t.Fatalf("read %d bytes, %v; want %d", len(b), err, len(down))
		}
		if _, err := st.Write(up); err != nil {
			t.Fatal(err)
		}
		if err := st.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if b := <-got; !bytes.Equal(b, up) {
			t.Fatalf("local server got %d bytes, want %d", len(b), len(up))
		}
	})
}

// TestTCPEdgeHalfCloseFirst: the edge writes and half-closes; the local
// server reads to EOF and only then answers.
func TestTCPEdgeHalfCloseFirst(t *testing.T) {
	forTCP(t, func(t *testing.T, proto string) {
		up := randomBytes(1<<20 + 3)
		sess := tcpSession(t, proto, Config{}, func(c *net.TCPConn) {
			b, err := io.ReadAll(c)
			if err != nil {
				t.Error(err)
			}
			fmt.Fprintf(c, "got %d", len(b))
		}, nil)
		st, err := sess.OpenTCP(context.Background(), "203.0.113.1:5000")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if _, err := st.Write(up); err != nil {
			t.Fatal(err)
		}
		st.CloseWrite()
		b, err := io.ReadAll(st)
		if want := fmt.Sprintf("got %d", len(up)); err != nil || string(b) != want {
			t.Fatalf("read %q, %v; want %q", b, err, want)
		}
	})
}

// TestTCPLocalReset: the local server resets the connection; the edge
// reads an error wrapping ErrStreamReset, not EOF.
func TestTCPLocalReset(t *testing.T) {
	forTCP(t, func(t *testing.T, proto string) {
		sess := tcpSession(t, proto, Config{}, func(c *net.TCPConn) {
			c.Write([]byte("partial"))
			c.SetLinger(0)
			c.Close()
		}, nil)
		st, err := sess.OpenTCP(context.Background(), "203.0.113.1:5000")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		_, err = io.ReadAll(st)
		if !errors.Is(err, ErrStreamReset) {
			t.Fatalf("read error %v, want ErrStreamReset", err)
		}
	})
}

// TestTCPEdgeReset: the edge closes a connection in the middle; the local
// server reads an error, not EOF.
func TestTCPEdgeReset(t *testing.T) {
	forTCP(t, func(t *testing.T, proto string) {
		readErr := make(chan error, 1)
		sess := tcpSession(t, proto, Config{}, func(c *net.TCPConn) {
			c.Write([]byte("hello"))
			_, err := io.Copy(io.Discard, c)
			readErr <- err
		}, nil)
		st, err := sess.OpenTCP(context.Background(), "203.0.113.1:5000")
		if err != nil {
			t.Fatal(err)
		}
		st.Write([]byte("some"))
		b := make([]byte, 5)
		if _, err := io.ReadFull(st, b); err != nil {
			t.Fatal(err)
		}
		st.Close()
		select {
		case err := <-readErr:
			if err == nil {
				t.Fatal("the local server read a clean EOF after the edge reset")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the local server never saw the reset")
		}
	})
}

// TestTCPDialError: the agent's dial error reaches the edge's Read.
func TestTCPDialError(t *testing.T) {
	forTCP(t, func(t *testing.T, proto string) {
		sess := tcpSession(t, proto, Config{}, func(*net.TCPConn) {}, errors.New("dial tcp 127.0.0.1:9: connect: connection refused"))
		st, err := sess.OpenTCP(context.Background(), "203.0.113.1:5000")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		_, err = io.ReadAll(st)
		if !errors.Is(err, ErrStreamReset) || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("read error %v, want a reset carrying the reason", err)
		}
	})
}

// TestTCPManyStreams: 200 connections at once, one of which is never read
// while its server writes far past the window: the others finish.
func TestTCPManyStreams(t *testing.T) {
	forTCP(t, func(t *testing.T, proto string) {
		sess := tcpSession(t, proto, Config{}, func(c *net.TCPConn) {
			var first [1]byte
			if _, err := io.ReadFull(c, first[:]); err != nil {
				return
			}
			if first[0] == 's' { // stalled: write until the tunnel stops taking
				c.Write(make([]byte, 64<<20))
				return
			}
			c.Write(first[:])
			io.Copy(c, c) // echo
		}, nil)
		stalled, err := sess.OpenTCP(context.Background(), "203.0.113.1:1")
		if err != nil {
			t.Fatal(err)
		}
		defer stalled.Close()
		stalled.Write([]byte("s"))
		var wg sync.WaitGroup
		for i := range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := sess.OpenTCP(context.Background(), "203.0.113.1:2")
				if err != nil {
					t.Error(err)
					return
				}
				defer st.Close()
				msg := append([]byte("e"), randomBytes(64<<10+i)...)
				go func() {
					st.Write(msg)
					st.CloseWrite()
				}()
				b, err := io.ReadAll(st)
				if err != nil || !bytes.Equal(b, msg) {
					t.Errorf("echo of %d bytes: got %d, %v", len(msg), len(b), err)
				}
			}()
		}
		wg.Wait()
	})
}

// TestTCPStreamLimit: TCP streams count in the session's stream limit.
func TestTCPStreamLimit(t *testing.T) {
	forTCP(t, func(t *testing.T, proto string) {
		sess := tcpSession(t, proto, Config{MaxStreams: 2}, func(c *net.TCPConn) { io.Copy(io.Discard, c) }, nil)
		a, err := sess.OpenTCP(context.Background(), "x:1")
		if err != nil {
			t.Fatal(err)
		}
		b, err := sess.OpenTCP(context.Background(), "x:2")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sess.OpenTCP(context.Background(), "x:3"); !errors.Is(err, ErrTooManyStreams) {
			t.Fatalf("third stream: %v, want ErrTooManyStreams", err)
		}
		a.Close()
		c, err := sess.OpenTCP(context.Background(), "x:4")
		if err != nil {
			t.Fatalf("after a close: %v", err)
		}
		c.Close()
		b.Close()
	})
}

// TestOpenTCPOnHTTPTunnel: a session whose agent registered an HTTP tunnel
// has no TCP streams.
func TestOpenTCPOnHTTPTunnel(t *testing.T) {
	forModes(t, func(t *testing.T, features []string) {
		sess := tunnelSession(t, features, http.NotFoundHandler())
		if _, err := sess.OpenTCP(context.Background(), "x:1"); !errors.Is(err, ErrNotTCP) {
			t.Fatalf("OpenTCP: %v, want ErrNotTCP", err)
		}
	})
}

// TestRegisterTunnelType: an unknown tunnel_type, or a port out of range,
// is refused with bad_register before Authorize; tcp and the port reach it.
func TestRegisterTunnelType(t *testing.T) {
	var mu sync.Mutex
	var seen []Registration
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := Accept(w, r, AcceptConfig{Authorize: func(_ context.Context, reg *Registration) (*Grant, error) {
			mu.Lock()
			seen = append(seen, *reg)
			mu.Unlock()
			return &Grant{TunnelID: reg.TunnelID, PublicURL: "http://x.example"}, nil
		}})
		if err == nil {
			s.Close()
		}
	}))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	for _, c := range []struct {
		typ  string
		port int
		want string
	}{{"udpx", 0, `tunnel_type "udpx"`}, {wire.TunnelTCP, 70000, "remote_port 70000"}, {wire.TunnelHTTP, 22, "remote_port is for"}} {
		_, err := Dial(context.Background(), DialConfig{URL: url, TunnelID: "t", Protocol: ProtocolV1, Type: c.typ, RemotePort: c.port})
		var re *RegisterError
		if !errors.As(err, &re) || re.Code != wire.CodeBadRegister || !strings.Contains(re.Message, c.want) {
			t.Errorf("type %q port %d: %v, want bad_register naming %s", c.typ, c.port, err, c.want)
		}
	}
	// An edge that answers an HTTP URL to a TCP registration is refused by the agent.
	_, err := Dial(context.Background(), DialConfig{URL: url, TunnelID: "t", Protocol: ProtocolV1, Type: wire.TunnelTCP, RemotePort: 5432})
	var re *RegisterError
	if !errors.As(err, &re) || re.Code != wire.CodeNoTCP {
		t.Errorf("TCP registration with an http:// answer: %v, want no_tcp", err)
	}
	mu.Lock()
	if len(seen) != 1 || seen[0].Type != wire.TunnelTCP || seen[0].RemotePort != 5432 {
		t.Errorf("Authorize saw %+v, want one tcp registration for port 5432", seen)
	}
	mu.Unlock()
	as, err := Dial(context.Background(), DialConfig{URL: url, TunnelID: "t", Protocol: ProtocolV1})
	if err != nil {
		t.Fatal(err)
	}
	as.Close()
	mu.Lock()
	defer mu.Unlock()
	if seen[len(seen)-1].Type != wire.TunnelHTTP {
		t.Errorf("a register without tunnel_type is %q, want http", seen[len(seen)-1].Type)
	}
}
