package sse

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// mustClient is NewClient for URLs that are valid.
func mustClient(t *testing.T, url string, cfg ClientConfig) *Client {
	t.Helper()
	c, err := NewClient(url, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

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
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, err := collect(t, mustClient(t, srv.URL, ClientConfig{Retry: time.Millisecond}), ctx, 0)
			if !c.check(err) {
				t.Fatalf("err = %v (%T), want %s", err, err, c.wantErr)
			}
			// Events has returned, so no request can follow.
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
		evs, err := collect(t, mustClient(t, srv.URL, ClientConfig{NoReconnect: true}), context.Background(), 0)
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
	c := mustClient(t, url, ClientConfig{
		Header:      http.Header{"X-Custom": {"kept"}, "Authorization": {"Bearer t"}},
		LastEventID: "start",
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	evs, err := collect(t, c, ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	want := []Event{
		{ID: "a", Type: "message", Data: "one"},
		{ID: "b", Type: "message", Data: "two"},
		{ID: "b", Type: "message", Data: "three"},
		{ID: "c", Type: "message", Data: "four"},
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
	// The server's retry: 300 ms is honoured: never sooner (the jitter
	// only adds; TestClientBackoffSequence checks it on a fake clock).
	for i := 1; i < 3; i++ {
		if gap := rs.times[i].Sub(rs.ends[i-1]); gap < 290*time.Millisecond {
			t.Errorf("reconnect %d after %v, want at least 300 ms", i, gap)
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
	evs, err := collect(t, mustClient(t, url, ClientConfig{NoReconnect: true}), context.Background(), 0)
	if err != nil || len(evs) != 1 {
		t.Fatalf("%v %v", evs, err)
	}
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
	_, err = collect(t, mustClient(t, "http://"+addr, ClientConfig{NoReconnect: true}), context.Background(), 0)
	var op *net.OpError
	if !errors.As(err, &op) {
		t.Fatalf("err = %v, want a connection error", err)
	}
}

// blockingTransport answers no request: it waits for the request's context.
type blockingTransport struct{}

func (blockingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	<-r.Context().Done()
	return nil, r.Context().Err()
}

func TestClientTimeouts(t *testing.T) {
	t.Parallel()
	t.Run("response header timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			start := time.Now()
			c := mustClient(t, "http://sse.test/", ClientConfig{HTTPClient: &http.Client{Transport: blockingTransport{}}, NoReconnect: true, ResponseHeaderTimeout: 200 * time.Millisecond})
			_, err := collect(t, c, t.Context(), 0)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("err = %v, want a net.Error timeout", err)
			}
			if d := time.Since(start); d != 200*time.Millisecond {
				t.Fatalf("timeout after %v, want 200ms", d)
			}
		})
	})
	t.Run("idle timeout reconnects", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			pt := &pipeTransport{handle: func(n int, r *http.Request, w io.Writer) {
				if n == 0 {
					io.WriteString(w, "id: 1\ndata: then silence\n\n")
					<-r.Context().Done()
					return
				}
				io.WriteString(w, "data: after reconnect\n\n")
				<-r.Context().Done()
			}}
			var reason error
			c := mustClient(t, "http://sse.test/", ClientConfig{HTTPClient: pt.client(), IdleTimeout: 200 * time.Millisecond, Retry: 10 * time.Millisecond,
				OnRetry: func(err error, _ time.Duration) {
					if reason == nil {
						reason = err
					}
				}})
			evs, err := collect(t, c, t.Context(), 2)
			if err != nil || len(evs) != 2 || evs[1].Data != "after reconnect" {
				t.Fatalf("%v %v", evs, err)
			}
			var ne net.Error
			if !errors.As(reason, &ne) || !ne.Timeout() {
				t.Fatalf("reconnect reason = %v, want an idle timeout", reason)
			}
			// The first connection was dropped 200 ms after its last byte,
			// then the client waited 10 ms plus up to 100 ms of jitter.
			if gaps := pt.gaps(); len(gaps) != 1 || gaps[0] < 210*time.Millisecond || gaps[0] > 310*time.Millisecond {
				t.Fatalf("reconnected after %v, want 200 ms idle plus 10–110 ms", gaps)
			}
			if pt.reqs[1].Header.Get("Last-Event-ID") != "1" {
				t.Fatal("no Last-Event-ID after idle reconnect")
			}
			pt.wg.Wait()
		})
	})
	t.Run("keepalive comments reset the idle timer", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			pt := &pipeTransport{handle: func(n int, r *http.Request, w io.Writer) {
				for range 10 {
					io.WriteString(w, ": keepalive\n\n")
					time.Sleep(150 * time.Millisecond)
				}
				io.WriteString(w, "data: still here\n\n")
				<-r.Context().Done()
			}}
			comments := 0
			c := mustClient(t, "http://sse.test/", ClientConfig{HTTPClient: pt.client(), IdleTimeout: 200 * time.Millisecond, OnComment: func(string) { comments++ }})
			evs, err := collect(t, c, t.Context(), 1)
			if err != nil || len(evs) != 1 {
				t.Fatalf("%v %v", evs, err)
			}
			if pt.requests() != 1 || comments != 10 {
				t.Fatalf("%d connections, %d comments; want 1 and 10", pt.requests(), comments)
			}
			pt.wg.Wait()
		})
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
		evs, err := collect(t, mustClient(t, srv.URL, ClientConfig{NoReconnect: true, Header: hdr}), context.Background(), 0)
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
	c := mustClient(t, url, ClientConfig{})
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
}

