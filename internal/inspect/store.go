package inspect

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/sse"
)

// Defaults for Config's zero values.
const (
	DefaultBodyLimit   = 1 << 20
	DefaultMaxRequests = 500
	DefaultMaxBytes    = 64 << 20
	// itemTextLimit bounds the text kept of one item (an SSE event's
	// data, an NDJSON line, a WebSocket message).
	itemTextLimit = 64 << 10
)

// Config configures an Inspector. The zero value means the defaults.
type Config struct {
	// BodyLimit is the bytes kept of each request and response body, and
	// of each stream's items together; beyond it bytes are only counted.
	// Default 1 MiB.
	BodyLimit int64
	// MaxRequests is how many requests are kept, newest first. Default
	// 500.
	MaxRequests int
	// MaxBytes bounds the captured bytes of all kept requests together:
	// the oldest finished requests go first; when only requests in flight
	// are left, capture stops (counting goes on). Default 64 MiB.
	MaxBytes int64
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Inspector keeps the recent requests. Its methods are safe for
// concurrent use.
type Inspector struct {
	cfg Config
	hub *sse.Hub

	// Replays run on past the API call that started them (a replayed
	// stream lasts as long as it lasts): under bgCtx, which Close ends,
	// counted in bg, which Close waits for.
	bgCtx    context.Context
	bgCancel context.CancelFunc
	bg       sync.WaitGroup
	// replaying counts the replays running, so that Wrap looks for a
	// replay mark in a request's context only while there may be one.
	replaying atomic.Int32

	pub publisher // live updates: see publish.go

	mu     sync.Mutex
	seq    uint64
	recs   []*Entry // oldest first, so in the order of their seq
	bytes  int64    // captured bytes of recs
	closed bool     // Close was called: no new background work
}

// New returns an empty Inspector.
func New(cfg Config) *Inspector {
	if cfg.BodyLimit <= 0 {
		cfg.BodyLimit = DefaultBodyLimit
	}
	if cfg.MaxRequests <= 0 {
		cfg.MaxRequests = DefaultMaxRequests
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	bgCtx, bgCancel := context.WithCancel(context.Background())
	in := &Inspector{
		cfg:      cfg,
		hub:      sse.NewHub(sse.HubConfig{HistorySize: 1000, MaxTopics: 1}),
		bgCtx:    bgCtx,
		bgCancel: bgCancel,
		pub:      newPublisher(),
	}
	go in.publishLoop()
	return in
}

// Config returns the configuration in use (defaults filled in).
func (in *Inspector) Config() Config { return in.cfg }

// Hub is where live updates are published, on Topic.
func (in *Inspector) Hub() *sse.Hub { return in.hub }

// Close ends the replays still running (and waits for them), the
// publisher of live updates and the hub's subscriptions. It is
// idempotent.
func (in *Inspector) Close() {
	in.mu.Lock()
	first := !in.closed
	in.closed = true
	in.mu.Unlock()
	in.bgCancel()
	in.bg.Wait()
	if first {
		close(in.pub.stop)
	}
	<-in.pub.done
	in.hub.Close()
}

// goBackground runs f in a goroutine that Close cancels (through ctx) and
// waits for; false, without running f, once Close was called.
func (in *Inspector) goBackground(f func(ctx context.Context)) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return false
	}
	in.bg.Add(1)
	go func() {
		defer in.bg.Done()
		f(in.bgCtx)
	}()
	return true
}

// Entry is one request being recorded. Its methods are called by the
// capture as the request passes; they never block on a reader.
type Entry struct {
	in  *Inspector
	seq uint64 // its ID, as a number (the string is made when shown)
	// Guarded by in.mu.
	req      Request // its ID is set by idLocked; its Time is when it began
	reqBody  []byte
	respBody []byte
	items    []Item
	itemText int64 // bytes of Text in items
	hdrBytes int64 // bytes of the headers, as counted toward MaxBytes
	// The headers until viewLocked makes them req's RequestHeaders and
	// ResponseHeaders; reqHdr may hold a request's head unparsed instead
	// (BeginHead).
	reqHdr, respHdr flatHeader
	done            bool
	removed         bool
	// For the publisher (publish.go): a change not yet published, a
	// publication queued, published at least once.
	changed, queued, shown bool
}

// Begin records a new request (replayOf: the ID it replays, or "").
func (in *Inspector) Begin(r *http.Request, replayOf string) *Entry {
	now := in.cfg.Now()
	e := &Entry{in: in} // 512 bytes: within a size class of objects without a malloc header
	var hb int64
	e.reqHdr, hb = flatten(r.Header)
	e.hdrBytes = hb
	e.req = Request{
		Time:       now,
		Method:     r.Method,
		Path:       requestURI(r),
		Host:       r.Host,
		Proto:      r.Proto,
		RemoteAddr: visitor(r),
		ReplayOf:   replayOf,
		State:      StateWaiting,
	}
	in.add(e, hb)
	return e
}

