package h1_test

import (
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/edge/h1"
)

// fallbackMark is the field the fallback server's handler adds: which
// server answered shows in the bytes.
const fallbackMark = "X-Served-By"

// servers is an h1.Server (with its fallback) and a net/http server
// alone, serving the same handler on loopback.
type servers struct {
	lean, std string // addresses
	front     *h1.Server
}

// serveBoth starts both servers; lean decides what h1 serves itself (nil:
// everything it can).
func serveBoth(t testing.TB, h http.Handler, lean func(*http.Request) bool) *servers {
	t.Helper()
	if lean == nil {
		lean = func(*http.Request) bool { return true }
	}
	quiet := log.New(io.Discard, "", 0)
	fb := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(fallbackMark, "net/http")
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: time.Minute,
		ErrorLog:          quiet,
	}
	fb.Protocols = new(http.Protocols)
	fb.Protocols.SetHTTP1(true)
	fb.Protocols.SetHTTP2(true)
	fb.Protocols.SetUnencryptedHTTP2(true)
	front := &h1.Server{Handler: h, Lean: lean, Fallback: fb, ReadHeaderTimeout: time.Minute, IdleTimeout: time.Minute}
	std := &http.Server{Handler: h, ReadHeaderTimeout: time.Minute, ErrorLog: quiet, Protocols: fb.Protocols}
	s := &servers{front: front}
	s.lean = serve(t, front.Serve, front.Close)
	s.std = serve(t, std.Serve, std.Close)
	return s
}

// serve runs a server's Serve on a loopback listener until the test ends.
func serve(t testing.TB, run func(net.Listener) error, stop func() error) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- run(ln) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
	})
	return ln.Addr().String()
}

// exchange sends raw on a new connection and returns all the server sent
// until it closed the connection (a minute at most).
func exchange(t testing.TB, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil && (len(b) == 0 || !errors.Is(err, syscall.ECONNRESET)) {
		// (A reset after an answer: the server closed with bytes unread.)
		t.Fatalf("reading the answer to %q: %v (got %q)", raw, err, b)
	}
	return string(b)
}

var dateField = regexp.MustCompile(`(?m)^Date: [^\r]*\r$`)

// canonical makes two servers' answers comparable: the same Date, and a
// chunked body shown as its bytes and trailers, whatever its chunks (where
// net/http's server cuts a body in chunks follows its internal buffers).
func canonical(s string) string {
	s = dateField.ReplaceAllString(s, "Date: (now)\r")
	var b strings.Builder
	for len(s) > 0 {
		end := strings.Index(s, "\r\n\r\n")
		if !strings.HasPrefix(s, "HTTP/1.1 ") || end < 0 {
			next := strings.Index(s[1:], "HTTP/1.1 ")
			if next < 0 {
				b.WriteString(s)
				break
			}
			b.WriteString(s[:next+1])
			s = s[next+1:]
			continue
		}
		head := s[:end+4]
		s = s[end+4:]
		b.WriteString(head)
		if !strings.Contains(head, "\r\nTransfer-Encoding: chunked\r\n") {
			continue
		}
		b.WriteString("<chunked body: ")
		for {
			line, rest, ok := strings.Cut(s, "\r\n")
			size, err := strconv.ParseUint(line, 16, 32)
			if !ok || err != nil || uint64(len(rest)) < size+2 || rest[size:size+2] != "\r\n" {
				b.WriteString("<bad chunk> " + s)
				return b.String()
			}
			s = rest[size+2:]
			if size == 0 {
				s = rest
				break
			}
			b.WriteString(rest[:size])
		}
		trailers, rest, ok := strings.Cut(s, "\r\n\r\n")
		if strings.HasPrefix(s, "\r\n") {
			trailers, rest, ok = "", s[2:], true
		}
		if !ok {
			b.WriteString("<bad trailers> " + s)
			return b.String()
		}
		b.WriteString(">\n<trailers: " + trailers + ">\n")
		s = rest
	}
	return b.String()
}
