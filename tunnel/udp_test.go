package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/sluicehq/sluice/wire"
)

// udpSession starts an edge session and an agent of a UDP tunnel whose
// sessions go to a loopback UDP echo server (each datagram sent back to
// its sender, prefixed with prefix), or whose dial fails with dialErr.
func udpSession(t *testing.T, proto string, prefix string, dialErr error) Session {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var lwg sync.WaitGroup
	lwg.Add(1)
	go func() {
		defer lwg.Done()
		buf := make([]byte, MaxDatagram)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte(prefix+addr.String()+"|"), buf[:n]...), addr)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	sessions := make(chan Session, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, err := Accept(w, r, grantAll(Config{}))
		if err != nil {
			return
		}
		sessions <- s
		s.Run(ctx)
	}))
	dc := DialConfig{URL: "ws" + strings.TrimPrefix(srv.URL, "http"), TunnelID: "t", Protocol: proto, Type: wire.TunnelUDP,
		DialUDP: func(ctx context.Context, remoteAddr string) (net.Conn, error) {
			if dialErr != nil {
				return nil, dialErr
			}
			var d net.Dialer
			return d.DialContext(ctx, "udp", pc.LocalAddr().String())
		}}
	as, err := Dial(ctx, dc)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(as.PublicURL, "udp://") {
		t.Fatalf("public URL %q", as.PublicURL)
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
		pc.Close()
		lwg.Wait()
	})
	return sess
}

// echoed reads one datagram from d and strips the echo server's
// "ADDR|" prefix, returning the address and the payload.
func echoed(t *testing.T, d Datagrams) (string, []byte) {
	t.Helper()
	buf := make([]byte, MaxDatagram)
	n, err := d.ReadDatagram(buf)
	if err != nil {
		t.Fatalf("read datagram: %v", err)
	}
	addr, payload, ok := bytes.Cut(buf[:n], []byte("|"))
	if !ok {
		t.Fatalf("datagram %q without the echo's prefix", buf[:min(n, 40)])
	}
	return string(addr), payload
}

// TestUDPBoundaries: datagrams of sizes from 0 to 60,000 bytes come back
// whole, one for one.
func TestUDPBoundaries(t *testing.T) {
	forTCP(t, func(t *testing.T, proto string) {
		sess := udpSession(t, proto, "", nil)
		d, err := sess.OpenUDP(context.Background(), "203.0.113.1:5000")
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		for _, size := range []int{1, 0, 512, 1400, 9000, 33333, 60000} {
			want := randomBytes(size)
			if err := d.WriteDatagram(want); err != nil {
				t.Fatal(err)
			}
			if _, got := echoed(t, d); !bytes.Equal(got, want) {
				t.Fatalf("size %d: got %d bytes back", size, len(got))
			}
		}
		if err := d.WriteDatagram(make([]byte, MaxDatagram+1)); !errors.Is(err, ErrDatagramTooLarge) {
			t.Fatalf("oversize write: %v, want ErrDatagramTooLarge", err)
		}
	})
}

// TestUDPManyDatagrams: 1,000 datagrams, each answered before the next.
func TestUDPManyDatagrams(t *testing.T) {
	forTCP(t, func(t *testing.T, proto string) {
		sess := udpSession(t, proto, "", nil)
		d, err := sess.OpenUDP(context.Background(), "203.0.113.1:5000")
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		for i := range 1000 {
			want := fmt.Appendf(nil, "datagram %d", i)
			if err := d.WriteDatagram(want); err != nil {
				t.Fatal(err)
			}
			if _, got := echoed(t, d); !bytes.Equal(got, want) {
				t.Fatalf("got %q, want %q", got, want)
			}
		}
	})
}

