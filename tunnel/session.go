package tunnel

import (
	"context"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/wire"
)

// Session is the edge's end of one agent connection, whatever its protocol:
// an http.RoundTripper whose responses stream. EdgeSession speaks protocol
// v1, MuxSession protocol v2.
type Session interface {
	http.RoundTripper
	// Open sends the agent its registered frame within timeout and lets
	// requests through; RoundTrip waits for it.
	Open(registered *wire.Frame, timeout time.Duration) error
	// Run serves the connection until it fails, ctx ends or Close is
	// called, and returns why it ended.
	Run(ctx context.Context) error
	// Done is closed when the session is over.
	Done() <-chan struct{}
	// Streams is the number of requests in flight.
	Streams() int
	// Retire tells the agent why it is being let go (an error frame with
	// code and message), lets the requests in flight finish until ctx
	// ends, then closes the session.
	Retire(ctx context.Context, code, message string)
	// Close ends the session at once; it is idempotent.
	Close() error
	// Protocol is "v1" or "v2".
	Protocol() string
}

// Subprotocol is the WebSocket subprotocol of protocol v2. An agent that
// offers it to an edge that accepts it speaks v2 after registration; without
// it, the connection speaks v1.
const Subprotocol = "sluice.v2"

// Protocol returns "v1".
func (s *EdgeSession) Protocol() string { return "v1" }

var _ Session = (*EdgeSession)(nil)
