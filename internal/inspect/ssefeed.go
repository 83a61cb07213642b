package inspect

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/sluicehq/sluice/sse"
)

// sseFeed parses an SSE response's body, as it is written, with our own
// sse.Parser on a goroutine of its own, behind a bounded queue that never
// makes the response wait: when the parser is too slow and the queue is
// full, the bytes are skipped and counted, and parsing resumes at the
// next blank line (the start of an event).
//
// The goroutine runs only while there is something to parse: when it has
// parsed all that was written and that ended with a blank line (between
// events, where a parser holds nothing but the last event ID), it ends,
// and the next write starts another, with the last event ID carried over.
// An idle stream costs no goroutine and no parser buffer. The last one
// ends with the response (close).
type sseFeed struct {
	c *capture

	mu      sync.Mutex
	queue   []feedChunk
	queued  int   // bytes in queue
	gap     bool  // bytes were skipped since the last queued chunk
	skipped int64 // bytes skipped, in all
	closed  bool  // no more input: the parser ends after the queue
	stopped bool  // the parser stopped: input is dropped
	running bool  // a goroutine parses
	tail    blankLine
	lastID  string        // the last event ID when the last goroutine ended
	done    chan struct{} // closed when the last goroutine started has ended

	wake chan struct{} // cap 1: the queue changed
}

// blankLine follows a stream's line ends: at says that the bytes so far
// end with a blank line.
type blankLine struct {
	lineStart bool // the last byte ended a line
	lastCR    bool // ... with a CR (an LF may follow, part of the same end)
	at        bool
}

func (b *blankLine) write(p []byte) {
	for _, c := range p {
		switch {
		case c == '\n' && b.lastCR:
			b.lastCR = false
		case c == '\n' || c == '\r':
			b.at = b.lineStart
			b.lineStart, b.lastCR = true, c == '\r'
		default:
			b.lineStart, b.lastCR, b.at = false, false, false
		}
	}
}

// feedChunk is a queued piece of the body; gap marks the first after
// skipped bytes.
type feedChunk struct {
	b   []byte
	gap bool
}

// errGap tells the parser that bytes were skipped before what follows.
var errGap = errors.New("inspect: sse: bytes skipped")

func newSSEFeed(c *capture) *sseFeed {
	return &sseFeed{c: c, wake: make(chan struct{}, 1)}
}

// push queues a copy of p, or skips it when the queue is full, and starts
// a goroutine to parse it if none runs.
func (f *sseFeed) push(p []byte) {
	f.mu.Lock()
	if f.closed || f.stopped {
		f.mu.Unlock()
		return
	}
	if f.queued+len(p) > sseQueueBytes {
		f.gap = true
		f.skipped += int64(len(p))
		f.mu.Unlock()
		return
	}
	f.queue = append(f.queue, feedChunk{b: append([]byte(nil), p...), gap: f.gap})
	f.queued += len(p)
	f.gap = false
	f.tail.write(p)
	if !f.running {
		f.running = true
		prev, done := f.done, make(chan struct{})
		f.done = done
		go f.run(prev, done)
	}
	f.mu.Unlock()
	f.signal()
}

func (f *sseFeed) signal() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// close lets the parser finish what is queued, and waits for it.
func (f *sseFeed) close() {
	f.mu.Lock()
	f.closed = true
	skipped, done := f.skipped, f.done
	f.mu.Unlock()
	f.signal()
	if done != nil {
		<-done
	}
	if skipped > 0 {
		f.c.e.Note(fmt.Sprintf("the event parser fell behind: %d bytes were skipped, and the events in them are not shown", skipped))
	}
}

// Read gives the parser the queued bytes: errGap at a gap (once), io.EOF
// once closed and drained, or drained at a blank line (then the goroutine
// ends: running is false from here on).
func (f *sseFeed) Read(p []byte) (int, error) {
	for {
		f.mu.Lock()
		if len(f.queue) > 0 {
			ch := &f.queue[0]
			if ch.gap {
				ch.gap = false
				f.mu.Unlock()
				return 0, errGap
			}
			n := copy(p, ch.b)
			ch.b = ch.b[n:]
			if len(ch.b) == 0 {
				f.queue[0] = feedChunk{}
				f.queue = f.queue[1:]
			}
			f.queued -= n
			f.mu.Unlock()
			return n, nil
		}
		if f.closed || f.tail.at {
			f.running = false
			f.mu.Unlock()
			return 0, io.EOF
		}
		f.mu.Unlock()
		<-f.wake
	}
}

// run parses what is queued, after the goroutine before it (prev) has
// ended, starting a parser again after each gap.
func (f *sseFeed) run(prev, done chan struct{}) {
	defer close(done)
	if prev != nil {
		<-prev
	}
	maxEvent := int(max(f.c.in.cfg.BodyLimit, itemTextLimit))
	var r io.Reader = f
	f.mu.Lock()
	lastID := f.lastID
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.lastID = lastID
		f.mu.Unlock()
	}()
	for {
		p := sse.NewParser(r, sse.ParserConfig{MaxEventSize: maxEvent, LastEventID: lastID})
		var err error
		for {
			var ev sse.Event
			if ev, err = p.Next(); err != nil {
				break
			}
			f.c.e.AddItem(Item{Kind: "event", Event: ev.Type, EventID: ev.ID, Size: int64(len(ev.Data)), Text: ev.Data})
		}
		lastID = p.LastEventID()
		if errors.Is(err, errGap) {
			r = &toBlankLine{r: f}
			continue
		}
		if err != io.EOF {
			f.mu.Lock()
			f.stopped, f.running = true, false
			f.queue, f.queued = nil, 0
			f.mu.Unlock()
			f.c.e.Note(fmt.Sprintf("the events are not parsed further: %v", err))
		}
		return
	}
}

// toBlankLine reads r from the first byte after a blank line on: after a
// gap, the next event starts there (a blank line ends an event).
type toBlankLine struct {
	r         io.Reader
	found     bool
	lineStart bool // the last byte ended a line
	lastCR    bool // ... with a CR (an LF may follow, part of the same end)
}

func (t *toBlankLine) Read(p []byte) (int, error) {
	for !t.found {
		n, err := t.r.Read(p)
		for i, b := range p[:n] {
			switch {
			case b == '\n' && t.lastCR:
				t.lastCR = false
			case b == '\n' || b == '\r':
				if t.lineStart {
					t.found = true
					rest := copy(p, p[i+1:n])
					return rest, err
				}
				t.lineStart, t.lastCR = true, b == '\r'
			default:
				t.lineStart, t.lastCR = false, false
			}
		}
		if err != nil {
			return 0, err
		}
	}
	return t.r.Read(p)
}