// TestUDPTwoSessions: two sessions have local sockets of their own (the
// echo server sees two addresses) and get their own replies.
func TestUDPTwoSessions(t *testing.T) {
	forTCP(t, func(t *testing.T, proto string) {
		sess := udpSession(t, proto, "", nil)
		a, err := sess.OpenUDP(context.Background(), "203.0.113.1:5000")
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		b, err := sess.OpenUDP(context.Background(), "203.0.113.2:5000")
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		a.WriteDatagram([]byte("a"))
		b.WriteDatagram([]byte("b"))
		addrA, gotA := echoed(t, a)
		addrB, gotB := echoed(t, b)
		if string(gotA) != "a" || string(gotB) != "b" {
			t.Fatalf("a got %q, b got %q", gotA, gotB)
		}
		if addrA == addrB {
			t.Fatalf("both sessions came from %s", addrA)
		}
	})
}

// TestUDPDialError: the agent's failure to open its socket ends the
// session with its reason.
func TestUDPDialError(t *testing.T) {
	forTCP(t, func(t *testing.T, proto string) {
		sess := udpSession(t, proto, "", errors.New("no such host"))
		d, err := sess.OpenUDP(context.Background(), "203.0.113.1:5000")
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		d.WriteDatagram([]byte("q")) // v1: the agent opens its socket at the first datagram
		_, err = d.ReadDatagram(make([]byte, MaxDatagram))
		if !errors.Is(err, ErrStreamReset) || !strings.Contains(err.Error(), "no such host") {
			t.Fatalf("read: %v, want a reset with the dial error", err)
		}
	})
}

// TestUDPNotUDP: an HTTP tunnel's session opens no UDP session.
func TestUDPNotUDP(t *testing.T) {
	forTCP(t, func(t *testing.T, proto string) {
		sess := tcpSession(t, proto, Config{}, func(*net.TCPConn) {}, nil)
		if _, err := sess.OpenUDP(context.Background(), "203.0.113.1:5000"); !errors.Is(err, ErrNotUDP) {
			t.Fatalf("OpenUDP on a TCP tunnel: %v, want ErrNotUDP", err)
		}
	})
}

// TestUDPIdleTimeoutInBubble: the agent ends a session with no datagram
// for its idle timeout, exactly then in fake time: its local socket is
// closed, and the edge's reader sees the end (io.EOF).
func TestUDPIdleTimeoutInBubble(t *testing.T) {
	for _, proto := range tcpProtocols {
		t.Run(proto, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const idle = 30 * time.Second
				e := startBubbleEdge(Config{})
				defer e.close()
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				locals := make(chan net.Conn, 1)
				dc := e.dialConfig(Config{}, proto)
				dc.Type, dc.UDPIdleTimeout = wire.TunnelUDP, idle
				dc.DialUDP = func(context.Context, string) (net.Conn, error) {
					c, local := net.Pipe()
					locals <- local
					return c, nil
				}
				as, err := Dial(ctx, dc)
				if err != nil {
					t.Fatal(err)
				}
				served := make(chan error, 1)
				go func() { served <- as.Serve(ctx, http.NotFoundHandler()) }()
				sess := <-e.sessions
				defer func() {
					cancel()
					<-served
					sess.Close()
				}()
				d, err := sess.OpenUDP(ctx, "203.0.113.1:5000")
				if err != nil {
					t.Fatal(err)
				}
				defer d.Close()
				if err := d.WriteDatagram([]byte("ping")); err != nil {
					t.Fatal(err)
				}
				local := <-locals
				buf := make([]byte, 16)
				if n, err := local.Read(buf); err != nil || string(buf[:n]) != "ping" {
					t.Fatalf("local read %q, %v", buf[:n], err)
				}
				start := time.Now()
				ended := make(chan error, 1)
				go func() {
					_, err := d.ReadDatagram(make([]byte, MaxDatagram))
					ended <- err
				}()
				if _, err := local.Read(buf); err == nil {
					t.Fatal("local socket still open")
				}
				if got := time.Since(start); got != idle {
					t.Fatalf("session ended after %v, want %v", got, idle)
				}
				if err := <-ended; err != io.EOF {
					t.Fatalf("edge read %v, want io.EOF", err)
				}
			})
		})
	}
}
