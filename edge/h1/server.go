package h1

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/sse"
)

// Server serves the HTTP/1.1 requests Lean accepts on connections of its
// own and hands every other connection, at the request Lean refused (its
// bytes included), to Fallback. Its methods are safe to call concurrently.
type Server struct {
	// Handler serves the requests served here.
	Handler http.Handler
	// Lean reports whether a request, parsed and found well-formed, is
	// served here. It sees the request before its context and body are
	// set; it must not read the body.
	Lean func(*http.Request) bool
	// Fallback serves the connections handed to it, through a listener
	// of Server's own (Serve runs Fallback.Serve); Shutdown and Close shut
	// it down too. Its ErrorLog gets the panics of Handler.
	Fallback *http.Server
	// ReadHeaderTimeout bounds the reading of a request's head, from its
	// first byte (a new connection: from its accept). Zero: none.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that sends no next
	// request for this long. Zero: ReadHeaderTimeout.
	IdleTimeout time.Duration

	mu       sync.Mutex
	ln       net.Listener
	handoff  *handoffListener
	fallback chan struct{} // closed when Fallback.Serve returned
	conns    map[*conn]struct{}
	stopping atomic.Bool    // set under mu
	wg       sync.WaitGroup // the connections' goroutines
	baseCtx  context.Context
}

// ErrServing is returned by Serve called a second time.
var ErrServing = errors.New("h1: the server is serving already")

// acceptBackoff paces Accept after a temporary error (out of file
// descriptors), as net/http's server does.
var acceptBackoff = sse.Backoff{Initial: 5 * time.Millisecond, Max: time.Second}

// Serve accepts connections on ln until Shutdown or Close, which make it
// return http.ErrServerClosed (at once if they came first), or until
// Accept fails.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.stopping.Load() {
		s.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	if s.ln != nil {
		s.mu.Unlock()
		return ErrServing
	}
	s.ln = ln
	s.handoff = &handoffListener{addr: ln.Addr(), ch: make(chan net.Conn), done: make(chan struct{})}
	s.fallback = make(chan struct{})
	s.conns = make(map[*conn]struct{})
	s.baseCtx = context.WithValue(context.Background(), http.ServerContextKey, s.Fallback)
	s.mu.Unlock()
	go func() {
		defer close(s.fallback)
		s.Fallback.Serve(s.handoff) // it ends when Shutdown or Close closes s.handoff
	}()

	failures := 0
	for {
		rwc, err := ln.Accept()
		if err != nil {
			if s.isStopping() {
				return http.ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Temporary() { //nolint:staticcheck // as net/http: EMFILE and the like
				failures++
				time.Sleep(acceptBackoff.Ceiling(failures))
				continue
			}
			s.Close()
			return err
		}
		failures = 0
		c := s.newConn(rwc)
		if c == nil {
			rwc.Close() // shutting down
			continue
		}
		go c.serve()
	}
}

// newConn tracks a new connection; nil once the server is stopping.
func (s *Server) newConn(rwc net.Conn) *conn {
	now := time.Now()
	c := &conn{s: s, rwc: rwc, since: now, headFrom: now}
	c.bgCond.L = &c.bgMu
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping.Load() {
		return nil
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return c
}

// forget ends the tracking of c (closed, or handed to Fallback).
func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

func (s *Server) isStopping() bool { return s.stopping.Load() }

// stop marks the server stopping and closes its listeners, once.
func (s *Server) stop() (started bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	first := !s.stopping.Swap(true)
	if first && s.ln != nil {
		s.ln.Close()
		s.handoff.close()
	}
	return s.ln != nil
}

// shutdownPoll is how often Shutdown looks for connections that went
// idle.
const shutdownPoll = 10 * time.Millisecond

// newConnGrace is how long Shutdown waits for a new connection's first
// request (as net/http's server: 5 s) before it counts as idle.
const newConnGrace = 5 * time.Second

// Shutdown stops accepting, closes idle connections, and waits for the
// requests in flight here and at Fallback until ctx ends (then it returns
// ctx's error; Close ends the rest).
func (s *Server) Shutdown(ctx context.Context) error {
	started := s.stop()
	fb := make(chan error, 1)
	go func() { fb <- s.Fallback.Shutdown(ctx) }()
	t := time.NewTicker(shutdownPoll)
	defer t.Stop()
	for !s.closeIdle() {
		select {
		case <-ctx.Done():
			<-fb
			return ctx.Err()
		case <-t.C:
		}
	}
	err := <-fb
	if started {
		<-s.fallback
	}
	return err
}

// closeIdle closes the connections that wait for a request and reports
// whether none is left.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.idleFor(newConnGrace) {
			c.rwc.Close()
		}
	}
	return len(s.conns) == 0
}

// Close closes the listener and every connection, here and at Fallback,
// and returns once the connections' goroutines have ended.
func (s *Server) Close() error {
	started := s.stop()
	s.mu.Lock()
	for c := range s.conns {
		c.rwc.Close()
	}
	s.mu.Unlock()
	err := s.Fallback.Close()
	s.wg.Wait()
	if started {
		<-s.fallback
	}
	return err
}

// handoffListener is the listener Fallback serves: it accepts the
// connections Server hands over.
type handoffListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func (l *handoffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *handoffListener) Close() error { l.close(); return nil }

func (l *handoffListener) close() { l.once.Do(func() { close(l.done) }) }

func (l *handoffListener) Addr() net.Addr { return l.addr }

// hand gives c to Fallback; false (c closed) once it stopped accepting.
func (l *handoffListener) hand(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		c.Close()
		return false
	}
}

// prefixConn is a connection whose first bytes were read already: they
// are read again first.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite lets net/http's server half-close (its reset avoidance).
func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// tlsPrefixConn is a prefixConn over TLS: net/http's server gives its
// requests the connection's TLS state (Request.TLS) from
// ConnectionState, as for a *tls.Conn.
type tlsPrefixConn struct {
	prefixConn
	state *tls.ConnectionState
}

func (c *tlsPrefixConn) ConnectionState() tls.ConnectionState { return *c.state }