// BeginHead records a new request from its HTTP/1.1 head as it went to the
// local server (a pipe's: the agent keeps no parsed request of its own),
// method and target being its request line's. The rest of the head is
// kept as it is and read with net/http's parser when the record is first
// shown (viewLocked), as its headers are made a map only then: a request
// nobody looks at costs no parse. A head that cannot be read (cut, or
// larger than the agent kept) leaves a note and no headers.
func (in *Inspector) BeginHead(method, target string, head []byte) *Entry {
	now := in.cfg.Now()
	e := &Entry{in: in, reqHdr: flatHeader{rawHead, string(head)}}
	hb := int64(len(head))
	e.hdrBytes = hb
	e.req = Request{Time: now, Method: method, Path: target, State: StateWaiting}
	in.add(e, hb)
	return e
}

// add keeps e, a new record whose headers count hb bytes, as the newest.
func (in *Inspector) add(e *Entry, hb int64) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.seq++
	e.seq = in.seq
	in.recs = append(in.recs, e)
	in.bytes += hb
	in.evictLocked()
	in.publishLocked(e)
}

// rawHead, as the first name of a flatHeader (which no header field has),
// marks one that holds a request's head unparsed, as its first value.
const rawHead = ""

// readHeadLocked reads the head BeginHead kept into the record: its Host,
// protocol, visitor and headers.
func (e *Entry) readHeadLocked(head string) {
	r, err := http.ReadRequest(bufio.NewReaderSize(strings.NewReader(head), len(head)))
	if err != nil {
		e.noteLocked(fmt.Sprintf("the request's head could not be read (%d bytes kept): its fields are not shown", len(head)))
		return
	}
	e.req.RequestHeaders, e.req.Host, e.req.Proto, e.req.RemoteAddr = r.Header, r.Host, r.Proto, visitor(r)
}

// requestURI is the request's path and query: as received (the request
// line's target, HTTP/2's :path), which is what URL.RequestURI would
// rebuild from the parsed URL, without an allocation; the URL's for a
// target in absolute form, and for a request built by a client (a replay),
// which has no RequestURI.
func requestURI(r *http.Request) string {
	if strings.HasPrefix(r.RequestURI, "/") {
		return r.RequestURI
	}
	return r.URL.RequestURI()
}

// visitor is the public client's address: the first of X-Forwarded-For
// (set by the edge), else the connection's.
func visitor(r *http.Request) string {
	if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
		first, _, _ := strings.Cut(xff, ",")
		return strings.TrimSpace(first)
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// flatHeader is a copy of a header as it is kept until somebody looks at
// it (viewLocked): its names and values in pairs, the values of a name
// together, in one allocation (an http.Header costs a map and its groups
// besides, on the request's path).
type flatHeader []string

// flatten copies h, and says how many bytes the copy counts toward
// MaxBytes. Names without values are left out.
func flatten(h http.Header) (_ flatHeader, size int64) {
	if len(h) == 0 {
		return nil, 0
	}
	f := make(flatHeader, 0, 2*len(h)+4) // room for a few names with more values
	for k, vv := range h {
		for _, v := range vv {
			f = append(f, k, v)
			size += int64(len(k) + len(v) + 4)
		}
	}
	if len(f) == 0 {
		return nil, 0
	}
	return f, size
}

// header is f as an http.Header, never nil.
func (f flatHeader) header() http.Header {
	names := 0
	for i := 0; i < len(f); i += 2 {
		if i == 0 || f[i] != f[i-2] {
			names++
		}
	}
	h := make(http.Header, names)
	vals := make([]string, len(f)/2) // one backing array for all the values
	n := 0
	for i := 0; i < len(f); {
		k, first := f[i], n
		for ; i < len(f) && f[i] == k; i += 2 {
			vals[n] = f[i+1]
			n++
		}
		h[k] = vals[first:n:n]
	}
	return h
}

// ID is the request's ID.
func (e *Entry) ID() string { return strconv.FormatUint(e.seq, 10) }

// idLocked is the request's ID, made once (most requests are never shown:
// their IDs are not made on their path).
func (e *Entry) idLocked() string {
	if e.req.ID == "" {
		e.req.ID = e.ID()
	}
	return e.req.ID
}

// findLocked is the kept request with that ID, by its number: recs are in
// the order of their numbers.
func (in *Inspector) findLocked(id string) (*Entry, bool) {
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return nil, false
	}
	i, ok := slices.BinarySearchFunc(in.recs, n, func(e *Entry, n uint64) int { return cmp.Compare(e.seq, n) })
	if !ok || in.recs[i].idLocked() != id { // "007" is not 7's ID
		return nil, false
	}
	return in.recs[i], true
}

