package sse

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// collect runs the client until the iteration ends or max events arrive.
func collect(t *testing.T, c *Client, ctx context.Context, max int) ([]Event, error) {
	t.Helper()
	var evs []Event
	for ev, err := range c.Events(ctx) {
		if err != nil {
			return evs, err
		}
		evs = append(evs, ev)
		if len(evs) == max {
			break
		}
	}
	return evs, nil
}

func TestClientFatalResponses(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		status  int
		ctype   string
		check   func(error) bool
		wantErr string
	}{
		{"204 stops for good", 204, "", func(err error) bool { return errors.Is(err, ErrNoContent) }, "ErrNoContent"},
		{"500", 500, "text/plain", func(err error) bool {
			var se *StatusError
			return errors.As(err, &se) && se.StatusCode == 500 && se.Body == "broken"
		}, "*StatusError 500"},
		{"404", 404, "text/event-stream", func(err error) bool {
			var se *StatusError
			return errors.As(err, &se) && se.StatusCode == 404
		}, "*StatusError 404"},
		{"application/json", 200, "application/json", func(err error) bool {
			var ce *ContentTypeError
			return errors.As(err, &ce) && ce.ContentType == "application/json"
		}, "*ContentTypeError"},
		{"no content type", 200, "", func(err error) bool {
			var ce *ContentTypeError
			return errors.As(err, &ce)
		}, "*ContentTypeError"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var requests atomic.Int32
			srv := newServer(t, make(chan struct{}), func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				if c.ctype != "" {
					w.Header().Set("Content-Type", c.ctype)
				} else {
					w.Header()["Content-Type"] = nil // no sniffing
				}
				w.WriteHeader(c.status)
				if c.status != 204 {
					io.WriteString(w, "broken")
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := collect(t, NewClient(srv.URL, ClientConfig{Retry: time.Millisecond}), ctx, 0)
			if !c.check(err) {
				t.Fatalf("err = %v (%T), want %s", err, err, c.wantErr)
			}
			time.Sleep(50 * time.Millisecond)
			if n := requests.Load(); n != 1 {
				t.Fatalf("%d requests, want 1 (no reconnect)", n)
			}
		})
	}
}

func TestClientAcceptsContentTypeParameters(t *testing.T) {
	t.Parallel()
	for _, ct := range []string{"text/event-stream; charset=utf-8", "Text/Event-Stream", "TEXT/EVENT-STREAM;foo=bar"} {
		srv := newServer(t, make(chan struct{}), func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", ct)
			io.WriteString(w, "data: ok\n\n")
		})
		evs, err := collect(t, NewClient(srv.URL, ClientConfig{NoReconnect: true}), context.Background(), 0)
		if err != nil || len(evs) != 1 || evs[0].Data != "ok" {
			t.Fatalf("%q: %v %v", ct, evs, err)
		}
	}
}

// A reconnecting server: each connection is numbered; handle writes its
// body. It records the request headers and how many connections were open
// at once.
type reconnectServer struct {
	mu       sync.Mutex
	reqs     []http.Header
	times    []time.Time // when each request arrived
	ends     []time.Time // when each response ended
	open     int
	maxOpen  int
	handle   func(n int, w http.ResponseWriter, r *http.Request)
	released chan struct{}
}

func (s *reconnectServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	n := len(s.reqs)
	s.reqs = append(s.reqs, r.Header.Clone())
	s.times = append(s.times, time.Now())
	s.open++
	s.maxOpen = max(s.maxOpen, s.open)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	http.NewResponseController(w).Flush()
	s.handle(n, w, r)
	s.mu.Lock()
	s.open--
	s.ends = append(s.ends, time.Now())
	s.mu.Unlock()
}

func startReconnectServer(t *testing.T, handle func(n int, w http.ResponseWriter, r *http.Request)) (*reconnectServer, string) {
	release := make(chan struct{})
	rs := &reconnectServer{handle: handle, released: release}
	srv := newServer(t, release, rs.ServeHTTP)
	return rs, srv.URL
}

