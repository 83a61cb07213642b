package inspect

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/sse"
)

// Live updates (/api/events) cost the request path almost nothing: a
// change only marks its entry (publishLocked), an item or a removal is
// queued, and one goroutine, the publisher (started by New, ended by
// Close), encodes and publishes them on the hub in batches, publishDelay
// after the first change of a batch. A request's changes within one batch
// (the begin, response and end of a fast one) are one "request" event
// with its latest state; items and removals keep their order.
//
// While nobody watches (no /api/events stream is open) nothing is queued
// nor encoded: changed entries stay marked, and when a watcher comes they
// are published, each once in its latest state, before or after its
// subscription starts (the hub has no gap between the two): a client
// reconnecting with Last-Event-ID gets every request that changed while it
// was away (and the removal of those it was shown). Items that passed
// while nobody watched are not published: the record keeps them (GET
// /api/requests/ID), and its "request" event says how many there were.
//
// The publisher's queue and counts, and the entries' marks, are guarded by
// Inspector.mu; the publisher encodes and publishes outside it.

const (
	// publishDelay is how long a batch gathers changes: well under what a
	// person notices, long enough for a fast request's three changes to
	// coalesce.
	publishDelay = 10 * time.Millisecond
	// maxQueuedItems bounds the items waiting for the publisher: the
	// items of a stream faster than it are left out of the live feed
	// beyond it (the record keeps them), rather than held in memory.
	maxQueuedItems = 4096
)

// Kinds of pubOp.
const (
	opRequest = iota // the entry's latest state
	opItem
	opRemoved
)

// pubOp is a live update waiting for the publisher.
type pubOp struct {
	kind int
	e    *Entry
	item Item // of an opItem
}

// pubEvent is a pubOp resolved under the lock, to encode outside it.
type pubEvent struct {
	kind int
	id   string
	req  Request // of an opRequest: a snapshot (its headers are shared, never modified)
	item Item
}

// publisher is the Inspector's part that sends live updates.
type publisher struct {
	// Guarded by Inspector.mu.
	watchers int     // /api/events streams open
	queue    []pubOp // in order
	items    int     // opItems in queue
	spare    []pubOp // the last batch's slice, for reuse

	wake chan struct{} // cap 1: the queue has something
	stop chan struct{} // closed by Close
	done chan struct{} // closed when the publisher has returned
}

func newPublisher() publisher {
	return publisher{wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// publishLocked notes that e changed: its latest state goes out with the
// next batch, or when a watcher comes.
func (in *Inspector) publishLocked(e *Entry) {
	e.changed = true
	in.queueLocked(e)
}

// queueLocked queues the publication of e's latest state, once, if
// somebody watches.
func (in *Inspector) queueLocked(e *Entry) {
	p := &in.pub
	if p.watchers == 0 || e.queued || e.removed {
		return
	}
	e.queued = true
	p.queue = append(p.queue, pubOp{kind: opRequest, e: e})
	p.signal()
}

// publishItemLocked queues an item of e's stream, if somebody watches.
func (in *Inspector) publishItemLocked(e *Entry, it Item) {
	p := &in.pub
	if p.watchers == 0 || e.removed || p.items >= maxQueuedItems {
		return
	}
	p.items++
	p.queue = append(p.queue, pubOp{kind: opItem, e: e, item: it})
	p.signal()
}

// removedLocked queues the removal of e, if it was ever published (else
// nobody knows it). The queue is bounded all the same: by the number of
// requests kept.
func (in *Inspector) removedLocked(e *Entry) {
	if !e.shown {
		return
	}
	p := &in.pub
	p.queue = append(p.queue, pubOp{kind: opRemoved, e: e})
	if p.watchers > 0 {
		p.signal()
	}
}

func (p *publisher) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// watch counts an /api/events stream for as long as it is open, and
// queues what changed while nobody watched. The stream subscribes after
// watch (then nothing it should get is left unqueued) and calls the
// returned function when it ends.
func (in *Inspector) watch() (unwatch func()) {
	in.mu.Lock()
	p := &in.pub
	p.watchers++
	if p.watchers == 1 {
		for _, e := range in.recs {
			if e.changed {
				in.queueLocked(e)
			}
		}
	}
	if len(p.queue) > 0 {
		p.signal()
	}
	in.mu.Unlock()
	return func() {
		in.mu.Lock()
		p.watchers--
		in.mu.Unlock()
	}
}

// events serves GET /api/events: the hub's stream of Topic, counted as a
// watcher.
func (in *Inspector) events() http.HandlerFunc {
	h := in.hub.Handler(func(*http.Request) string { return Topic })
	return func(w http.ResponseWriter, r *http.Request) {
		defer in.watch()()
		h.ServeHTTP(w, r)
	}
}

// publishLoop is the publisher: a batch publishDelay after each wake-up,
// until Close.
func (in *Inspector) publishLoop() {
	p := &in.pub
	defer close(p.done)
	t := time.NewTimer(publishDelay)
	t.Stop()
	var batch []pubEvent
	for {
		select {
		case <-p.wake:
		case <-p.stop:
			return
		}
		t.Reset(publishDelay)
		select {
		case <-t.C:
		case <-p.stop:
			t.Stop()
			return
		}
		// What woke it meanwhile is in this batch.
		select {
		case <-p.wake:
		default:
		}
		batch = in.takeBatch(batch[:0])
		for i := range batch {
			in.send(&batch[i])
			batch[i] = pubEvent{}
		}
	}
}

// takeBatch resolves the queue into events, appended to out: the latest
// state of each queued entry not removed since, the items of entries not
// removed, the removals.
func (in *Inspector) takeBatch(out []pubEvent) []pubEvent {
	in.mu.Lock()
	defer in.mu.Unlock()
	p := &in.pub
	q := p.queue
	p.queue, p.spare, p.items = p.spare[:0], nil, 0
	for i := range q {
		op := &q[i]
		e := op.e
		switch op.kind {
		case opRequest:
			e.queued = false
			if e.removed {
				continue
			}
			e.changed, e.shown = false, true
			out = append(out, pubEvent{kind: opRequest, req: e.viewLocked(false)})
		case opItem:
			if !e.removed {
				out = append(out, pubEvent{kind: opItem, id: e.idLocked(), item: op.item})
			}
		case opRemoved:
			out = append(out, pubEvent{kind: opRemoved, id: e.idLocked()})
		}
		*op = pubOp{}
	}
	p.spare = q[:0]
	return out
}

// send encodes and publishes one event.
func (in *Inspector) send(ev *pubEvent) {
	var e sse.Event
	switch ev.kind {
	case opRequest:
		data, err := json.Marshal(&ev.req)
		if err != nil {
			return
		}
		e = sse.Event{Type: EventRequest, Data: string(data)}
	case opItem:
		data, err := json.Marshal(ItemEvent{ID: ev.id, Item: ev.item})
		if err != nil {
			return
		}
		e = sse.Event{Type: EventItem, Data: string(data)}
	case opRemoved:
		// IDs are decimal numbers: nothing to escape.
		e = sse.Event{Type: EventRemoved, Data: `{"id":"` + ev.id + `"}`}
	}
	in.hub.Publish(Topic, e)
}
