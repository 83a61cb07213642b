// Package tunnel carries HTTP requests between an edge and an agent over
// one WebSocket.
//
// Both ends speak plain net/http: on the edge, an *EdgeSession is an
// http.RoundTripper, so the edge's public handler is a reverse proxy whose
// Transport is the session; on the agent, ServeAgent runs an http.Handler
// (the local reverse proxy) for every request that arrives. What crosses the
// WebSocket is protocol v1 here: the wire package's JSON frames, with the
// streaming extensions (request_stream, window, cancel, multi_value_headers,
// trailers) when the peer announces them.
//
// Flow control (the window feature): each side may send a stream's body
// bytes only up to the credit the other side granted, starting at
// DefaultWindow and refilled by window_update frames as the receiver's
// consumer reads, so a slow reader fills only its own stream's buffer.
// Without the feature (a plain Jetty agent), the edge buffers up to a bound
// per stream and then stops reading the connection: back-pressure on the
// whole tunnel, the reason protocol v2 exists.
package tunnel