// Cancel during the reconnect wait ends the iteration at once, cleanly.
func TestClientCancelDuringWait(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		pt := &pipeTransport{handle: func(int, *http.Request, io.Writer) {}} // every stream ends at once
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		for _, err := range mustClient(t, "http://sse.test/", ClientConfig{HTTPClient: pt.client(), Retry: time.Hour}).Events(ctx) {
			t.Fatalf("unexpected %v", err)
		}
		if d := time.Since(start); d != 100*time.Millisecond {
			t.Fatalf("cancel took %v, want 100ms", d)
		}
		pt.wg.Wait()
	})
}

func TestNewClientInvalidURL(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "localhost:8080/events", "ftp://example.com/", "http://", "http:///path", "/events", "http://a b/", "%zz"} {
		c, err := NewClient(u, ClientConfig{})
		if !errors.Is(err, ErrInvalidURL) || c != nil {
			t.Errorf("NewClient(%q) = %v, %v; want ErrInvalidURL", u, c, err)
		}
	}
	for _, u := range []string{"http://127.0.0.1:8080/events", "https://example.com", "HTTP://EXAMPLE.COM/x?y=1"} {
		if _, err := NewClient(u, ClientConfig{}); err != nil {
			t.Errorf("NewClient(%q) = %v", u, err)
		}
	}
}

// A POST stream, as language-model APIs serve: method, headers and body are
// sent on every connection, the body again through GetBody, and
// Last-Event-ID is added on reconnect.
func TestRequestClientPost(t *testing.T) {
	t.Parallel()
	type seen struct {
		method, body, ctype, auth, lastID, accept string
	}
	var mu sync.Mutex
	var reqs []seen
	srv := newServer(t, make(chan struct{}), func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		n := len(reqs)
		reqs = append(reqs, seen{r.Method, string(body), r.Header.Get("Content-Type"), r.Header.Get("Authorization"), r.Header.Get("Last-Event-ID"), r.Header.Get("Accept")})
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "id: %d\ndata: {\"token\":\"t%d\"}\n\n", n+1, n)
	})
	const prompt = `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/chat", strings.NewReader(prompt))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer key")
	c, err := NewRequestClient(req, ClientConfig{Retry: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	evs, err := collect(t, c, t.Context(), 3)
	if err != nil || len(evs) != 3 || evs[2].Data != `{"token":"t2"}` {
		t.Fatalf("%v %v", evs, err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, r := range reqs[:3] {
		want := seen{"POST", prompt, "application/json", "Bearer key", "", "text/event-stream"}
		if i > 0 {
			want.lastID = fmt.Sprint(i)
		}
		if r != want {
			t.Errorf("request %d = %+v, want %+v", i, r, want)
		}
	}
}

// A body without GetBody is sent once: where the client would reconnect,
// it stops with ErrBodyNotReplayable; with NoReconnect it just ends.
func TestRequestClientBodyWithoutGetBody(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	srv := newServer(t, make(chan struct{}), func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "data: %s\n\n", body)
	})
	for _, noReconnect := range []bool{false, true} {
		requests.Store(0)
		req, err := http.NewRequest(http.MethodPost, srv.URL, io.NopCloser(strings.NewReader("once")))
		if err != nil {
			t.Fatal(err)
		}
		c, err := NewRequestClient(req, ClientConfig{Retry: time.Millisecond, NoReconnect: noReconnect})
		if err != nil {
			t.Fatal(err)
		}
		evs, err := collect(t, c, t.Context(), 0)
		if len(evs) != 1 || evs[0].Data != "once" {
			t.Fatalf("NoReconnect %v: events %v", noReconnect, evs)
		}
		if noReconnect && err != nil || !noReconnect && !errors.Is(err, ErrBodyNotReplayable) {
			t.Fatalf("NoReconnect %v: err = %v", noReconnect, err)
		}
		if n := requests.Load(); n != 1 {
			t.Fatalf("NoReconnect %v: %d requests, want 1", noReconnect, n)
		}
	}
}

func TestNewRequestClientInvalid(t *testing.T) {
	t.Parallel()
	if _, err := NewRequestClient(nil, ClientConfig{}); !errors.Is(err, ErrInvalidURL) {
		t.Errorf("nil request: %v", err)
	}
	req, _ := http.NewRequest(http.MethodPost, "/relative", nil)
	if _, err := NewRequestClient(req, ClientConfig{}); !errors.Is(err, ErrInvalidURL) {
		t.Errorf("relative URL: %v", err)
	}
}
