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
// next blank line (the start of an event). Its goroutine ends with the
// response (close).
type sseFeed struct {
	c *capture

	mu      sync.Mutex
	queue   []feedChunk
	queued  int   // bytes in queue
	gap     bool  // bytes were skipped since the last queued chunk
	skipped int64 // bytes skipped, in all
	closed  bool  // no more input: the parser ends after the queue
	stopped bool  // the parser stopped: input is dropped

	wake chan struct{} // cap 1: the queue changed
	done chan struct{} // closed when the goroutine has ended
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
	f := &sseFeed{c: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go f.run()
	return f
}

// push queues a copy of p, or skips it when the queue is full.
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
	skipped := f.skipped
	f.mu.Unlock()
	f.signal()
	<-f.done
	if skipped > 0 {
		f.c.e.Note(fmt.Sprintf("the event parser fell behind: %d bytes were skipped, and the events in them are not shown", skipped))
	}
}

// Read gives the parser the queued bytes: errGap at a gap (once), io.EOF
// once closed and drained.
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
		if f.closed {
			f.mu.Unlock()
			return 0, io.EOF
		}
		f.mu.Unlock()
		<-f.wake
	}
}

// run parses until the body ends, starting a parser again after each gap.
func (f *sseFeed) run() {
	defer close(f.done)
	maxEvent := int(max(f.c.in.cfg.BodyLimit, itemTextLimit))
	var r io.Reader = f
	lastID := ""
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
			f.stopped = true
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
