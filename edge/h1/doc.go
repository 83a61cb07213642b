// Package h1 is the edge's own HTTP/1.1 server for the requests that make
// up a tunnel's traffic, in front of net/http's server, which serves
// everything else.
//
// net/http's server holds 4 KiB read and 4 KiB write buffers per
// connection, and a 2 KiB one per response, for as long as a request
// runs: a held event stream keeps 10 KiB of buffers that carry one event a
// second. It also costs most of the edge's CPU per small request. This
// server holds a pooled buffer only while a head is read or bytes wait to
// go out, and writes the head and the first body bytes in one write.
//
// TLS connections are served too: the handshake as net/http's server does
// it; a connection whose ALPN chose HTTP/2 goes to net/http's server after
// it, and the requests handed over keep the connection's TLS state.
//
// It serves only what it can serve as net/http's server would: a request
// parsed by http.ReadRequest (the parser of net/http's server), HTTP/1.1,
// passing every check net/http's server makes, with no body or one of
// known length, no Expect, no upgrade, a head within 4 KiB, and one that
// Server.Lean accepts (the edge: a tunnel's host). The connection of any
// other request goes to net/http's server, with the bytes read so far, and
// stays there: the error pages for malformed requests, HTTP/2, WebSocket
// upgrades, chunked uploads and the edge's own pages
// are all net/http's. Responses are written by net/http's rules (fields,
// Content-Length and chunking, Date, sniffed Content-Type, Connection,
// trailers, 1xx); the package's tests compare the two servers.
package h1
