package tunnel

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

// Session is the edge's end of one agent connection, whatever its protocol:
// an http.RoundTripper whose responses stream. Accept returns one, already
// open. All methods are safe for concurrent use.
type Session interface {
	http.RoundTripper
	// Run serves the connection until it fails, ctx ends or Close is
	// called, and returns why it ended. RoundTrip needs Run running to
	// get answers.
	Run(ctx context.Context) error
	// Done is closed when the session is over.
	Done() <-chan struct{}
	// Streams is the number of requests in flight.
	Streams() int
	// Retire tells the agent why it is being let go (an error frame with
	// code and message), lets the requests in flight finish until ctx
	// ends, then closes the session. New requests should no longer be
	// routed to it.
	Retire(ctx context.Context, code, message string)
	// Close ends the session at once and returns once Run and the
	// session's goroutines have finished; it is idempotent.
	Close() error
	// Protocol is "v1" or "v2".
	Protocol() string
	// OpenTCP opens a stream to the agent for a public TCP connection
	// from remoteAddr, counted with the requests in the stream limit: it
	// fails with ErrTooManyStreams, ErrSessionClosed, or ErrNotTCP when
	// the agent did not register a TCP tunnel. The agent's failure to
	// connect reaches the stream's Read as an error carrying its reason.
	// The caller must Close the stream.
	OpenTCP(ctx context.Context, remoteAddr string) (Stream, error)
	// OpenUDP opens a datagram stream to the agent for the UDP session of
	// remoteAddr, counted with the requests in the stream limit: it fails
	// like OpenTCP, with ErrNotUDP when the agent did not register a UDP
	// tunnel. The caller must Close it.
	OpenUDP(ctx context.Context, remoteAddr string) (Datagrams, error)
}

// Stream is one TCP connection through the tunnel, at the edge. Read gets
// the agent's bytes: io.EOF once the agent's side finished writing, an
// error wrapping ErrStreamReset when the connection broke (the agent reset
// it, could not connect, or the session ended), never io.EOF for a
// broken connection. Write sends to the agent within its flow-control
// window. CloseWrite says this side finished writing (a half-close); Close
// ends both ways, resetting the connection at the agent if it was not
// finished. Read may run concurrently with Write, CloseWrite and Close.
type Stream interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// Protocol names, as Session.Protocol and AgentSession.Protocol give them.
const (
	ProtocolV1 = "v1"
	ProtocolV2 = "v2"
)

// Subprotocol is the WebSocket subprotocol of protocol v2. An agent that
// offers it to an edge that accepts it speaks v2 after registration; without
// it, the connection speaks v1.
const Subprotocol = "sluice.v2"

// lifecycle is what the edge's sessions of both protocols share: the gate
// that holds requests until registered went out, the done channel, the
// count of streams in flight (bounded), closing once, and retirement,
// which is signalled when the last stream ends rather than polled. Its
// methods are safe for concurrent use.
type lifecycle struct {
	close     func()        // closes the connection; called once, by shutdown
	ready     chan struct{} // closed by Accept once registered is out
	done      chan struct{}
	closeOnce sync.Once
	runDone   chan struct{}
	started   atomic.Bool

	mu      sync.Mutex // guards streams and idle
	streams int
	idle    chan struct{} // made by waitIdle, closed when streams reaches 0
}

func newLifecycle(close func()) lifecycle {
	return lifecycle{close: close, ready: make(chan struct{}), done: make(chan struct{}), runDone: make(chan struct{})}
}

// opened lets requests through; only Accept calls it, after registered.
func (l *lifecycle) opened() { close(l.ready) }

// waitOpen holds a request until the session is open. It fails if the
// session ends first, or the request's context ends (then nothing of the
// request goes out).
func (l *lifecycle) waitOpen(ctx context.Context) error {
	select {
	case <-l.ready:
		// Open (nearly always): ctx.Done is not asked for, as it makes
		// the context's channel (an allocation per request).
	default:
		select {
		case <-l.ready:
		case <-l.done:
		case <-ctx.Done():
		}
	}
	select {
	case <-l.done:
		return ErrSessionClosed
	default:
	}
	return ctx.Err()
}

// Done is closed when the session is over.
func (l *lifecycle) Done() <-chan struct{} { return l.done }

// Streams returns the number of requests in flight.
func (l *lifecycle) Streams() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.streams
}

// acquire counts a new stream, unless the session is over or already
// carries max streams.
func (l *lifecycle) acquire(max int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.done:
		return ErrSessionClosed
	default:
	}
	if l.streams >= max {
		return ErrTooManyStreams
	}
	l.streams++
	return nil
}

// release uncounts a stream that acquire counted.
func (l *lifecycle) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.streams--
	if l.streams == 0 && l.idle != nil {
		close(l.idle)
		l.idle = nil
	}
}

// shutdown marks the session over and closes its connection, once.
func (l *lifecycle) shutdown() {
	l.closeOnce.Do(func() {
		close(l.done)
		l.close()
	})
}

// running marks Run as started; Run must close runDone when it returns.
func (l *lifecycle) running() { l.started.Store(true) }

// Close ends the session and waits for Run to return, if it was started.
func (l *lifecycle) Close() error {
	l.shutdown()
	if l.started.Load() {
		<-l.runDone
	}
	return nil
}

// retire sends the agent its error frame (through send), waits until no
// stream is in flight, the session ends or ctx ends, then closes.
func (l *lifecycle) retire(ctx context.Context, send func()) {
	send()
	l.mu.Lock()
	var idle chan struct{}
	if l.streams > 0 {
		if l.idle == nil {
			l.idle = make(chan struct{})
		}
		idle = l.idle
	}
	l.mu.Unlock()
	if idle != nil {
		select {
		case <-idle:
		case <-l.done:
		case <-ctx.Done():
		}
	}
	l.Close()
}
