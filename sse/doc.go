// Package sse implements Server-Sent Events: the text/event-stream format of
// the WHATWG HTML standard, section 9.2.
//
// It has five parts, each usable alone:
//
//   - [Event], one event.
//   - [Parser], an incremental parser that follows the standard's "interpreting
//     an event stream" algorithm exactly, including its UTF-8 decoding.
//   - [AppendEvent] and [Encoder], which write events that every conforming
//     parser reads back unchanged.
//   - [Stream], a server helper that turns an http.ResponseWriter into an event
//     stream: headers flushed at once, keepalive comments, a bounded buffer for
//     slow clients.
//   - [Hub], topics with many subscribers and a bounded history for
//     Last-Event-ID replay.
//   - [Client], a reconnecting client that yields events as an iterator.
//
// The package uses only the standard library and never logs.
package sse