func TestClientReconnect(t *testing.T) {
	t.Parallel()
	rs, url := startReconnectServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		switch n {
		case 0:
			io.WriteString(w, "retry: 300\nid: a\ndata: one\n\nid: b\ndata: two\n\n")
		case 1:
			io.WriteString(w, "data: three\n\n") // no id: "b" carries on
		case 2:
			io.WriteString(w, "id: c\ndata: four\n\n: partial block\ndata: lost")
		}
	})
	c := NewClient(url, ClientConfig{
		Header:      http.Header{"X-Custom": {"kept"}, "Authorization": {"Bearer t"}},
		LastEventID: "start",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, err := collect(t, c, ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	want := []Event{
		{ID: "a", Type: "message", Data: "one", Retry: 300 * time.Millisecond},
		{ID: "b", Type: "message", Data: "two", Retry: 300 * time.Millisecond},
		{ID: "b", Type: "message", Data: "three", Retry: 300 * time.Millisecond},
		{ID: "c", Type: "message", Data: "four", Retry: 300 * time.Millisecond},
	}
	for i := range want {
		if evs[i] != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, evs[i], want[i])
		}
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	wantIDs := []string{"start", "b", "b"}
	for i, h := range rs.reqs[:3] {
		if got := h.Get("Last-Event-ID"); got != wantIDs[i] {
			t.Errorf("request %d Last-Event-ID = %q, want %q", i, got, wantIDs[i])
		}
		if h.Get("Accept") != "text/event-stream" || h.Get("X-Custom") != "kept" || h.Get("Authorization") != "Bearer t" {
			t.Errorf("request %d headers = %v", i, h)
		}
	}
	// The server's retry: 300 ms is honoured (with at most +50% jitter).
	for i := 1; i < 3; i++ {
		gap := rs.times[i].Sub(rs.ends[i-1])
		if gap < 290*time.Millisecond || gap > 2*time.Second {
			t.Errorf("reconnect %d after %v, want 300–450 ms", i, gap)
		}
	}
	if rs.maxOpen != 1 {
		t.Errorf("%d connections open at once", rs.maxOpen)
	}
	if d, ok := c.Retry(); !ok || d != 300*time.Millisecond {
		t.Errorf("Retry() = %v %v", d, ok)
	}
	if c.LastEventID() != "c" {
		t.Errorf("LastEventID() = %q", c.LastEventID())
	}
}

func TestClientNoReconnect(t *testing.T) {
	t.Parallel()
	rs, url := startReconnectServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "data: only\n\n")
	})
	evs, err := collect(t, NewClient(url, ClientConfig{NoReconnect: true}), context.Background(), 0)
	if err != nil || len(evs) != 1 {
		t.Fatalf("%v %v", evs, err)
	}
	time.Sleep(50 * time.Millisecond)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if len(rs.reqs) != 1 {
		t.Fatalf("%d requests", len(rs.reqs))
	}
}

func TestClientNetworkErrorNoReconnect(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = collect(t, NewClient("http://"+addr, ClientConfig{NoReconnect: true}), context.Background(), 0)
	var op *net.OpError
	if !errors.As(err, &op) {
		t.Fatalf("err = %v, want a connection error", err)
	}
}

func TestClientBackoff(t *testing.T) {
	t.Parallel()
	c := NewClient("http://x", ClientConfig{Retry: time.Second, MaxBackoff: 10 * time.Second})
	within := func(d, lo, hi time.Duration) bool { return d >= lo && d <= hi }
	for range 50 {
		if d := c.backoff(0); !within(d, time.Second, 1500*time.Millisecond) {
			t.Fatalf("after a healthy connection: %v", d)
		}
		if d := c.backoff(1); !within(d, time.Second, 1500*time.Millisecond) {
			t.Fatalf("after one failure: %v", d)
		}
		if d := c.backoff(3); !within(d, 4*time.Second, 6*time.Second) {
			t.Fatalf("after three failures: %v", d)
		}
		if d := c.backoff(30); !within(d, 10*time.Second, 15*time.Second) {
			t.Fatalf("capped: %v", d)
		}
	}
	// retry: 0 from the server still backs off on repeated failures.
	c.retry, c.retrySet = 0, true
	if d := c.backoff(0); d != 0 {
		t.Fatalf("retry 0 after a healthy connection: %v", d)
	}
	if d := c.backoff(4); d < 800*time.Millisecond {
		t.Fatalf("retry 0 after four failures: %v", d)
	}
	// A server retry above the cap is honoured.
	c.retry = time.Minute
	if d := c.backoff(5); d < time.Minute {
		t.Fatalf("long retry: %v", d)
	}
}

