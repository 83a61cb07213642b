// Package inspect records the requests an agent serves, live, for the
// inspector: the page and JSON API on --inspect (127.0.0.1:4040 by
// default) that show each request with its headers and bodies, the events,
// lines and messages of streams as they pass, and replay them.
//
// Capture is a tee, never a buffer in the data path: bodies are kept up to
// Config.BodyLimit each and only counted beyond; a stream's items are kept
// up to the same limit; the last Config.MaxRequests requests are kept
// within Config.MaxBytes in all. Live updates go out through an sse.Hub,
// whose slow subscribers are dropped rather than waited for, encoded by a
// goroutine of their own in batches, and only while somebody watches: a
// slow or absent inspector page never slows the tunnel.
package inspect

import (
	"net/http"
	"time"
)

// Request is a recorded request as the API shows it (GET /api/requests,
// GET /api/requests/ID, the "request" events of /api/events).
type Request struct {
	ID         string    `json:"id"`
	Time       time.Time `json:"time"` // when the agent received it
	Method     string    `json:"method"`
	Path       string    `json:"path"` // path and query, as received
	Host       string    `json:"host"`
	Proto      string    `json:"proto"`                 // "HTTP/1.1", "HTTP/2.0"
	RemoteAddr string    `json:"remote_addr,omitempty"` // the visitor (X-Forwarded-For's first address)
	ReplayOf   string    `json:"replay_of,omitempty"`   // the ID this is a replay of

	// State is "waiting" (no response headers yet), "streaming" (headers
	// sent, body flowing), "done" or "failed" (Error says why).
	State      string  `json:"state"`
	Error      string  `json:"error,omitempty"`
	Status     int     `json:"status"`      // 0 until the response headers; 101 for an upgrade
	DurationMS float64 `json:"duration_ms"` // until the end, or so far
	HeadersMS  float64 `json:"headers_ms"`  // until the response headers (0 before them)

	RequestHeaders  http.Header `json:"request_headers"`
	ResponseHeaders http.Header `json:"response_headers"`

	// Body sizes count every byte that passed; Captured how many of them
	// are kept (at most the body limit); Truncated that some were not.
	RequestBodySize       int64       `json:"request_body_size"`
	RequestBodyCaptured   int64       `json:"request_body_captured"`
	RequestBodyTruncated  bool        `json:"request_body_truncated"`
	ResponseBodySize      int64       `json:"response_body_size"`
	ResponseBodyCaptured  int64       `json:"response_body_captured"`
	ResponseBodyTruncated bool        `json:"response_body_truncated"`
	RequestTrailers       http.Header `json:"request_trailers,omitempty"`
	ResponseTrailers      http.Header `json:"response_trailers,omitempty"`

	// Stream is "sse", "ndjson" or "websocket" when the response is one
	// (its items are parsed as they pass), else "".
	Stream       string `json:"stream,omitempty"`
	ItemCount    int    `json:"item_count"`    // items seen
	ItemsDropped int    `json:"items_dropped"` // items seen but not kept (beyond the limit)
	// Items are the kept items, oldest first: in GET /api/requests/ID
	// only (the list and the events leave them out).
	Items []Item `json:"items,omitempty"`
	// CaptureNote says why the capture is partial, when it is: a stream
	// not parsed (compressed), a parser that fell behind and skipped
	// bytes, a decoder that stopped at bytes it could not read. The
	// request itself is not affected.
	CaptureNote string `json:"capture_note,omitempty"`
}

// Item is one event of an SSE response, one line of an NDJSON response, or
// one message of a WebSocket (either way).
type Item struct {
	N      int     `json:"n"`       // 1, 2, ... within the request
	TimeMS float64 `json:"time_ms"` // since the request started
	// Kind is "event" (SSE), "line" (NDJSON) or "message" (WebSocket).
	Kind string `json:"kind"`
	// Direction of a WebSocket message: "in" (client to local server) or
	// "out" (local server to client).
	Direction string `json:"direction,omitempty"`
	// SSE fields: the event type and the stream's last event ID.
	Event   string `json:"event,omitempty"`
	EventID string `json:"event_id,omitempty"`
	// Opcode of a WebSocket message: "text", "binary", "close", "ping",
	// "pong" (a fragmented message is one item).
	Opcode string `json:"opcode,omitempty"`
	Size   int64  `json:"size"` // bytes of the data, line or message payload
	// Text is the SSE data, the NDJSON line, or the message's payload as
	// text (binary payloads as lowercase hex), up to the item limit.
	Text      string `json:"text"`
	Truncated bool   `json:"truncated,omitempty"` // Text is cut
}

// Kinds of Request.Stream.
const (
	StreamSSE       = "sse"
	StreamNDJSON    = "ndjson"
	StreamWebSocket = "websocket"
)

// States of Request.State.
const (
	StateWaiting   = "waiting"
	StateStreaming = "streaming"
	StateDone      = "done"
	StateFailed    = "failed"
)

// Event types on the hub's Topic, for /api/events. Each event's data is
// JSON: "request" a Request without Items, in its latest state, after it
// changed (it began, its response headers came, it ended: changes close
// together, such as a fast request's three, come as one event), "item" an
// ItemEvent (in order, while somebody watches), "removed" {"id": ID} when
// a request that was published leaves the store. See publish.go.
const (
	Topic        = "requests"
	EventRequest = "request"
	EventItem    = "item"
	EventRemoved = "removed"
)

// ItemEvent is the data of an "item" event.
type ItemEvent struct {
	ID   string `json:"id"`
	Item Item   `json:"item"`
}

// Masked are the header names whose values the page masks until the user
// reveals them (the API returns them as they are: it is on loopback, for
// the developer who runs the agent).
var Masked = []string{"Authorization", "Cookie", "Set-Cookie", "Proxy-Authorization"}
