package sse

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for HubConfig's zero values.
const (
	DefaultHistorySize      = 1000
	DefaultHistoryBytes     = 4 << 20
	DefaultSubscriberBuffer = 256
	DefaultMaxTopics        = 1000

	// GapEventType is the type of the event Handler sends first to a
	// client whose Last-Event-ID is not in the topic's history: events may
	// have been missed, and the whole retained history follows. Its data is
	// the Last-Event-ID the hub did not find; it has no id. A browser's
	// EventSource dispatches it only to addEventListener("gap", ...), never
	// to onmessage, so clients that do not listen for it are unaffected.
	GapEventType = "gap"

	// sweepMin is the smallest topic count that triggers a sweep of
	// reclaimable topics; see Hub.topic.
	sweepMin = 64
)

// HubConfig configures a Hub. The zero value means the defaults.
type HubConfig struct {
	// HistorySize is how many recent events each topic keeps for
	// Last-Event-ID replay. Zero means DefaultHistorySize (1000); negative
	// keeps none.
	HistorySize int
	// HistoryBytes bounds the encoded size of a topic's history. Zero means
	// DefaultHistoryBytes (4 MiB).
	HistoryBytes int
	// HistoryTTL, if positive, also drops history entries older than this.
	HistoryTTL time.Duration
	// SubscriberBuffer is how many events a Subscription may have waiting
	// before it is dropped with ErrSlowSubscriber. Zero means
	// DefaultSubscriberBuffer (256).
	SubscriberBuffer int
	// MaxTopics bounds the number of topics. Beyond it, Publish and
	// Subscribe to a new topic return ErrTooManyTopics and Handler answers
	// 503 Service Unavailable, after reclaiming what it can. Zero means
	// DefaultMaxTopics (1000); negative means no bound. Each topic may hold
	// HistoryBytes of history, so the two together bound the hub's memory.
	MaxTopics int
	// Stream configures the streams of Handler. Their SlowClient policy is
	// always Disconnect: a client whose buffer is full is dropped rather
	// than slowing the publisher.
	Stream StreamConfig
}

// Hub fans events out to subscribers by topic and keeps a bounded history
// per topic so that a reconnecting client receives exactly the events it
// missed.
//
// Publishing never blocks on a subscriber: each subscriber has a bounded
// buffer, and one that is full is dropped with a reason (ErrSlowSubscriber,
// or ErrSlowClient for HTTP streams) while the others go on.
//
// Replay: Subscribe with a Last-Event-ID sends the events published after
// that id. If the id is not in the topic's history (unknown, or expired out
// of it), the subscriber cannot know what it missed: it receives the whole
// retained history, and Subscription.Gap reports true. An empty
// Last-Event-ID replays nothing.
//
// Events published without an ID get the hub's next sequence number as
// their ID: unique across topics and increasing within each, so that every
// event can be replayed from and a topic created again never reuses an ID.
//
// Topics come and go by themselves: a topic exists from the first Publish or
// Subscribe, and is reclaimed once it has no subscriber and no history (none
// is kept, or it expired under HistoryTTL). Their number is bounded by
// MaxTopics.
//
// The hub's state has one owner per topic: a mutex that Publish, Subscribe
// and Close take, so a subscriber sees every event once, in order, with no
// gap between replay and live events. The topic table has a mutex of its
// own, taken before a topic's. All methods are safe for concurrent use. The
// hub starts no goroutines.
type Hub struct {
	cfg HubConfig
	seq atomic.Uint64 // the last ID given to an event without one

	mu      sync.Mutex // guards topics, sweepAt and closed
	topics  map[string]*topic
	sweepAt int // the topic count at which the next sweep runs
	closed  bool
}

type topic struct {
	h    *Hub
	name string

	mu      sync.Mutex
	history []*entry // oldest first
	bytes   int
	subs    []*Subscription // a slice: fan-out iterates it fast
	closed  bool
	dead    bool // reclaimed: no longer in h.topics; look the name up again
}

// add and remove keep t.subs and each Subscription's idx in step. The
// caller holds t.mu.
func (t *topic) add(s *Subscription) {
	s.idx = len(t.subs)
	t.subs = append(t.subs, s)
}