func TestClientTimeouts(t *testing.T) {
	t.Parallel()
	t.Run("response header timeout", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		srv := newServer(t, release, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		start := time.Now()
		_, err := collect(t, NewClient(srv.URL, ClientConfig{NoReconnect: true, ResponseHeaderTimeout: 200 * time.Millisecond}), context.Background(), 0)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("err = %v, want a net.Error timeout", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("timeout after %v", d)
		}
	})
	t.Run("idle timeout reconnects", func(t *testing.T) {
		t.Parallel()
		rs, url := startReconnectServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
			if n == 0 {
				io.WriteString(w, "id: 1\ndata: then silence\n\n")
				http.NewResponseController(w).Flush()
				<-r.Context().Done()
				return
			}
			io.WriteString(w, "data: after reconnect\n\n")
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var reason error
		c := NewClient(url, ClientConfig{IdleTimeout: 200 * time.Millisecond, Retry: 10 * time.Millisecond,
			OnRetry: func(err error, _ time.Duration) {
				if reason == nil {
					reason = err
				}
			}})
		evs, err := collect(t, c, ctx, 2)
		if err != nil || len(evs) != 2 || evs[1].Data != "after reconnect" {
			t.Fatalf("%v %v", evs, err)
		}
		var ne net.Error
		if !errors.As(reason, &ne) || !ne.Timeout() {
			t.Fatalf("reconnect reason = %v, want an idle timeout", reason)
		}
		rs.mu.Lock()
		defer rs.mu.Unlock()
		if rs.reqs[1].Get("Last-Event-ID") != "1" {
			t.Fatal("no Last-Event-ID after idle reconnect")
		}
	})
	t.Run("keepalive comments reset the idle timer", func(t *testing.T) {
		t.Parallel()
		rs, url := startReconnectServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
			rc := http.NewResponseController(w)
			for range 10 {
				io.WriteString(w, ": keepalive\n\n")
				rc.Flush()
				time.Sleep(50 * time.Millisecond)
			}
			io.WriteString(w, "data: still here\n\n")
			rc.Flush()
			<-r.Context().Done()
		})
		comments := 0
		c := NewClient(url, ClientConfig{IdleTimeout: 200 * time.Millisecond, OnComment: func(string) { comments++ }})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		evs, err := collect(t, c, ctx, 1)
		if err != nil || len(evs) != 1 {
			t.Fatalf("%v %v", evs, err)
		}
		rs.mu.Lock()
		defer rs.mu.Unlock()
		if len(rs.reqs) != 1 || comments != 10 {
			t.Fatalf("%d connections, %d comments; want 1 and 10", len(rs.reqs), comments)
		}
	})
}

func TestClientGzip(t *testing.T) {
	t.Parallel()
	srv := newServer(t, make(chan struct{}), func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept-Encoding") != "gzip" {
			t.Errorf("Accept-Encoding = %q", r.Header.Get("Accept-Encoding"))
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		for i := range 3 {
			fmt.Fprintf(zw, "data: zipped %d\n\n", i)
			zw.Flush()
		}
		zw.Close()
	})
	for _, hdr := range []http.Header{nil, {"Accept-Encoding": {"gzip"}}} {
		evs, err := collect(t, NewClient(srv.URL, ClientConfig{NoReconnect: true, Header: hdr}), context.Background(), 0)
		if err != nil || len(evs) != 3 || evs[2].Data != "zipped 2" {
			t.Fatalf("header %v: %v %v", hdr, evs, err)
		}
	}
}

func TestClientCleanEndOnCancel(t *testing.T) {
	t.Parallel()
	_, url := startReconnectServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "data: first\n\n")
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := NewClient(url, ClientConfig{})
	n := 0
	for ev, err := range c.Events(ctx) {
		if err != nil {
			t.Fatalf("error on cancel: %v", err)
		}
		n++
		if ev.Data == "first" {
			cancel()
		}
	}
	if n != 1 {
		t.Fatalf("%d events", n)
	}
	// Cancel during the reconnect wait ends at once, too.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	start := time.Now()
	for _, err := range NewClient("http://127.0.0.1:1", ClientConfig{Retry: time.Hour}).Events(ctx2) {
		t.Fatalf("unexpected %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancel took %v", d)
	}
}
