package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/wire"
)

// tcpProtocols are the protocols the TCP tests run over: our agent over
// v1 (with its features) and over v2.
var tcpProtocols = []string{ProtocolV1, ProtocolV2}

// tcpSession starts an edge session and an agent of a TCP tunnel whose
// connections go to local (a loopback listener's handler, run per
// connection), or whose dial fails with dialErr. It returns the session.
func tcpSession(t *testing.T, proto string, edgeCfg Config, local func(c *net.TCPConn), dialErr error) Session {
	t.Helper()
	localAddr := serveLocal(t, local)
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
			return d.DialContext(ctx, "tcp", localAddr)
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
	})
	return sess
}

// serveLocal runs a local TCP server on loopback until the test ends (then
// it waits for serve to return on every connection, each closed after
// it), and returns its address.
func serveLocal(t testing.TB, serve func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				serve(c.(*net.TCPConn))
			})
		}
	})
	return ln.Addr().String()
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

// rawTCPAgent opens a session for a raw agent registering a TCP tunnel
// with features, counting the edge's frame errors.
func rawTCPAgent(t *testing.T, features ...string) (Session, *websocket.Conn, func() map[string]int) {
	var mu sync.Mutex
	counts := map[string]int{}
	cfg := Config{PongTimeout: 5 * time.Second, OnFrameError: func(kind string) {
		mu.Lock()
		counts[kind]++
		mu.Unlock()
	}}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, ws, _ := rawAgentSessionWith(t, ctx, cfg, false, wire.Frame{Type: wire.TypeRegister, TunnelID: "t", AgentToken: "k", Features: features, TunnelType: wire.TunnelTCP})
	return s, ws, func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(counts)
	}
}

func writeRaw(t *testing.T, ws *websocket.Conn, f *wire.Frame) {
	t.Helper()
	if err := ws.WriteMessage(websocket.TextMessage, wire.AppendFrame(nil, f, wire.EncodeOptions{})); err != nil {
		t.Fatal(err)
	}
}