func (t *topic) remove(s *Subscription) bool {
	if s.idx < 0 {
		return false
	}
	last := t.subs[len(t.subs)-1]
	t.subs[s.idx] = last
	last.idx = s.idx
	t.subs[len(t.subs)-1] = nil
	t.subs = t.subs[:len(t.subs)-1]
	s.idx = -1
	return true
}

type entry struct {
	ev  Event
	raw []byte // the encoded event
	at  time.Time
}

// NewHub returns an empty hub.
func NewHub(cfg HubConfig) *Hub {
	switch {
	case cfg.HistorySize == 0:
		cfg.HistorySize = DefaultHistorySize
	case cfg.HistorySize < 0:
		cfg.HistorySize = 0
	}
	if cfg.HistoryBytes <= 0 {
		cfg.HistoryBytes = DefaultHistoryBytes
	}
	if cfg.SubscriberBuffer <= 0 {
		cfg.SubscriberBuffer = DefaultSubscriberBuffer
	}
	if cfg.MaxTopics == 0 {
		cfg.MaxTopics = DefaultMaxTopics
	}
	cfg.Stream.SlowClient = Disconnect
	return &Hub{cfg: cfg, topics: make(map[string]*topic), sweepAt: sweepMin}
}

// lockTopic returns the named topic, created if need be, with its mutex
// held. A topic reclaimed in between is looked up again.
func (h *Hub) lockTopic(name string) (*topic, error) {
	for {
		t, err := h.topic(name)
		if err != nil {
			return nil, err
		}
		t.mu.Lock()
		if !t.dead {
			return t, nil
		}
		t.mu.Unlock()
	}
}

// topic returns the named topic, created if need be. Creating one sweeps
// the reclaimable topics when their number has doubled since the last
// sweep (so a sweep costs O(1) per topic created), and when MaxTopics is
// reached.
func (h *Hub) topic(name string) (*topic, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrHubClosed
	}
	if t := h.topics[name]; t != nil {
		return t, nil
	}
	full := h.cfg.MaxTopics > 0 && len(h.topics) >= h.cfg.MaxTopics
	if full || len(h.topics) >= h.sweepAt {
		h.sweepLocked(time.Now())
		h.sweepAt = max(2*len(h.topics), sweepMin)
		full = h.cfg.MaxTopics > 0 && len(h.topics) >= h.cfg.MaxTopics
	}
	if full {
		return nil, ErrTooManyTopics
	}
	t := &topic{h: h, name: name}
	h.topics[name] = t
	return t, nil
}

// sweepLocked reclaims every topic that has neither subscribers nor
// history. The caller holds h.mu.
func (h *Hub) sweepLocked(now time.Time) {
	for name, t := range h.topics {
		t.mu.Lock()
		if h.reclaimableLocked(t, now) {
			t.dead = true
			delete(h.topics, name)
		}
		t.mu.Unlock()
	}
}

// reclaimableLocked reports whether t has neither subscribers nor history,
// dropping expired history first. The caller holds t.mu.
func (h *Hub) reclaimableLocked(t *topic, now time.Time) bool {
	if len(t.subs) > 0 || t.closed {
		return false
	}
	if h.cfg.HistoryTTL > 0 {
		h.trim(t, now)
	}
	return len(t.history) == 0
}

// reclaim deletes t if it has neither subscribers nor history.
func (h *Hub) reclaim(t *topic) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.topics[t.name] != t {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if h.reclaimableLocked(t, time.Now()) {
		t.dead = true
		delete(h.topics, t.name)
	}
}

// Publish sends e to every subscriber of the topic and adds it to the
// topic's history. An empty e.ID is replaced by the topic's next sequence
// number. It returns the event as published (with its ID).
func (h *Hub) Publish(topicName string, e Event) (Event, error) {
	t, err := h.lockTopic(topicName)
	if err != nil {
		return Event{}, err
	}
	e, empty, err := h.publishLocked(t, e)
	t.mu.Unlock()
	if empty {
		h.reclaim(t)
	}
	return e, err
}

