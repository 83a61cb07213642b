package tunnel

import "errors"

var (
	// ErrSessionClosed is returned by RoundTrip and the streams of a
	// session whose WebSocket is gone: the agent went offline.
	ErrSessionClosed = errors.New("tunnel: agent session closed")

	// ErrTooManyStreams is returned by RoundTrip when the session already
	// carries its maximum of concurrent streams.
	ErrTooManyStreams = errors.New("tunnel: too many concurrent streams")

	// ErrBodyTooLarge is returned by RoundTrip when a request body for a
	// plain Jetty agent (which takes whole bodies only) exceeds the limit.
	ErrBodyTooLarge = errors.New("tunnel: request body too large for this agent")

	// ErrBusy is returned by RoundTrip when a request body that must be
	// held whole (for a plain Jetty agent) does not fit in what is left of
	// the edge's Budget: the edge answers 503, and the client may retry.
	ErrBusy = errors.New("tunnel: the edge's buffer budget is spent")

	// ErrUpgradeUnsupported is returned by RoundTrip for an upgrade
	// request (WebSocket) when the agent did not announce the upgrade
	// feature.
	ErrUpgradeUnsupported = errors.New("tunnel: this agent cannot carry upgraded connections (WebSocket)")

	// ErrGRPCUnsupported is returned by RoundTrip for a gRPC request when
	// the agent did not announce both request_stream and trailers (a plain
	// Jetty agent): its answers would lose grpc-status, and streaming
	// calls would hang.
	ErrGRPCUnsupported = errors.New("tunnel: this agent cannot carry gRPC (it lacks the request_stream and trailers extensions)")

	// ErrNotTCP is returned by OpenTCP on a session whose agent did not
	// register a TCP tunnel (tunnel_type "tcp").
	ErrNotTCP = errors.New("tunnel: the agent did not register a TCP tunnel")

	// ErrNotUDP is returned by OpenUDP on a session whose agent did not
	// register a UDP tunnel (tunnel_type "udp").
	ErrNotUDP = errors.New("tunnel: the agent did not register a UDP tunnel")

	// ErrDatagramTooLarge is returned by WriteDatagram for a datagram
	// longer than MaxDatagram; nothing is sent (never truncated).
	ErrDatagramTooLarge = errors.New("tunnel: datagram too large")

	// ErrStreamReset ends a body whose peer cancelled it or broke the
	// protocol on it.
	ErrStreamReset = errors.New("tunnel: stream reset")

	// ErrFlowControl ends a stream whose peer sent more than its credit.
	ErrFlowControl = errors.New("tunnel: peer exceeded the flow-control window")

	// ErrPingTimeout ends a session whose ping could not be written within
	// the pong timeout: the peer stopped reading.
	ErrPingTimeout = errors.New("tunnel: ping not written within the pong timeout")
)

// UpstreamError ends a response body whose upstream failed mid-stream (an
// http_response_end with an error). The public client must see an abort,
// never a clean end.
type UpstreamError struct {
	Msg string
}

func (e *UpstreamError) Error() string { return "tunnel: upstream failed mid-body: " + e.Msg }

// PeerError is an error frame received from the peer during a session, such
// as the edge's "tunnel_replaced" when another agent took the tunnel over
// with the same credential. AgentSession.Serve returns it once the connection ends.
type PeerError struct {
	Code    string
	Message string
}

func (e *PeerError) Error() string { return "tunnel: peer error " + e.Code + ": " + e.Message }