// waitCounts waits until the edge counted want.
func waitCounts(t *testing.T, counts func() map[string]int, want map[string]int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !maps.Equal(counts(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("frame errors %v, want %v", counts(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestTCPJettyAgent: a plain Jetty agent (no features) gets tcp_connect,
// tcp_data and, at Close, tcp_close, and never a window_update; its
// tcp_data reaches Read, its tcp_close without a reason ends it cleanly
// (a full close), with one as a reset carrying it. Bad frames are counted
// and lose nothing else.
func TestTCPJettyAgent(t *testing.T) {
	t.Parallel()
	sess, ws, counts := rawTCPAgent(t)
	st, err := sess.OpenTCP(context.Background(), "203.0.113.7:51234")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	f := readRaw(t, ws)
	if f.Type != wire.TypeTCPConnect || f.RemoteAddr != "203.0.113.7:51234" || f.ConnectionID == "" {
		t.Fatalf("first frame %+v, want tcp_connect", f)
	}
	id := f.ConnectionID
	if _, err := st.Write([]byte("SSH-2.0-client\r\n")); err != nil {
		t.Fatal(err)
	}
	if f := readRaw(t, ws); f.Type != wire.TypeTCPData || f.ConnectionID != id || string(f.Data) != "SSH-2.0-client\r\n" {
		t.Fatalf("frame %+v, want the client's tcp_data", f)
	}
	writeRaw(t, ws, &wire.Frame{Type: wire.TypeTCPData, ConnectionID: "999", Data: []byte("lost")})
	writeRaw(t, ws, &wire.Frame{Type: wire.TypeTCPConnect, ConnectionID: "5", RemoteAddr: "x:1"})
	writeRaw(t, ws, &wire.Frame{Type: wire.TypeTCPData, ConnectionID: id, Data: []byte("SSH-2.0-server\r\n")})
	writeRaw(t, ws, &wire.Frame{Type: wire.TypeTCPClose, ConnectionID: id})
	b, err := io.ReadAll(st)
	if err != nil || string(b) != "SSH-2.0-server\r\n" {
		t.Fatalf("read %q, %v; want the server's line and a clean end", b, err)
	}
	writeRaw(t, ws, &wire.Frame{Type: wire.TypeTCPClose, ConnectionID: id}) // twice
	waitCounts(t, counts, map[string]int{"unknown_connection_id": 1, "unknown_type": 1, "late": 1})
	if _, err := st.Write([]byte("x")); !errors.Is(err, ErrStreamReset) {
		t.Errorf("write after the agent's close: %v, want ErrStreamReset", err)
	}

	// The local server refused: the reason reaches Read.
	st2, err := sess.OpenTCP(context.Background(), "203.0.113.7:51235")
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	f = readRaw(t, ws)
	writeRaw(t, ws, &wire.Frame{Type: wire.TypeTCPClose, ConnectionID: f.ConnectionID, Reason: "dial tcp 127.0.0.1:22: connect: connection refused"})
	if _, err := io.ReadAll(st2); !errors.Is(err, ErrStreamReset) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("read %v, want a reset carrying the reason", err)
	}

	// CloseWrite sends nothing to a plain agent; Close sends tcp_close.
	st3, err := sess.OpenTCP(context.Background(), "203.0.113.7:51236")
	if err != nil {
		t.Fatal(err)
	}
	id3 := readRaw(t, ws).ConnectionID
	st3.CloseWrite()
	st3.Close()
	if f := readRaw(t, ws); f.Type != wire.TypeTCPClose || f.ConnectionID != id3 {
		t.Fatalf("frame %+v, want tcp_close for %s", f, id3)
	}
	if c := counts(); len(c) != 3 {
		t.Errorf("frame errors %v", c)
	}
}

// TestTCPBadFramesWithExtensions: with window and tcp_half_close, a second
// eof and data past the window are counted; the eof alone is a clean end.
func TestTCPBadFramesWithExtensions(t *testing.T) {
	t.Parallel()
	sess, ws, counts := rawTCPAgent(t, wire.FeatureWindow, wire.FeatureTCPHalfClose)
	st, err := sess.OpenTCP(context.Background(), "203.0.113.7:1")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	id := readRaw(t, ws).ConnectionID
	writeRaw(t, ws, &wire.Frame{Type: wire.TypeTCPData, ConnectionID: id, Data: []byte("bye")})
	writeRaw(t, ws, &wire.Frame{Type: wire.TypeTCPClose, ConnectionID: id, Reason: wire.ReasonEOF})
	writeRaw(t, ws, &wire.Frame{Type: wire.TypeTCPClose, ConnectionID: id, Reason: wire.ReasonEOF})
	writeRaw(t, ws, &wire.Frame{Type: wire.TypeTCPData, ConnectionID: id, Data: []byte("after")})
	if b, err := io.ReadAll(st); err != nil || string(b) != "bye" {
		t.Fatalf("read %q, %v; want bye and a clean half-close", b, err)
	}
	waitCounts(t, counts, map[string]int{"duplicate_close": 1, "invalid": 1})
	// The edge still writes after the agent's half-close, then half-closes.
	if _, err := st.Write([]byte("more")); err != nil {
		t.Fatal(err)
	}
	if f := readRaw(t, ws); f.Type != wire.TypeTCPData || string(f.Data) != "more" {
		t.Fatalf("frame %+v, want tcp_data more", f)
	}
	st.CloseWrite()
	if f := readRaw(t, ws); f.Type != wire.TypeTCPClose || f.Reason != wire.ReasonEOF || f.ConnectionID != id {
		t.Fatalf("frame %+v, want tcp_close eof", f)
	}

	// Data past the window resets that connection only.
	st2, err := sess.OpenTCP(context.Background(), "203.0.113.7:2")
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	id2 := readRaw(t, ws).ConnectionID
	window := DefaultWindowV1
	writeRaw(t, ws, &wire.Frame{Type: wire.TypeTCPData, ConnectionID: id2, Data: make([]byte, window)})
	writeRaw(t, ws, &wire.Frame{Type: wire.TypeTCPData, ConnectionID: id2, Data: []byte("x")})
	if f := readRaw(t, ws); f.Type != wire.TypeTCPClose || f.ConnectionID != id2 || f.Reason == wire.ReasonEOF {
		t.Fatalf("frame %+v, want a reset of %s", f, id2)
	}
	if b, err := io.ReadAll(st2); !errors.Is(err, ErrFlowControl) || len(b) != window {
		t.Fatalf("read %d bytes, %v; want the window, then ErrFlowControl", len(b), err)
	}
	waitCounts(t, counts, map[string]int{"duplicate_close": 1, "invalid": 1, "flow_control": 1})
}

// TestTCPSessionEnd: the session ends mid-transfer; the edge's Read gets a
// reset, never a clean end, and a blocked Write returns.
func TestTCPSessionEnd(t *testing.T) {
	forTCP(t, func(t *testing.T, proto string) {
		release := make(chan struct{})
		sess := tcpSession(t, proto, Config{}, func(c *net.TCPConn) {
			c.Write([]byte("partial"))
			<-release // reading nothing
		}, nil)
		t.Cleanup(func() { close(release) })
		st, err := sess.OpenTCP(context.Background(), "203.0.113.1:5000")
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		b := make([]byte, 7)
		if _, err := io.ReadFull(st, b); err != nil {
			t.Fatal(err)
		}
		wrote := make(chan error, 1)
		go func() {
			_, err := st.Write(make([]byte, 64<<20)) // far past every window and buffer
			wrote <- err
		}()
		sess.Close()
		if _, err := io.ReadAll(st); !errors.Is(err, ErrStreamReset) {
			t.Fatalf("read after the session ended: %v, want ErrStreamReset", err)
		}
		select {
		case err := <-wrote:
			if err == nil {
				t.Fatal("a write of 64 MiB succeeded on a dead session")
			}
		case <-time.After(time.Minute):
			t.Fatal("a blocked Write never returned")
		}
	})
}
