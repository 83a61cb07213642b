// Package sse implements Server-Sent Events: the text/event-stream format of
// the WHATWG HTML standard, section 9.2.
//
// Its parts, each usable alone:
//
//   - [Event], one event.
//   - [Parser], an incremental parser that follows the standard's "interpreting
//     an event stream" algorithm exactly, including its UTF-8 decoding.
//   - [AppendEvent] and [Encoder], which write events that every conforming
//     parser reads back unchanged.
//   - [Relay], which re-encodes parsed events for another reader with no id
//     or retry line the reader does not need.
//   - [Stream], a server helper that turns an http.ResponseWriter into an event
//     stream: headers flushed at once, keepalive comments, a bounded buffer for
//     slow clients, a Close bounded in time.
//   - [Hub], topics with many subscribers and a bounded history for
//     Last-Event-ID replay. Its Handler tells a client whose Last-Event-ID is
//     no longer in the history with an event of type [GapEventType] ("gap"),
//     whose data is that id, before the retained history. Topics without
//     subscribers or history are reclaimed, and their number is bounded
//     (HubConfig.MaxTopics, [ErrTooManyTopics]).
//   - [Client], a reconnecting client that yields events as an iterator, for
//     GET streams ([NewClient]) and for requests of the caller's, such as a
//     POST with a JSON body ([NewRequestClient]).
//   - [Backoff], the client's reconnect policy (exponential, full jitter, a
//     cap, a reset after a healthy connection), for other reconnecting loops.
//
// The package is a Go module of its own, github.com/sluicehq/sluice/sse. It
// uses only the standard library and never logs.
package sse
