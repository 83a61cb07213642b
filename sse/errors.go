package sse

import (
	"errors"
	"fmt"
)

var (
	// ErrEventTooLarge is returned by the parser when one event (or one
	// line) grows past the configured maximum event size.
	ErrEventTooLarge = errors.New("sse: event exceeds maximum size")

	// ErrInvalidID is returned when encoding an id that contains CR, LF or
	// NULL: a reader would see a different id, or none.
	ErrInvalidID = errors.New("sse: id contains CR, LF or NULL")

	// ErrInvalidType is returned when encoding an event type that contains
	// CR or LF.
	ErrInvalidType = errors.New("sse: event type contains CR or LF")

	// ErrStreamClosed is returned by Stream.Send after the stream was closed.
	ErrStreamClosed = errors.New("sse: stream closed")

	// ErrClientGone is the error of a Stream whose client went away.
	ErrClientGone = errors.New("sse: client went away")

	// ErrSlowClient is the error of a Stream that was disconnected because
	// its client did not read fast enough and its buffer filled up.
	ErrSlowClient = errors.New("sse: client too slow, buffer full")

	// ErrSlowSubscriber is the error of a hub Subscription that was dropped
	// because it did not keep up with the publisher.
	ErrSlowSubscriber = errors.New("sse: subscriber too slow, dropped")

	// ErrHubClosed is the error of a Subscription whose hub was closed, and
	// of operations on a closed hub.
	ErrHubClosed = errors.New("sse: hub closed")

	// ErrTooManyTopics is returned by Publish and Subscribe for a new topic
	// when the hub holds HubConfig.MaxTopics topics already.
	ErrTooManyTopics = errors.New("sse: too many topics")

	// ErrUnsubscribed is the error of a Subscription after Close.
	ErrUnsubscribed = errors.New("sse: unsubscribed")

	// ErrNoContent is returned by the client when the server answered 204 No
	// Content: the standard's way of telling a client to stop reconnecting.
	ErrNoContent = errors.New("sse: server answered 204 No Content, not reconnecting")

	// ErrInvalidURL is returned by NewClient and NewRequestClient for a URL
	// that is not an absolute http:// or https:// URL with a host.
	ErrInvalidURL = errors.New("sse: not an http or https URL with a host")

	// ErrBodyNotReplayable ends a request client's iteration where it would
	// reconnect: the request has a body and no GetBody to send it again.
	ErrBodyNotReplayable = errors.New("sse: cannot reconnect: the request body cannot be sent again (no GetBody)")

	// ErrNotFlushable is returned by NewStream when the ResponseWriter cannot
	// flush, so events would sit in a buffer.
	ErrNotFlushable = errors.New("sse: response writer does not support flushing")
)

// ErrCloseTimeout is returned by Stream.Close when the stream's writer was
// still blocked in a write to the client after CloseTimeout and could not be
// interrupted (its ResponseWriter has no write deadlines). It is a net.Error
// whose Timeout method reports true.
var ErrCloseTimeout error = &timeoutError{"stream close: the client took no data within the close timeout"}

// timeoutError is a timeout of the package's own; it satisfies net.Error.
type timeoutError struct{ what string }

func (e *timeoutError) Error() string   { return "sse: " + e.what }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

// StatusError is returned by the client when the server answers with a status
// other than 200 (and other than 204, see ErrNoContent). The client does not
// reconnect after it.
type StatusError struct {
	StatusCode int
	Status     string // as sent, e.g. "500 Internal Server Error"
	Body       string // the start of the body, for the message
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("sse: server answered %s, want 200 OK", e.Status)
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// ContentTypeError is returned by the client when a 200 response's
// Content-Type is not text/event-stream. The client does not reconnect after
// it.
type ContentTypeError struct {
	ContentType string
}

func (e *ContentTypeError) Error() string {
	ct := e.ContentType
	if ct == "" {
		ct = "none"
	}
	return fmt.Sprintf("sse: server answered with Content-Type %q, want text/event-stream", ct)
}
