package sse

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for StreamConfig's zero values.
const (
	DefaultKeepAlive    = 15 * time.Second
	DefaultBufferSize   = 16 << 20
	DefaultCloseTimeout = 5 * time.Second
)

// SlowClientPolicy says what a Stream does when its client reads more slowly
// than events are sent and the stream's buffer is full.
type SlowClientPolicy int

const (
	// Block makes Send wait until the client has read enough to make room
	// (back-pressure on the sender), or until Send's context ends.
	Block SlowClientPolicy = iota
	// Disconnect ends the stream with ErrSlowClient and closes the client's
	// connection. The Hub uses it: one slow client never holds up others.
	Disconnect
)

// StreamConfig configures a Stream. The zero value means the defaults.
type StreamConfig struct {
	// KeepAlive is the interval of the ": keepalive" comments written while
	// no event is sent, so that proxies and clients with idle timeouts keep
	// the connection. Zero means DefaultKeepAlive (15 s); negative disables.
	KeepAlive time.Duration

	// BufferSize bounds the bytes of events sent but not yet written to the
	// client. Zero means DefaultBufferSize (16 MiB). One event larger than
	// the whole buffer is still accepted when the buffer is empty.
	BufferSize int

	// SlowClient says what happens when the buffer is full: Block (the
	// default) or Disconnect.
	SlowClient SlowClientPolicy

	// Retry, if positive, is sent first as the client's reconnection time.
	Retry time.Duration

	// CloseTimeout bounds how long Close waits for buffered events to reach
	// a client that does not read. Zero means DefaultCloseTimeout (5 s).
	CloseTimeout time.Duration
}

// closeGrace is how long Close waits, after CloseTimeout, for a write
// interrupted by its deadline to return.
const closeGrace = time.Second

// Stream is one server-side event stream on an http.ResponseWriter.
//
// NewStream writes and flushes the response headers at once. Events are
// queued in a bounded buffer and written by the stream's own goroutine, which
// flushes after each write and sends keepalive comments when idle, so Send
// never waits on the network unless the buffer is full and the policy is
// Block.
//
// The handler that created the Stream must call Close before it returns; the
// ResponseWriter is not touched after Close returns.
//
// Send, Comment, Done, Err, LastEventID and Close are safe for concurrent use.
type Stream struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	cfg StreamConfig
	ctx context.Context // the request's

	mu       sync.Mutex
	pending  []byte        // queued, not yet handed to the writer
	spare    []byte        // the writer's last buffer, for reuse
	inflight int           // bytes the writer is writing now
	room     chan struct{} // closed and replaced when bytes were written
	err      error         // why the stream ended; nil while open
	closing  bool

	wake     chan struct{} // cap 1: there is something to write
	closeReq chan struct{} // closed by Close
	failed   chan struct{} // closed when err is set
	done     chan struct{} // closed when the writer goroutine has exited
	lastID   string
	once     sync.Once

	// Set by Close: whether the writer's writes can be interrupted by a
	// deadline, and whether Close gave up on a writer that could not be.
	interruptible bool
	abandoned     atomic.Bool
}

// NewStream turns w into an event stream for r: it sets Content-Type:
// text/event-stream, Cache-Control: no-cache and X-Accel-Buffering: no,
// writes status 200 and flushes at once, before any event exists. Flushing
// goes through http.ResponseController, so middleware that wraps the
// ResponseWriter works as long as it has an Unwrap method.
//
// It returns ErrNotFlushable if w cannot flush; the handler should then
// return.
func NewStream(w http.ResponseWriter, r *http.Request, cfg StreamConfig) (*Stream, error) {
	s := newStream(w, r, cfg)
	if err := s.start(); err != nil {
		return nil, err
	}
	go s.writeLoop()
	return s, nil
}

// newStream sets a stream up without any I/O; events may be queued before
// start writes the headers.
func newStream(w http.ResponseWriter, r *http.Request, cfg StreamConfig) *Stream {
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	if cfg.BufferSize <= 0 {
		cfg.BufferSize = DefaultBufferSize
	}
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = DefaultCloseTimeout
	}
	return &Stream{
		w:        w,
		rc:       http.NewResponseController(w),
		cfg:      cfg,
		ctx:      r.Context(),
		room:     make(chan struct{}),
		wake:     make(chan struct{}, 1),
		closeReq: make(chan struct{}),
		failed:   make(chan struct{}),
		done:     make(chan struct{}),
		lastID:   r.Header.Get("Last-Event-ID"),
	}
}

