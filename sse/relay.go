package sse

import "time"

// Source is the state of an event stream being read, which a Relay passes
// on: *Parser and *Client implement it.
type Source interface {
	// LastEventID returns the stream's last event ID.
	LastEventID() string
	// Retry returns the reconnection time the stream set, and whether it
	// set one.
	Retry() (time.Duration, bool)
}

// Relay re-encodes the events read from one stream for another reader, such
// as a server that passes an upstream's events on to its own clients.
//
// A parsed event carries the last event ID at dispatch, repeated on every
// event that came without an id, and the reconnection time lives in the
// source, not in events. The Relay remembers what its reader already knows,
// its last event ID and reconnection time, and writes an id line only when
// an event's ID differs from it (an empty line when the source reset it),
// a retry line only when the source's reconnection time changed, and no
// event line for the type "message". So parse, relay and parse again gives
// the same events, the same last event ID and the same reconnection time,
// with no bytes per event beyond what the event needs.
//
// A Relay is not safe for concurrent use.
type Relay struct {
	src      Source
	lastID   string
	retry    time.Duration
	retrySet bool
}

// NewRelay returns a relay from src to a reader whose last event ID is
// lastEventID: "" for a new reader, Stream.LastEventID for a reader that
// reconnected.
func NewRelay(src Source, lastEventID string) *Relay {
	return &Relay{src: src, lastID: lastEventID}
}

// AppendEvent appends ev, the event the source just returned, to dst, with
// the id and retry lines the reader needs to be in step with the source.
// Its errors are AppendEvent's, with dst unchanged; parsed events never
// cause them.
func (r *Relay) AppendEvent(dst []byte, ev Event) ([]byte, error) {
	if err := checkEvent(ev); err != nil {
		return dst, err
	}
	if ev.Comment != "" {
		dst = appendLines(dst, ": ", ev.Comment)
	}
	dst = r.appendID(dst, ev.ID)
	dst = r.appendRetry(dst)
	if ev.Type != "" && ev.Type != "message" {
		dst = append(dst, "event: "...)
		dst = append(dst, ev.Type...)
		dst = append(dst, '\n')
	}
	dst = appendLines(dst, "data: ", ev.Data)
	return append(dst, '\n'), nil
}

// AppendState appends a block that dispatches no event and brings the
// reader's last event ID and reconnection time in step with the source's,
// or nothing if they already are. A stream may change both in blocks that
// dispatch nothing; call AppendState when the source ends (a Parser's
// io.EOF) so that the reader reconnects with the same state.
func (r *Relay) AppendState(dst []byte) []byte {
	n := len(dst)
	dst = r.appendID(dst, r.src.LastEventID())
	dst = r.appendRetry(dst)
	if len(dst) == n {
		return dst
	}
	return append(dst, '\n')
}

// appendID writes an id line if id is not the reader's last event ID. An
// ID with CR, LF or NULL cannot come from a parser; AppendEvent checked it.
func (r *Relay) appendID(dst []byte, id string) []byte {
	if id == r.lastID {
		return dst
	}
	r.lastID = id
	dst = append(dst, "id: "...)
	dst = append(dst, id...)
	return append(dst, '\n')
}

// appendRetry writes a retry line if the source's reconnection time is not
// the reader's.
func (r *Relay) appendRetry(dst []byte) []byte {
	d, set := r.src.Retry()
	if !set || r.retrySet && d == r.retry {
		return dst
	}
	r.retry, r.retrySet = d, true
	return appendRetry(dst, d)
}
