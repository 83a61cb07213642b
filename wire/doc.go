// Package wire defines the frames that cross an agent's WebSocket in
// protocol v1 (JSON text messages, compatible with the Jetty tunnel's agent
// protocol) and their codec.
//
// The codec is hand-written: data-carrying frames (http_request_chunk,
// http_response_chunk, tcp_data) are appended byte by byte with
// base64.AppendEncode and decoded with base64.AppendDecode into a reused
// buffer, which is 15-20 times faster than encoding/json with base64 strings.
// The decoder accepts what Jetty agents send: header values as strings or
// arrays of strings, escaped slashes ("\/") as PHP's json_encode writes them,
// numbers or strings for ids. docs/protocol.md describes the frames for
// people writing agents in other languages.
//
// The package uses only the standard library and never logs.
package wire