// start writes and flushes the headers. The caller then runs writeLoop, on
// a goroutine of its own or its own goroutine. When start fails, the stream
// is ended and Close returns at once.
func (s *Stream) start() error {
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	if h.Get("Cache-Control") == "" {
		h.Set("Cache-Control", "no-cache") // a handler may ask for more, such as no-transform
	}
	h.Set("X-Accel-Buffering", "no")
	h.Del("Content-Length")
	s.w.WriteHeader(http.StatusOK)
	var err error
	if s.cfg.Retry > 0 {
		_, err = s.w.Write(append(appendRetry(nil, s.cfg.Retry), '\n'))
	}
	if err == nil {
		err = s.rc.Flush()
	}
	if errors.Is(err, http.ErrNotSupported) {
		err = ErrNotFlushable
	}
	if err != nil {
		s.mu.Lock()
		s.failLocked(err)
		s.mu.Unlock()
		close(s.done)
		return err
	}
	return nil
}

// LastEventID returns the request's Last-Event-ID header: the id of the last
// event a reconnecting client received, or "".
func (s *Stream) LastEventID() string { return s.lastID }

// Done is closed when the stream has ended: the client went away, a write
// failed, the client was too slow under the Disconnect policy, or Close was
// called.
func (s *Stream) Done() <-chan struct{} { return s.failed }

