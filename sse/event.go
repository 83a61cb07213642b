package sse

import "time"

// Event is one Server-Sent Event.
//
// An Event is a plain value; it is safe to copy and to share between
// goroutines as long as nobody modifies it.
type Event struct {
	// ID is the event's id field. When encoding, an empty ID writes no id
	// line. A parsed event carries the stream's last event ID at the moment
	// it was dispatched, which is "" if no id was ever set, and may come from
	// an earlier block (the standard keeps the last event ID across events,
	// as a browser's MessageEvent.lastEventId does). Encoding a parsed event
	// with AppendEvent therefore repeats an id its reader already has; a
	// [Relay] writes it only when it changes.
	ID string

	// Type is the event type (the "event" field). When encoding, an empty
	// Type writes no event line, which readers take as "message". A parsed
	// event always has a non-empty Type: "message" unless the block said
	// otherwise.
	Type string

	// Data is the event's payload. Line breaks inside it (LF, CR or CRLF)
	// are written as separate data lines and read back as LF.
	Data string

	// Retry is the reconnection time. When encoding, a positive Retry writes
	// a retry line in whole milliseconds. A parsed event has Retry 0: the
	// reconnection time is the stream's state, which a retry line may set in
	// any block, even one that dispatches nothing; see [Parser.Retry] and
	// [Client.Retry], and [Relay] to pass it on.
	Retry time.Duration

	// Comment, when encoding, is written as comment lines (": text") before
	// the event's fields. Parsers ignore comments, so a parsed event never
	// has one; see [ParserConfig.OnComment].
	Comment string
}
