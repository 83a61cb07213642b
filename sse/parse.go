package sse

import (
	"bytes"
	"io"
	"math"
	"time"
	"unsafe"
)

// DefaultMaxEventSize is the largest event a Parser accepts when
// ParserConfig.MaxEventSize is zero: 16 MiB.
const DefaultMaxEventSize = 16 << 20

const (
	initialBufSize = 4 << 10
	smallEvent     = 16 << 10 // an event below this size lets big buffers go
	bigBuffer      = 64 << 10 // buffers above this size are let go
	handoverSize   = 32 << 10 // one-line data this big is not copied again
)

// ParserConfig configures a Parser. The zero value is ready to use.
type ParserConfig struct {
	// MaxEventSize bounds the bytes of one event: its data buffer plus the
	// line being read. Longer lines and events end parsing with
	// ErrEventTooLarge. Zero means DefaultMaxEventSize. There is no other
	// limit on line length.
	MaxEventSize int

	// OnComment, if set, is called with the text of each comment line (the
	// part after the colon, one leading space removed), for example a
	// server's keepalive. It runs on the goroutine that calls Next.
	OnComment func(text string)

	// LastEventID is the last event ID the stream starts with. The standard
	// starts every stream with "", but browsers carry the id over when they
	// reconnect, and so does Client: a reconnected stream that sends no id
	// keeps reporting the last one.
	LastEventID string
}

// Parser reads events from an event stream, following the WHATWG HTML
// standard's "interpreting an event stream" algorithm exactly: UTF-8 decoding
// with U+FFFD replacement, one leading BOM removed, CR, LF and CRLF line ends,
// comments, fields with and without a colon, data lines joined with LF,
// blocks without data not dispatched but still setting the last event ID,
// ids with NULL ignored, retry taken only when all ASCII digits, and an
// unterminated last block discarded.
//
// It is incremental: an event is returned as soon as the blank line that ends
// it has been read, even when that line ends with a CR whose LF has not
// arrived yet.
//
// A Parser is not safe for concurrent use.
type Parser struct {
	r         io.Reader
	max       int
	onComment func(string)

	buf        []byte // buf[start:end] is read but not yet processed
	start, end int
	scanned    int  // buf[start:scanned] holds no line end
	lf         int  // the first LF at or after scanned, or -1 if none in buf[lfSearched:end]
	lfSearched int  // see lf
	bomChecked bool // the leading BOM, if any, is gone
	skipLF     bool // the last line ended in CR: drop one LF that follows
	err        error

	data      []byte // the data buffer
	eventType []byte // the event type buffer
	lastType  string // the last dispatched type, reused to save allocations
	idBuf     string // the last event ID buffer
	lastID    string // the last event ID at the latest dispatch
	retry     time.Duration
	retrySet  bool
}

// NewParser returns a parser reading from r.
func NewParser(r io.Reader, cfg ParserConfig) *Parser {
	max := cfg.MaxEventSize
	if max <= 0 {
		max = DefaultMaxEventSize
	}
	return &Parser{r: r, max: max, onComment: cfg.OnComment, idBuf: cfg.LastEventID, lastID: cfg.LastEventID, lf: -1}
}

// LastEventID returns the stream's last event ID: the value the last
// dispatched block left it at. It is what a client sends in Last-Event-ID.
func (p *Parser) LastEventID() string { return p.lastID }

// Retry returns the reconnection time set by the stream so far, and whether
// the stream set one at all.
func (p *Parser) Retry() (time.Duration, bool) { return p.retry, p.retrySet }

// Next returns the next event. At the end of the stream it returns io.EOF;
// an event that was not finished by a blank line is discarded. Other errors
// are the reader's, or ErrEventTooLarge. After an error, Next keeps returning
// it.
func (p *Parser) Next() (Event, error) {
	for {
		line, ok, err := p.line()
		if err != nil {
			return Event{}, err
		}
		if !ok {
			continue
		}
		if ev, ok := p.processLine(line); ok {
			return ev, nil
		}
		if p.err != nil {
			return Event{}, p.err
		}
	}
}

// line returns the next complete line without its terminator. ok is false
// when more input had to be read and the caller should simply call again.
func (p *Parser) line() (line []byte, ok bool, err error) {
	if p.err != nil {
		return nil, false, p.err
	}
	if !p.bomChecked {
		avail := p.buf[p.start:p.end]
		switch {
		case bytes.HasPrefix(avail, bom):
			p.start += len(bom)
			p.bomChecked = true
		case len(avail) >= len(bom) || !bytes.HasPrefix(bom, avail):
			p.bomChecked = true
		default: // a prefix of a BOM, or nothing yet
			return nil, false, p.fill()
		}
		p.scanned = p.start
	}
	if p.skipLF && p.start < p.end {
		p.skipLF = false
		if p.buf[p.start] == '\n' {
			p.start++
			p.scanned = p.start
		}
	}
	// Find the first line end: an LF (remembered between calls, so that a
	// stream of CR line ends does not rescan the buffer for an LF at every
	// line) or a CR before it.
	lf := p.nextLF(p.scanned)
	scopeEnd := p.end
	if lf >= 0 {
		scopeEnd = lf
	}
	if j := bytes.IndexByte(p.buf[p.scanned:scopeEnd], '\r'); j >= 0 {
		// A CR ends the line; an LF right after it belongs to it.
		lineEnd := p.scanned + j
		line = p.buf[p.start:lineEnd]
		next := lineEnd + 1
		if next < p.end {
			if p.buf[next] == '\n' {
				next++
			}
		} else {
			// The CR was the last byte read: do not wait for a
			// possible LF, remember to drop it instead.
			p.skipLF = true
		}
		p.start, p.scanned = next, next
		return p.checkLine(line)
	}
	if lf >= 0 {
		line = p.buf[p.start:lf]
		p.start, p.scanned = lf+1, lf+1
		return p.checkLine(line)
	}
	p.scanned = p.end
	if p.end-p.start+len(p.data) > p.max {
		p.err = ErrEventTooLarge
		return nil, false, p.err
	}
	return nil, false, p.fill()
}