// capture appends p to *dst within the body limit and the inspector's
// total, and reports whether some of p was not kept.
func (in *Inspector) captureLocked(e *Entry, dst *[]byte, p []byte) (kept int, cut bool) {
	room := in.cfg.BodyLimit - int64(len(*dst))
	if e.removed || room <= 0 {
		return 0, len(p) > 0
	}
	n := min(int64(len(p)), room)
	for in.bytes+n > in.cfg.MaxBytes && in.evictOneLocked(e) {
	}
	if in.bytes+n > in.cfg.MaxBytes {
		n = max(0, in.cfg.MaxBytes-in.bytes)
	}
	*dst = append(*dst, p[:n]...)
	in.bytes += n
	return int(n), int(n) < len(p)
}

// RequestBody notes bytes of the request body as they pass, and reports
// whether the body is cut: no more of it will be kept (CountBody may then
// count the rest).
func (e *Entry) RequestBody(p []byte) (cut bool) {
	in := e.in
	in.mu.Lock()
	defer in.mu.Unlock()
	e.req.RequestBodySize += int64(len(p))
	if e.req.RequestBodyTruncated {
		return true
	}
	n, cut := in.captureLocked(e, &e.reqBody, p)
	e.req.RequestBodyCaptured += int64(n)
	e.req.RequestBodyTruncated = e.req.RequestBodyTruncated || cut
	return e.req.RequestBodyTruncated
}

// CountBody counts n bytes of the request body (request) or the
// response's that passed without being kept: beyond the limit, or on an
// upgraded connection (whose messages are items instead).
func (e *Entry) CountBody(request bool, n int64) {
	if n <= 0 {
		return
	}
	in := e.in
	in.mu.Lock()
	defer in.mu.Unlock()
	if request {
		e.req.RequestBodySize += n
	} else {
		e.req.ResponseBodySize += n
	}
}

// Note adds to the request's CaptureNote.
func (e *Entry) Note(note string) {
	e.in.mu.Lock()
	defer e.in.mu.Unlock()
	e.noteLocked(note)
}

func (e *Entry) noteLocked(note string) {
	if e.req.CaptureNote != "" {
		note = e.req.CaptureNote + "; " + note
	}
	e.req.CaptureNote = note
}

// Response notes the response's status and headers (a 1xx other than 101
// is not the response: it is ignored).
func (e *Entry) Response(status int, h http.Header) {
	if status < 200 && status != http.StatusSwitchingProtocols {
		return
	}
	in := e.in
	f, hb := flatten(h) // outside the lock
	now := in.cfg.Now()
	in.mu.Lock()
	defer in.mu.Unlock()
	if e.req.Status != 0 {
		return
	}
	e.req.Status = status
	e.req.HeadersMS = ms(now.Sub(e.req.Time))
	e.respHdr = f
	e.req.State = StateStreaming
	e.hdrBytes += hb
	in.bytes += hb
	in.publishLocked(e)
}

// ResponseBody notes bytes of the response body as they pass, and reports
// whether the body is cut (see RequestBody).
func (e *Entry) ResponseBody(p []byte) (cut bool) {
	in := e.in
	in.mu.Lock()
	defer in.mu.Unlock()
	e.req.ResponseBodySize += int64(len(p))
	if e.req.ResponseBodyTruncated {
		return true
	}
	n, cut := in.captureLocked(e, &e.respBody, p)
	e.req.ResponseBodyCaptured += int64(n)
	e.req.ResponseBodyTruncated = e.req.ResponseBodyTruncated || cut
	return e.req.ResponseBodyTruncated
}

// SetStream marks the response as a stream of kind (StreamSSE, ...).
func (e *Entry) SetStream(kind string) {
	in := e.in
	in.mu.Lock()
	defer in.mu.Unlock()
	if e.req.Stream != kind {
		e.req.Stream = kind
		in.publishLocked(e) // the page shows the stream before its end
	}
}

// AddItem records an item of the stream: N and TimeMS are set here, Text
// is cut to the item limit and the stream's share of the body limit; an
// item beyond that is counted in ItemsDropped. Every item, kept or not,
// is published while somebody watches (see publish.go).
func (e *Entry) AddItem(it Item) {
	in := e.in
	in.mu.Lock()
	defer in.mu.Unlock()
	e.req.ItemCount++
	it.N = e.req.ItemCount
	it.TimeMS = ms(in.cfg.Now().Sub(e.req.Time))
	if len(it.Text) > itemTextLimit {
		it.Text, it.Truncated = validPrefix(it.Text, itemTextLimit), true
	}
	n := int64(len(it.Text)) + 64
	if e.removed || e.itemText+n > in.cfg.BodyLimit {
		e.req.ItemsDropped++
	} else {
		for in.bytes+n > in.cfg.MaxBytes && in.evictOneLocked(e) {
		}
		if in.bytes+n <= in.cfg.MaxBytes {
			e.items = append(e.items, it)
			e.itemText += n
			in.bytes += n
		} else {
			e.req.ItemsDropped++
		}
	}
	in.publishItemLocked(e, it)
}

