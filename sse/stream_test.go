package sse

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
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

func TestStreamKeepAlive(t *testing.T) {
	t.Parallel()
	const interval = 100 * time.Millisecond
	release := make(chan struct{})
	srv := newServer(t, release, func(w http.ResponseWriter, r *http.Request) {
		s, err := NewStream(w, r, StreamConfig{KeepAlive: interval})
		if err != nil {
			return
		}
		defer s.Close()
		select {
		case <-release:
		case <-s.Done():
		}
	})
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	var times []time.Duration
	p := NewParser(resp.Body, ParserConfig{OnComment: func(c string) {
		if c == "keepalive" {
			times = append(times, time.Since(start))
		}
	}})
	go func() {
		time.Sleep(10 * interval)
		resp.Body.Close()
	}()
	for {
		if _, err := p.Next(); err != nil {
			break
		}
	}
	// About nine keepalives in ten intervals; allow for a slow machine
	// but not for a missing or a much faster timer.
	if len(times) < 5 || len(times) > 11 {
		t.Fatalf("%d keepalives in %v, want about 9: %v", len(times), 10*interval, times)
	}
	if times[0] < interval*8/10 {
		t.Fatalf("first keepalive after %v, before the interval %v", times[0], interval)
	}
}

func TestStreamEndsWhenClientGoesAway(t *testing.T) {
	t.Parallel()
	ended := make(chan error, 1)
	srv := newServer(t, make(chan struct{}), func(w http.ResponseWriter, r *http.Request) {
		s, err := NewStream(w, r, StreamConfig{})
		if err != nil {
			return
		}
		select {
		case <-s.Done():
		case <-time.After(10 * time.Second):
		}
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
	case <-time.After(5 * time.Second):
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
			case <-time.After(20 * time.Second):
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