// nextLF returns the index of the first LF in buf[from:end], or -1.
func (p *Parser) nextLF(from int) int {
	if p.lf >= from {
		return p.lf
	}
	start := from
	if p.lf < 0 && p.lfSearched > start {
		start = p.lfSearched
	}
	if i := bytes.IndexByte(p.buf[start:p.end], '\n'); i >= 0 {
		p.lf = start + i
		return p.lf
	}
	p.lf, p.lfSearched = -1, p.end
	return -1
}

// shift moves the unprocessed bytes to the front of dst (which may be
// p.buf itself) and adjusts the positions.
func (p *Parser) shift(dst []byte) {
	n := copy(dst, p.buf[p.start:p.end])
	d := p.start
	p.buf, p.start, p.end = dst, 0, n
	p.scanned -= d
	if p.lf >= 0 {
		p.lf -= d
	}
	p.lfSearched = max(p.lfSearched-d, 0)
}

// checkLine applies the event size limit to a complete line, so that the
// outcome never depends on how the input was split into reads.
func (p *Parser) checkLine(line []byte) ([]byte, bool, error) {
	if len(line)+len(p.data) > p.max {
		p.err = ErrEventTooLarge
		return nil, false, p.err
	}
	return line, true, nil
}

var bom = []byte{0xEF, 0xBB, 0xBF}

// fill reads more input into the buffer, compacting or growing it first.
func (p *Parser) fill() error {
	if p.end == len(p.buf) {
		if p.start > 0 && p.start >= len(p.buf)/2 {
			p.shift(p.buf)
		} else {
			p.shift(make([]byte, max(2*len(p.buf), initialBufSize)))
		}
	}
	n, err := p.r.Read(p.buf[p.end:])
	p.end += n
	if n > 0 {
		return nil
	}
	if err == nil {
		return nil // a reader may return 0, nil; call again
	}
	if err == io.EOF {
		// Whatever is left is an unterminated line or block: discarded.
		p.data = p.data[:0]
	}
	p.err = err
	return err
}

// processLine applies one line to the parser state and returns the event it
// dispatches, if any.
func (p *Parser) processLine(line []byte) (Event, bool) {
	if len(line) == 0 {
		return p.dispatch()
	}
	if line[0] == ':' {
		if p.onComment != nil {
			p.onComment(decodeString(trimSpace(line[1:])))
		}
		return Event{}, false
	}
	field, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		field, value = line[:i], trimSpace(line[i+1:])
	}
	switch string(field) {
	case "data":
		if len(p.data)+len(value)+1 > p.max {
			p.err = ErrEventTooLarge
			return Event{}, false
		}
		if len(p.data) == 0 && len(value) >= handoverSize {
			// A big first line gets a buffer of its own, exactly sized for
			// it and its LF: if the event stays one line, the buffer
			// becomes the event's Data without a copy (see dispatch).
			p.data = make([]byte, 0, len(value)+1)
		}
		p.data = appendDecoded(p.data, value)
		p.data = append(p.data, '\n')
	case "event":
		p.eventType = appendDecoded(p.eventType[:0], value)
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			if string(value) != p.idBuf {
				p.idBuf = decodeString(value)
			}
		}
	case "retry":
		if ms, ok := parseDigits(value); ok {
			p.retry = time.Duration(ms) * time.Millisecond
			p.retrySet = true
		}
	}
	return Event{}, false
}

func (p *Parser) dispatch() (Event, bool) {
	p.lastID = p.idBuf
	if len(p.data) == 0 {
		p.eventType = p.eventType[:0]
		return Event{}, false
	}
	data := p.data[:len(p.data)-1] // every data line ends in LF
	ev := Event{ID: p.lastID, Type: "message"}
	if len(data) >= handoverSize && len(p.data) == cap(p.data) {
		// A big one-line event in its own exact buffer: hand the buffer
		// over to the string instead of copying it. The parser never
		// touches it again (p.data is reset to nil), so the string stays
		// immutable.
		ev.Data = unsafe.String(unsafe.SliceData(data), len(data))
		p.data = nil
	} else {
		ev.Data = string(data)
		p.data = p.data[:0]
	}
	if len(p.eventType) > 0 {
		if string(p.eventType) != p.lastType {
			p.lastType = string(p.eventType)
		}
		ev.Type = p.lastType
	}
	p.eventType = p.eventType[:0]
	if len(data) < smallEvent {
		// A small event after a big one: give the big buffers back, so
		// that a long-lived stream does not keep its largest event's
		// memory forever.
		if cap(p.data) > bigBuffer {
			p.data = nil
		}
		if len(p.buf) > bigBuffer && p.end-p.start < smallEvent {
			p.shift(make([]byte, initialBufSize+p.end-p.start))
		}
	}
	return ev, true
}

// trimSpace removes one leading U+0020 SPACE, as the standard says.
func trimSpace(b []byte) []byte {
	if len(b) > 0 && b[0] == ' ' {
		return b[1:]
	}
	return b
}

// parseDigits parses a retry value: ASCII digits only, at least one. Values
// too large for a Duration saturate.
func parseDigits(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	const limit = math.MaxInt64 / int64(time.Millisecond)
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		if n <= limit {
			n = n*10 + int64(c-'0')
		}
	}
	if n > limit {
		n = limit
	}
	return n, true
}