// validPrefix cuts s to at most n bytes without splitting a UTF-8
// sequence.
func validPrefix(s string, n int) string {
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// SetTrailers notes the request's or the response's trailers.
func (e *Entry) SetTrailers(request bool, h http.Header) {
	if len(h) == 0 {
		return
	}
	in := e.in
	in.mu.Lock()
	defer in.mu.Unlock()
	if request {
		e.req.RequestTrailers = h.Clone()
	} else {
		e.req.ResponseTrailers = h.Clone()
	}
}

// End finishes the record: failed with err's text when err is not nil.
func (e *Entry) End(err error) {
	in := e.in
	in.mu.Lock()
	defer in.mu.Unlock()
	if e.done {
		return
	}
	e.done = true
	e.req.DurationMS = ms(in.cfg.Now().Sub(e.req.Time))
	e.req.State = StateDone
	if err != nil {
		e.req.State, e.req.Error = StateFailed, err.Error()
	}
	in.publishLocked(e)
	in.evictLocked()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// evictLocked drops the oldest requests beyond MaxRequests.
func (in *Inspector) evictLocked() {
	for len(in.recs) > in.cfg.MaxRequests && in.evictOneLocked(nil) {
	}
}

// evictOneLocked drops the oldest request other than keep, finished
// ones first; beyond MaxRequests, requests in flight go too (their capture
// stops). It reports whether one was dropped.
func (in *Inspector) evictOneLocked(keep *Entry) bool {
	idx := -1
	for i, e := range in.recs {
		if e != keep && e.done {
			idx = i
			break
		}
	}
	if idx < 0 && len(in.recs) > in.cfg.MaxRequests {
		for i, e := range in.recs {
			if e != keep {
				idx = i
				break
			}
		}
	}
	if idx < 0 {
		return false
	}
	e := in.recs[idx]
	if idx == 0 {
		// The usual case, the oldest: no copy of the others (a copy of
		// pointers is a write barrier per element).
		in.recs[0] = nil
		in.recs = in.recs[1:]
	} else {
		in.recs = append(in.recs[:idx], in.recs[idx+1:]...)
	}
	in.bytes -= e.sizeLocked()
	e.removed = true
	e.reqBody, e.respBody, e.items = nil, nil, nil
	in.removedLocked(e)
	return true
}

// sizeLocked is what the entry counts toward MaxBytes.
func (e *Entry) sizeLocked() int64 {
	return int64(len(e.reqBody)+len(e.respBody)) + e.itemText + e.hdrBytes
}

// viewLocked is the entry's Request, items included when withItems; the
// headers are shared, not copied: callers must not modify them. Headers
// are never nil: they encode as {} rather than null.
func (e *Entry) viewLocked(withItems bool) Request {
	if e.reqHdr != nil {
		if e.reqHdr[0] == rawHead {
			e.readHeadLocked(e.reqHdr[1])
		} else {
			e.req.RequestHeaders = e.reqHdr.header()
		}
		e.reqHdr = nil
	}
	if e.respHdr != nil {
		e.req.ResponseHeaders, e.respHdr = e.respHdr.header(), nil
	}
	e.idLocked()
	r := e.req
	if r.RequestHeaders == nil {
		r.RequestHeaders = http.Header{}
	}
	if r.ResponseHeaders == nil {
		r.ResponseHeaders = http.Header{}
	}
	if !e.done {
		r.DurationMS = ms(e.in.cfg.Now().Sub(e.req.Time))
	}
	if withItems {
		r.Items = append([]Item(nil), e.items...)
	}
	return r
}

// List returns the kept requests, newest first, without their items.
func (in *Inspector) List() []Request {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make([]Request, 0, len(in.recs))
	for i := len(in.recs) - 1; i >= 0; i-- {
		out = append(out, in.recs[i].viewLocked(false))
	}
	return out
}

// Get returns the request with that ID, with its items.
func (in *Inspector) Get(id string) (Request, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	e, ok := in.findLocked(id)
	if !ok {
		return Request{}, false
	}
	return e.viewLocked(true), true
}

// Body returns the captured bytes of the request's body (request true) or
// its response's, and the request; ok is false for an unknown ID.
func (in *Inspector) Body(id string, request bool) (body []byte, r Request, ok bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	e, ok := in.findLocked(id)
	if !ok {
		return nil, Request{}, false
	}
	b := e.respBody
	if request {
		b = e.reqBody
	}
	return append([]byte(nil), b...), e.viewLocked(false), true
}