// publishLocked is Publish with t.mu held. empty says that t has neither
// subscribers nor history left, so it may be reclaimed.
func (h *Hub) publishLocked(t *topic, e Event) (_ Event, empty bool, _ error) {
	if t.closed {
		return Event{}, false, ErrHubClosed
	}
	if e.ID == "" {
		e.ID = strconv.FormatUint(h.seq.Add(1), 10)
	}
	raw, err := AppendEvent(nil, e)
	if err != nil {
		return Event{}, len(t.subs) == 0 && len(t.history) == 0, err
	}
	ent := &entry{ev: e, raw: raw}
	if h.cfg.HistorySize > 0 {
		ent.at = time.Now()
		t.history = append(t.history, ent)
		t.bytes += len(raw)
		h.trim(t, ent.at)
	}
	// Backwards, so that removing a dropped subscriber (which moves the
	// last one into its place) skips nobody.
	for i := len(t.subs) - 1; i >= 0; i-- {
		if sub := t.subs[i]; !sub.deliver(ent) {
			t.remove(sub)
		}
	}
	return e, len(t.subs) == 0 && len(t.history) == 0, nil
}

// trim drops history entries past the configured bounds.
func (h *Hub) trim(t *topic, now time.Time) {
	drop := 0
	for drop < len(t.history) {
		old := t.history[drop]
		over := len(t.history)-drop > h.cfg.HistorySize || t.bytes > h.cfg.HistoryBytes
		expired := h.cfg.HistoryTTL > 0 && now.Sub(old.at) > h.cfg.HistoryTTL
		if !over && !expired {
			break
		}
		t.bytes -= len(old.raw)
		t.history[drop] = nil
		drop++
	}
	if drop > 0 {
		t.history = t.history[drop:]
		if cap(t.history) > 2*h.cfg.HistorySize+16 {
			t.history = append([]*entry(nil), t.history...)
		}
	}
}

// replayFrom returns the history after lastID and whether lastID was not
// found (a gap). The caller holds t.mu.
func (h *Hub) replayFrom(t *topic, lastID string) ([]*entry, bool) {
	if lastID == "" {
		return nil, false
	}
	if h.cfg.HistoryTTL > 0 {
		h.trim(t, time.Now())
	}
	for i := len(t.history) - 1; i >= 0; i-- {
		if t.history[i].ev.ID == lastID {
			return t.history[i+1:], false
		}
	}
	return t.history, true
}

// Subscription receives a topic's events. Next and Close are safe for
// concurrent use; Next is meant for one goroutine.
type Subscription struct {
	t      *topic
	idx    int     // position in t.subs, -1 once removed; guarded by t.mu
	stream *Stream // set for Handler's subscribers, which have no queue
	max    int     // queued events before the subscriber is dropped
	replay []*entry
	gap    bool

	mu     sync.Mutex
	queue  []*entry // queue[head:] waits for Next; grows only as needed
	head   int
	err    error         // why the subscription ended
	notify chan struct{} // cap 1: queue or err changed
}

// deliver hands ent to the subscriber without waiting. It reports false
// when the subscriber was dropped. The caller holds t.mu.
func (s *Subscription) deliver(ent *entry) bool {
	if s.stream != nil {
		return s.stream.tryEnqueue(ent.raw)
	}
	s.mu.Lock()
	if len(s.queue)-s.head >= s.max {
		s.mu.Unlock()
		s.end(ErrSlowSubscriber, false)
		return false
	}
	s.queue = append(s.queue, ent)
	s.mu.Unlock()
	s.wake()
	return true
}

func (s *Subscription) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// end sets the subscription's error (the first one wins); with discard,
// queued events are dropped too.
func (s *Subscription) end(err error, discard bool) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	if discard {
		clear(s.queue)
		s.queue, s.head = nil, 0
	}
	s.mu.Unlock()
	s.wake()
}

// Subscribe subscribes to a topic. lastEventID, if not empty, asks for the
// events published after it (see Hub for what happens when it is unknown).
func (h *Hub) Subscribe(topicName, lastEventID string) (*Subscription, error) {
	t, err := h.lockTopic(topicName)
	if err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrHubClosed
	}
	replay, gap := h.replayFrom(t, lastEventID)
	s := &Subscription{
		t:      t,
		max:    h.cfg.SubscriberBuffer,
		replay: append([]*entry(nil), replay...),
		gap:    gap,
		notify: make(chan struct{}, 1),
	}
	t.add(s)
	return s, nil
}

