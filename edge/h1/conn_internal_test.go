package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testtool"
)

// TestHeldStreamHoldsNoBuffer: between two events of a held stream the
// connection and its response hold no buffer (net/http's server holds
// 10 KiB there).
func TestHeldStreamHoldsNoBuffer(t *testing.T) {
	held := make(chan *response)
	release := make(chan struct{})
	s := &Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			for range 2 {
				io.WriteString(w, "data: x\n\n")
				w.(http.Flusher).Flush()
				held <- w.(*response)
				<-release
			}
		}),
		Lean:     func(*http.Request) bool { return true },
		Fallback: &http.Server{},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	defer func() {
		s.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	io.WriteString(c, "GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		w := <-held
		if w.out != nil || w.stage != nil || w.c.buf != nil {
			t.Fatalf("event %d: holding buffers: out %v, stage %v, head %v", i, w.out != nil, w.stage != nil, w.c.buf != nil)
		}
		line, err := bufio.NewReader(io.LimitReader(resp.Body, 9)).ReadString('\n')
		if err != nil || line != "data: x\n" {
			t.Fatalf("event %d: %q, %v", i, line, err)
		}
		release <- struct{}{}
	}
}

// TestHeadEnd checks headEnd against net/textproto's reading of lines on
// a few heads; FuzzHeadEnd on any bytes.
func TestHeadEnd(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 27},
		{"GET / HTTP/1.1\nHost: a\n\nrest", 24},
		{"GET / HTTP/1.1\r\nHost: a\n\r\n", 26},
		{"GET / HTTP/1.1\r\nHost: a\r\n\r", -1},
		{"GET / HTTP/1.1\r\nHost: a\r\n", -1},
		{"\r\n", -1},
		{"\n\n", 2},
		{"a\r\r\n\r\n", 6},
		{"", -1},
	} {
		if got := headEnd([]byte(tc.in)); got != tc.want {
			t.Errorf("headEnd(%q) = %d, want %d", tc.in, got, tc.want)
		}
		checkHeadEnd(t, []byte(tc.in))
	}
}

func FuzzHeadEnd(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"))
	f.Add([]byte("GET / HTTP/1.1\nHost: a\n\n"))
	f.Add([]byte("\r\n\r\n\n"))
	f.Fuzz(checkHeadEnd)
}

// checkHeadEnd: headEnd(b) is where net/textproto's line reading, on b,
// meets its first empty line after the request line; -1 if it meets none
// in whole lines of b.
func checkHeadEnd(t *testing.T, b []byte) {
	got := headEnd(b)
	want := -1
	br := bufio.NewReader(bytes.NewReader(b))
	used := 0
	for first := true; ; first = false {
		line, err := br.ReadSlice('\n')
		if err != nil {
			break // no whole line left
		}
		used += len(line)
		if !first && (len(line) == 1 || len(line) == 2 && line[0] == '\r') {
			want = used
			break
		}
	}
	if got != want {
		t.Fatalf("headEnd(%q) = %d; the lines end the head at %d", b, got, want)
	}
}

// TestBodyFinishLeavesNoDeadline: ending a body whose read is blocked on
// the connection unblocks it with a deadline in the past, and takes that
// deadline away again: the connection's next read works.
func TestBodyFinishLeavesNoDeadline(t *testing.T) {
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	b := &body{c: &conn{rwc: c1}, remaining: 5}
	read := make(chan error, 1)
	go func() {
		_, err := b.Read(make([]byte, 5))
		read <- err
	}()
	testtool.Eventually(t, "the body's read holding its lock", func() bool {
		if b.mu.TryLock() {
			b.mu.Unlock()
			return false
		}
		return true
	})
	if b.finish() {
		t.Fatal("finish says a body with 5 bytes unread was read to its end")
	}
	if err := <-read; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the blocked read ended with %v", err)
	}
	go c2.Write([]byte("x"))
	buf := make([]byte, 1)
	if _, err := c1.Read(buf); err != nil {
		t.Fatalf("the connection's next read: %v", err)
	}
}
