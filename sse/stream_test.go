package sse

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// newServer runs h on a loopback server that is closed at the end of the
// test; release is closed first, so that handlers waiting on it return.
func newServer(t *testing.T, release chan struct{}, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		close(release)
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv
}

func TestStreamHeadersBeforeFirstEvent(t *testing.T) {
	t.Parallel()
	sendNow := make(chan struct{})
	release := make(chan struct{})
	srv := newServer(t, release, func(w http.ResponseWriter, r *http.Request) {
		s, err := NewStream(w, r, StreamConfig{})
		if err != nil {
			t.Error(err)
			return
		}
		defer s.Close()
		select {
		case <-sendNow:
		case <-release:
			return
		}
		if err := s.Send(r.Context(), Event{ID: "1", Data: "late"}); err != nil {
			t.Error(err)
		}
		<-release
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("headers did not arrive before the first event: %v", err)
	}
	defer resp.Body.Close()
	t.Logf("headers after %v with no event sent", time.Since(start))
	for k, want := range map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "no-cache",
		"X-Accel-Buffering": "no",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	close(sendNow)
	ev, err := NewParser(resp.Body, ParserConfig{}).Next()
	if err != nil || ev.Data != "late" || ev.ID != "1" {
		t.Fatalf("event = %+v, %v", ev, err)
	}
}

// bufWriter is an in-memory ResponseWriter that can flush, for streams in
// a synctest bubble.
type bufWriter struct {
	header http.Header
	mu     sync.Mutex
	buf    bytes.Buffer
}

func (w *bufWriter) Header() http.Header { return w.header }
func (w *bufWriter) WriteHeader(int)     {}
func (w *bufWriter) Flush()              {}

func (w *bufWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(b)
}

func (w *bufWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// Keepalive comments go out at every interval without events, and an event
// puts the next one off by a whole interval.
func TestStreamKeepAlive(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const interval = 15 * time.Second
		w := &bufWriter{header: http.Header{}}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		r := httptest.NewRequest("GET", "/", nil).WithContext(ctx)
		s, err := NewStream(w, r, StreamConfig{}) // KeepAlive: DefaultKeepAlive
		if err != nil {
			t.Fatal(err)
		}
		count := func() int { return strings.Count(w.String(), ": keepalive\n\n") }
		time.Sleep(interval - time.Millisecond)
		synctest.Wait()
		if n := count(); n != 0 {
			t.Fatalf("%d keepalives before the interval", n)
		}
		time.Sleep(2 * time.Millisecond)
		synctest.Wait()
		if n := count(); n != 1 {
			t.Fatalf("%d keepalives after one interval, want 1", n)
		}
		time.Sleep(interval / 2)
		if err := s.Send(ctx, Event{Data: "x"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(interval - 2*time.Millisecond) // 1.5 intervals after the first keepalive
		synctest.Wait()
		if n := count(); n != 1 {
			t.Fatalf("%d keepalives; an event should put the next one off", n)
		}
		time.Sleep(2*time.Millisecond + 8*interval + interval/2) // nine more
		synctest.Wait()
		if n := count(); n != 10 {
			t.Fatalf("%d keepalives, want 10", n)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestStreamEndsWhenClientGoesAway(t *testing.T) {
	t.Parallel()
	ended := make(chan error, 1)
	srv := newServer(t, make(chan struct{}), func(w http.ResponseWriter, r *http.Request) {
		s, err := NewStream(w, r, StreamConfig{})
		if err != nil {
			return
		}
		<-s.Done() // the client leaves, or the server closes at cleanup
		ended <- s.Err()
		s.Close()
	})
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case err := <-ended:
		if !errors.Is(err, ErrClientGone) {
			t.Fatalf("Err = %v, want ErrClientGone", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("stream did not end after the client left")
	}
}

// stalledClient sends a request and never reads the response.
func stalledClient(t *testing.T, url string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	return conn
}

func TestStreamSlowClientPolicies(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 64<<10)
	for _, policy := range []SlowClientPolicy{Block, Disconnect} {
		name := map[SlowClientPolicy]string{Block: "block", Disconnect: "disconnect"}[policy]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			result := make(chan error, 1)
			srv := newServer(t, make(chan struct{}), func(w http.ResponseWriter, r *http.Request) {
				s, err := NewStream(w, r, StreamConfig{BufferSize: 256 << 10, SlowClient: policy})
				if err != nil {
					return
				}
				defer s.Close()
				ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
				defer cancel()
				// 64 MiB cannot fit in the socket buffers and the stream's
				// 256 KiB: the policy must act.
				for i := 0; i < 1024; i++ {
					if err := s.Send(ctx, Event{Data: big}); err != nil {
						result <- err
						return
					}
				}
				result <- nil
			})
			conn := stalledClient(t, srv.URL)
			defer conn.Close()
			select {
			case err := <-result:
				want := map[SlowClientPolicy]error{Block: context.DeadlineExceeded, Disconnect: ErrSlowClient}[policy]
				if !errors.Is(err, want) {
					t.Fatalf("Send = %v, want %v", err, want)
				}
			case <-time.After(2 * time.Minute):
				t.Fatal("Send neither blocked nor failed")
			}
		})
	}
}

func TestStreamCloseFlushesQueuedEvents(t *testing.T) {
	t.Parallel()
	srv := newServer(t, make(chan struct{}), func(w http.ResponseWriter, r *http.Request) {
		s, err := NewStream(w, r, StreamConfig{Retry: 250 * time.Millisecond})
		if err != nil {
			return
		}
		for i := range 100 {
			s.Send(r.Context(), Event{ID: strings.Repeat("i", i%3+1), Data: "event"})
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close = %v", err)
		}
		if err := s.Send(r.Context(), Event{Data: "late"}); !errors.Is(err, ErrStreamClosed) {
			t.Errorf("Send after Close = %v", err)
		}
	})
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := NewParser(bufio.NewReader(resp.Body), ParserConfig{})
	n := 0
	for {
		if _, err := p.Next(); err != nil {
			break
		}
		n++
	}
	if n != 100 {
		t.Fatalf("got %d events, want 100", n)
	}
	if d, ok := p.Retry(); !ok || d != 250*time.Millisecond {
		t.Fatalf("retry = %v %v", d, ok)
	}
}

// A wrapping ResponseWriter with Unwrap still flushes.
type wrapped struct{ http.ResponseWriter }

func (w wrapped) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type noFlush struct{ w http.ResponseWriter }

func (n noFlush) Header() http.Header         { return n.w.Header() }
func (n noFlush) Write(b []byte) (int, error) { return n.w.Write(b) }
func (n noFlush) WriteHeader(c int)           { n.w.WriteHeader(c) }

func TestStreamThroughMiddleware(t *testing.T) {
	t.Parallel()
	errs := make(chan error, 1)
	release := make(chan struct{})
	srv := newServer(t, release, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/noflush" {
			_, err := NewStream(noFlush{w}, r, StreamConfig{})
			errs <- err
			return
		}
		s, err := NewStream(wrapped{w}, r, StreamConfig{})
		if err != nil {
			t.Error(err)
			return
		}
		defer s.Close()
		s.Send(r.Context(), Event{Data: "through"})
		<-release
	})
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := NewParser(resp.Body, ParserConfig{}).Next()
	resp.Body.Close()
	if err != nil || ev.Data != "through" {
		t.Fatalf("got %+v %v", ev, err)
	}
	resp, err = http.Get(srv.URL + "/noflush")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := <-errs; !errors.Is(err, ErrNotFlushable) {
		t.Fatalf("NewStream on a writer that cannot flush = %v", err)
	}
}

// An event encoded once goes to several streams whole, and the caller may
// reuse its buffer: SendEncoded copies it.
func TestStreamSendEncoded(t *testing.T) {
	t.Parallel()
	enc, err := AppendEvent(nil, Event{ID: "7", Type: "config_changed", Data: "{\"a\":1}\nsecond line"})
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, make(chan struct{}), func(w http.ResponseWriter, r *http.Request) {
		s, err := NewStream(w, r, StreamConfig{})
		if err != nil {
			return
		}
		buf := append([]byte(nil), enc...)
		s.SendEncoded(r.Context(), buf)
		for i := range buf {
			buf[i] = 'x' // reused at once: the stream has its own copy
		}
		s.Close()
	})
	for range 2 {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := NewParser(bufio.NewReader(resp.Body), ParserConfig{}).Next()
		resp.Body.Close()
		if err != nil || ev.ID != "7" || ev.Type != "config_changed" || ev.Data != "{\"a\":1}\nsecond line" {
			t.Fatalf("event %+v, %v", ev, err)
		}
	}
}

// blockingWriter is a ResponseWriter whose Write blocks until release is
// closed, as on a client that stopped reading. With deadlines, it also
// supports SetWriteDeadline, which interrupts a blocked Write as a
// connection's deadline does.
type blockingWriter struct {
	header    http.Header
	release   chan struct{}
	deadlines bool

	mu       sync.Mutex
	writes   int
	flushes  int
	deadline *time.Timer
	expired  chan struct{}
}

func newBlockingWriter(deadlines bool) *blockingWriter {
	return &blockingWriter{header: http.Header{}, release: make(chan struct{}), deadlines: deadlines, expired: make(chan struct{})}
}

func (w *blockingWriter) Header() http.Header { return w.header }
func (w *blockingWriter) WriteHeader(int)     {}

func (w *blockingWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	w.writes++
	expired := w.expired
	w.mu.Unlock()
	select {
	case <-w.release:
		return len(b), nil
	case <-expired:
		return 0, os.ErrDeadlineExceeded
	}
}

func (w *blockingWriter) Flush() {
	w.mu.Lock()
	w.flushes++
	w.mu.Unlock()
}

func (w *blockingWriter) counts() (writes, flushes int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writes, w.flushes
}

// deadlineWriter adds SetWriteDeadline, found by http.ResponseController.
type deadlineWriter struct{ *blockingWriter }

func (w deadlineWriter) SetWriteDeadline(t time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.deadline != nil {
		w.deadline.Stop()
	}
	if t.IsZero() {
		return nil
	}
	expired := w.expired
	w.deadline = time.AfterFunc(time.Until(t), func() { close(expired) })
	return nil
}

// Close returns within its timeout even when the writer is blocked in a
// Write that started before Close, on a client that stopped reading.
func TestStreamCloseBehindBlockedWrite(t *testing.T) {
	t.Parallel()
	for _, deadlines := range []bool{false, true} {
		t.Run(fmt.Sprint("deadlines=", deadlines), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				bw := newBlockingWriter(deadlines)
				var w http.ResponseWriter = bw
				if deadlines {
					w = deadlineWriter{bw}
				}
				r := httptest.NewRequest("GET", "/", nil)
				s, err := NewStream(w, r, StreamConfig{CloseTimeout: 2 * time.Second, KeepAlive: -1})
				if err != nil {
					t.Fatal(err)
				}
				if err := s.Send(t.Context(), Event{Data: "stuck"}); err != nil {
					t.Fatal(err)
				}
				synctest.Wait() // the writer is blocked in Write
				if writes, _ := bw.counts(); writes != 1 {
					t.Fatalf("%d writes, want 1 blocked", writes)
				}
				start := time.Now()
				err = s.Close()
				took := time.Since(start)
				if deadlines {
					// The deadline interrupted the write at the timeout.
					if !errors.Is(err, os.ErrDeadlineExceeded) || took != 2*time.Second {
						t.Fatalf("Close = %v after %v, want the write's deadline error after 2s", err, took)
					}
				} else {
					var ne net.Error
					if !errors.Is(err, ErrCloseTimeout) || !errors.As(err, &ne) || !ne.Timeout() || took != 2*time.Second {
						t.Fatalf("Close = %v after %v, want ErrCloseTimeout after 2s", err, took)
					}
				}
				if err := s.Close(); err == nil {
					t.Fatal("second Close = nil, want the same error")
				}
				_, flushes := bw.counts()
				close(bw.release) // the client reads again: the Write returns
				synctest.Wait()
				if writes, f := bw.counts(); writes != 1 || f != flushes {
					t.Fatalf("after Close: %d writes, %d flushes (was %d); want the writer gone", writes, f, flushes)
				}
			})
		})
	}
}