// Gap reports whether the Last-Event-ID given to Subscribe was not found in
// the history, so that events may have been missed and the whole retained
// history was replayed instead.
func (s *Subscription) Gap() bool { return s.gap }

// Next returns the next event: replayed ones first, then live ones. It
// returns ctx's error when ctx ends, and the subscription's error once it
// has ended: ErrSlowSubscriber or ErrHubClosed after the events queued
// before, ErrUnsubscribed at once.
func (s *Subscription) Next(ctx context.Context) (Event, error) {
	if len(s.replay) > 0 {
		ent := s.replay[0]
		s.replay[0] = nil
		s.replay = s.replay[1:]
		return ent.ev, nil
	}
	for {
		s.mu.Lock()
		if s.head < len(s.queue) {
			ent := s.queue[s.head]
			s.queue[s.head] = nil
			if s.head++; s.head == len(s.queue) {
				s.queue, s.head = s.queue[:0], 0
			}
			s.mu.Unlock()
			return ent.ev, nil
		}
		err := s.err
		s.mu.Unlock()
		if err != nil {
			return Event{}, err
		}
		select {
		case <-s.notify:
		case <-ctx.Done():
			return Event{}, ctx.Err()
		}
	}
}

// Close ends the subscription; Next then returns ErrUnsubscribed. It is
// idempotent. The last subscriber of a topic without history takes the
// topic with it.
func (s *Subscription) Close() {
	s.t.mu.Lock()
	removed := s.t.remove(s)
	last := removed && len(s.t.subs) == 0
	s.t.mu.Unlock()
	if removed && s.stream == nil {
		s.end(ErrUnsubscribed, true)
	}
	if last {
		s.t.h.reclaim(s.t)
	}
}

// Close ends every subscription with ErrHubClosed and makes further
// Publish and Subscribe calls fail. Streams served by Handler end.
func (h *Hub) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	topics := h.topics
	h.topics = nil
	h.mu.Unlock()
	for _, t := range topics {
		t.mu.Lock()
		t.closed = true
		for len(t.subs) > 0 {
			s := t.subs[len(t.subs)-1]
			t.remove(s)
			if s.stream != nil {
				s.stream.mu.Lock()
				s.stream.failLocked(ErrHubClosed)
				s.stream.mu.Unlock()
				continue
			}
			s.end(ErrHubClosed, false)
		}
		t.mu.Unlock()
	}
}

// Handler returns an http.Handler that streams a topic to each request: the
// topic is topicOf(r). A client's Last-Event-ID header is honoured as
// Subscribe describes; when it is not in the history, the client first gets
// an event of type GapEventType whose data is that Last-Event-ID, then the
// whole retained history. A client that falls behind by more than the
// stream buffer is disconnected; it reconnects and catches up from the
// history. When the hub is closed or holds MaxTopics topics already, the
// answer is 503 Service Unavailable.
func (h *Hub) Handler(topicOf func(*http.Request) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Subscribe before the headers go out: a client that has seen
		// them receives every event published from then on.
		st := newStream(w, r, h.cfg.Stream)
		t, err := h.lockTopic(topicOf(r))
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		sub := &Subscription{t: t, stream: st, idx: -1}
		if t.closed {
			t.mu.Unlock()
			http.Error(w, ErrHubClosed.Error(), http.StatusServiceUnavailable)
			return
		}
		replay, gap := h.replayFrom(t, st.LastEventID())
		if gap {
			notice, _ := AppendEvent(nil, Event{Type: GapEventType, Data: st.LastEventID()})
			st.tryEnqueue(notice)
		}
		for _, ent := range replay {
			st.tryEnqueue(ent.raw)
		}
		t.add(sub)
		t.mu.Unlock()
		defer sub.Close()
		if st.start() != nil {
			return
		}
		// The handler's goroutine is the writer: one goroutine less per
		// client. It returns when the client leaves or is dropped.
		st.writeLoop()
		st.Close()
	})
}