// Err returns why the stream ended, or nil while it is open. It is
// ErrClientGone, ErrSlowClient, ErrStreamClosed after Close, or a write
// error.
func (s *Stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Send queues one event. It returns an encoding error (ErrInvalidID,
// ErrInvalidType) without ending the stream, or the stream's error once it
// has ended. When the buffer is full, it waits under the Block policy (until
// ctx ends, returning ctx's error) and ends the stream under Disconnect.
func (s *Stream) Send(ctx context.Context, e Event) error {
	b, err := AppendEvent(nil, e)
	if err != nil {
		return err
	}
	return s.enqueue(ctx, b)
}

// SendEncoded queues an event already encoded with AppendEvent: a server
// that sends one event to many streams encodes it once. b is copied.
func (s *Stream) SendEncoded(ctx context.Context, b []byte) error {
	return s.enqueue(ctx, b)
}

// Comment queues a comment (it dispatches nothing on the client).
func (s *Stream) Comment(ctx context.Context, text string) error {
	return s.enqueue(ctx, AppendComment(nil, text))
}

// enqueue appends encoded bytes to the buffer, applying the slow-client
// policy.
func (s *Stream) enqueue(ctx context.Context, b []byte) error {
	s.mu.Lock()
	for {
		full, err := s.admitLocked(len(b))
		if err != nil {
			s.mu.Unlock()
			return err
		}
		if !full {
			break
		}
		room := s.room
		s.mu.Unlock()
		select {
		case <-room:
		case <-s.failed:
		case <-ctx.Done():
			return ctx.Err()
		}
		s.mu.Lock()
	}
	s.appendLocked(b)
	return nil
}

// tryEnqueue is enqueue under the Disconnect policy for callers that hold
// other locks (the hub): it never waits. It reports whether b was queued.
func (s *Stream) tryEnqueue(b []byte) bool {
	s.mu.Lock()
	full, err := s.admitLocked(len(b))
	if err == nil && full {
		s.failLocked(ErrSlowClient)
		err = ErrSlowClient
	}
	if err != nil {
		s.mu.Unlock()
		return false
	}
	s.appendLocked(b)
	return true
}

// admitLocked says whether n more bytes find room in the buffer, and
// returns the stream's error if it has ended. Under the Disconnect policy a
// full buffer ends the stream. The caller holds s.mu.
func (s *Stream) admitLocked(n int) (full bool, err error) {
	switch {
	case s.err != nil:
		return false, s.err
	case s.closing:
		return false, ErrStreamClosed
	}
	queued := len(s.pending) + s.inflight
	if queued == 0 || queued+n <= s.cfg.BufferSize {
		return false, nil
	}
	if s.cfg.SlowClient == Disconnect {
		s.failLocked(ErrSlowClient)
		return false, ErrSlowClient
	}
	return true, nil
}

// appendLocked queues b, unlocks s.mu and wakes the writer.
func (s *Stream) appendLocked(b []byte) {
	s.pending = append(s.pending, b...)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// failLocked ends the stream with err. The caller holds s.mu.
func (s *Stream) failLocked(err error) {
	if s.err != nil {
		return
	}
	s.err = err
	close(s.failed)
	if err == ErrSlowClient || s.inflight > 0 {
		// Unblock a write stuck on the client (only another goroutine
		// than the writer can see one in flight); the connection is then
		// closed by the server when the handler returns.
		_ = s.rc.SetWriteDeadline(time.Now())
	}
}

// Close stops the stream: events already queued are written (for at most
// CloseTimeout), the writer goroutine exits, and Close returns once it has.
// It returns nil if the stream ended cleanly, or the error that ended it.
// It is idempotent.
//
// Close never waits much past CloseTimeout, even for a write that started
// before it on a client that stopped reading: it sets a write deadline
// through http.ResponseController, which interrupts the write (Close then
// waits up to a second more for it to return). A ResponseWriter without
// write deadlines (a wrapper with no Unwrap method) cannot be interrupted:
// Close then returns ErrCloseTimeout after CloseTimeout, and the writer
// goroutine stays blocked in that one Write until it returns, and touches
// the ResponseWriter no more after it. The handler must not return while
// a Write is blocked, so such a writer is best avoided.
func (s *Stream) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		select {
		case <-s.done:
		default:
			// Bound the queued writes, and a write already blocked.
			s.interruptible = s.rc.SetWriteDeadline(time.Now().Add(s.cfg.CloseTimeout)) == nil
		}
		close(s.closeReq)
	})
	wait := s.cfg.CloseTimeout
	if s.interruptible {
		wait += closeGrace
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
		s.mu.Lock()
		select {
		case <-s.done:
		default:
			s.abandoned.Store(true)
			s.failLocked(ErrCloseTimeout)
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == ErrStreamClosed {
		return nil
	}
	return s.err
}

func (s *Stream) writeLoop() {
	defer close(s.done)
	var keepalive <-chan time.Time
	var timer *time.Timer
	if s.cfg.KeepAlive > 0 {
		timer = time.NewTimer(s.cfg.KeepAlive)
		defer timer.Stop()
		keepalive = timer.C
	}
	for {
		closing := false
		select {
		case <-s.wake:
		case <-keepalive:
			s.mu.Lock()
			s.pending = append(s.pending, ": keepalive\n\n"...)
			s.mu.Unlock()
		case <-s.ctx.Done():
			s.mu.Lock()
			s.failLocked(ErrClientGone)
			s.mu.Unlock()
			return
		case <-s.failed:
			return
		case <-s.closeReq:
			closing = true // Close has set the write deadline
		}
		if !s.flushPending() {
			return
		}
		if closing {
			_ = s.rc.SetWriteDeadline(time.Time{})
			s.mu.Lock()
			s.failLocked(ErrStreamClosed)
			s.mu.Unlock()
			return
		}
		if timer != nil {
			timer.Reset(s.cfg.KeepAlive)
		}
	}
}

// flushPending writes and flushes everything queued, in as few writes as the
// senders allow. It reports false when the stream failed.
func (s *Stream) flushPending() bool {
	for {
		s.mu.Lock()
		if s.err != nil {
			s.mu.Unlock()
			return false
		}
		buf := s.pending
		if len(buf) == 0 {
			s.mu.Unlock()
			return true
		}
		s.pending = s.spare[:0]
		s.inflight = len(buf)
		s.mu.Unlock()

		_, err := s.w.Write(buf)
		if s.abandoned.Load() {
			return false // Close gave up on this write: hands off w
		}
		if err == nil {
			err = s.rc.Flush()
		}

		s.mu.Lock()
		s.inflight = 0
		if cap(buf) > 64<<10 {
			buf = nil // let a burst's buffer go
		}
		s.spare = buf[:0]
		close(s.room)
		s.room = make(chan struct{})
		if err != nil {
			if s.ctx.Err() != nil {
				err = ErrClientGone
			}
			s.failLocked(err)
			s.mu.Unlock()
			return false
		}
		s.mu.Unlock()
	}
}
