// Package tunnel carries HTTP requests between an edge and an agent over
// one WebSocket, in protocol v1 or v2.
//
// Both ends speak plain net/http. On the edge, Accept runs the handshake
// (register, the edge's Authorize callback, registered or a refusal) and
// returns a Session, already open: an http.RoundTripper, so the edge's
// public handler is a reverse proxy whose Transport is the session. On the
// agent, Dial connects and registers, and AgentSession.Serve runs an
// http.Handler (the local reverse proxy) for every request that arrives.
// No request can precede registered: a session is handed out only open,
// and holds requests routed to it while registered is being sent.
//
// The files say which protocol they belong to:
//
//   - handshake.go: Accept, Dial, the register/registered exchange.
//   - session.go: the Session interface and the lifecycle both protocols
//     share (the open gate, streams in flight, retire, close).
//   - liveness.go: pings and the pong timeout, the same for both.
//   - v1_*.go: protocol v1, the wire package's JSON frames (the Jetty
//     agent protocol) with the streaming extensions (request_stream,
//     window, cancel, multi_value_headers, trailers, upgrade) when the peer
//     announces them. Flow control (the window feature): each side may
//     send a stream's body bytes only up to the credit the other side
//     granted, starting at V1Config.Window and refilled by window_update
//     frames as the receiver's consumer reads, so a slow reader fills only
//     its own stream's buffer. Without the feature (a plain Jetty agent),
//     the edge buffers up to a bound per stream and then stops reading the
//     connection: back-pressure on the whole tunnel, the reason protocol v2
//     exists.
//   - v2_*.go, h2client*.go (the edge's HTTP/2 client), h2server*.go (the
//     agent's HTTP/2 server) and wsconn.go: protocol v2, HTTP/2 (framing and
//     HPACK from golang.org/x/net/http2) over the WebSocket's binary
//     messages; each request an HTTP/2 stream with its own window.
//   - upgrade.go: WebSocket passthrough over both.
package tunnel
