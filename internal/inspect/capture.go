package inspect

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Wrap records each request h serves: the request and its body as the
// handler reads it, the response's status, headers, body and trailers as
// the handler writes them, and the items of streams as they pass (SSE
// events, NDJSON lines, WebSocket messages both ways after a 101). It is a
// tee: the handler's reads and writes go through unchanged and at once,
// Flush, Hijack and the http.ResponseController features keep working
// (the writer has Unwrap), 1xx responses pass through, and nothing the
// capture does can fail the request: a stream it cannot decode is noted
// (Request.CaptureNote) and no longer decoded.
//
// A request whose context carries a replay mark (withReplay) is recorded
// as a replay, and its Entry left in the mark; one whose mark already
// holds an Entry is being recorded by an outer Wrap and passes through, so
// that a replay sent to Wrap(h) where h holds a Wrap of its own (the
// agent's handler) is recorded once.
//
// The record ends (Entry.End) once, when the handler returns or, for a
// hijacked connection, when the handler has returned and the connection
// is closed (or both its directions are).
func (in *Inspector) Wrap(h http.Handler) http.Handler { return &wrapped{in: in, h: h} }

// wrapped is Wrap's handler. Its ServeHTTP is one small frame between the
// server's and the handler's: the handler's goroutine, whose stack grows
// under the reverse proxy (each growth copies the stack and walks its
// frames), carries no more than that.
type wrapped struct {
	in *Inspector
	h  http.Handler
}

func (wh *wrapped) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cw, r := wh.in.begin(w, r)
	if cw == nil {
		wh.h.ServeHTTP(w, r)
		return
	}
	defer cw.served()
	wh.h.ServeHTTP(cw, r)
}

// begin starts recording r, and returns the writer and the request the
// handler gets; a nil writer when r is already being recorded (a replay
// through an outer Wrap).
func (in *Inspector) begin(w http.ResponseWriter, r *http.Request) (*captureWriter, *http.Request) {
	of := ""
	var mark *replayInfo
	if in.replaying.Load() > 0 {
		mark = replayOf(r.Context())
	}
	if mark != nil {
		if mark.Entry != nil {
			return nil, r
		}
		of = mark.Of
	}
	// The capture and its writer in one allocation.
	cc := &struct {
		c capture
		w captureWriter
	}{c: capture{in: in, e: in.Begin(r, of)}}
	c, cw := &cc.c, &cc.w
	*cw = captureWriter{ResponseWriter: w, c: c, head: r.Method == http.MethodHead}
	if mark != nil {
		mark.Entry = c.e
	}
	// A body of length 0 has no bytes to see (a server's GET has one
	// that is not NoBody over HTTP/2) nor trailers (they come after a
	// body of unknown length): it is left as it is.
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		r2 := new(http.Request)
		*r2 = *r
		r2.Body = &bodyTee{ReadCloser: r.Body, c: c, r: r}
		r = r2
	}
	return cw, r
}

// Bounds of the capture's own buffers.
const (
	// countBatch: beyond the body limit, bytes are counted here and
	// handed to the entry (its lock) once per this many.
	countBatch = 1 << 20
	// sseQueueBytes bounds the bytes waiting for the SSE parser: past it
	// the parser falls behind (bytes skipped and counted), the response
	// never waits.
	sseQueueBytes = 256 << 10
	// maxHead bounds the response head a hijacking handler writes.
	maxHead = 64 << 10
)

// capture is one request being recorded.
type capture struct {
	in *Inspector
	e  *Entry

	reqBody, respBody counter

	mu         sync.Mutex
	returned   bool  // the handler returned
	hijacked   bool  // the handler took the connection
	connClosed bool  // the hijacked connection is closed
	ended      bool  // End was called
	err        error // the first failure: the handler's panic, a write error
	feed       *sseFeed
	ws         *wsCapture // after a hijack
}

// ErrAborted is a record's failure when its response was cut: the local
// server or the client failed before its end.
var ErrAborted = errors.New("inspect: the response was aborted (the local server or the client failed mid-response)")

// served ends the record when the handler returns (or panics: the panic
// goes on, as the server expects, after the record says so). It is
// deferred: it recovers.
func (w *captureWriter) served() {
	p := recover()
	var err error
	if p != nil {
		err = fmt.Errorf("inspect: the handler aborted the response: %v", p)
		if p == http.ErrAbortHandler {
			err = ErrAborted
		}
	}
	w.finish()
	w.c.handlerReturned(err)
	if p != nil {
		panic(p)
	}
}

// fail keeps the first failure, for End.
func (c *capture) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

func (c *capture) handlerReturned(err error) {
	c.mu.Lock()
	c.returned = true
	if c.err == nil {
		c.err = err
	}
	done := !c.hijacked || c.connClosed
	c.mu.Unlock()
	if done {
		c.end()
	}
}

func (c *capture) closed() {
	c.mu.Lock()
	c.connClosed = true
	done := c.returned
	c.mu.Unlock()
	if done {
		c.end()
	}
}

// end finishes the record, once: the SSE parser is let finish what is
// queued (bounded), the counts are handed over, and End is called.
func (c *capture) end() {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return
	}
	c.ended = true
	feed, err := c.feed, c.err
	c.mu.Unlock()
	if feed != nil {
		feed.close()
	}
	c.reqBody.flush(c.e, true)
	c.respBody.flush(c.e, false)
	c.e.End(err)
}

// counter passes one body's bytes to the entry while it keeps them, then
// counts them itself and hands the count over once per countBatch: no lock
// per chunk past the limit. Its methods are called by one goroutine at a
// time, flush by any.
type counter struct {
	cut     atomic.Bool
	pending atomic.Int64
}

func (k *counter) add(e *Entry, request bool, p []byte) {
	if !k.cut.Load() {
		var cut bool
		if request {
			cut = e.RequestBody(p)
		} else {
			cut = e.ResponseBody(p)
		}
		k.cut.Store(cut)
		return
	}
	k.count(e, request, int64(len(p)))
}

// count counts n bytes that are not kept.
func (k *counter) count(e *Entry, request bool, n int64) {
	if k.pending.Add(n) >= countBatch {
		e.CountBody(request, k.pending.Swap(0))
	}
}

func (k *counter) flush(e *Entry, request bool) {
	e.CountBody(request, k.pending.Swap(0))
}

// bodyTee is the request body seen by the handler.
type bodyTee struct {
	io.ReadCloser
	c *capture
	r *http.Request // the server's, whose Trailer is set at EOF
}

func (b *bodyTee) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.c.reqBody.add(b.c.e, true, p[:n])
	}
	if err == io.EOF {
		b.c.e.SetTrailers(true, b.r.Trailer)
	}
	return n, err
}

// captureWriter is the ResponseWriter seen by the handler. Like any
// ResponseWriter, it is used by one goroutine at a time.
type captureWriter struct {
	http.ResponseWriter
	c        *capture
	head     bool     // a HEAD request: no body
	status   int      // the response's status, 0 before it
	trailers []string // the names the response announced in Trailer
	lines    *lineSplitter
	feed     *sseFeed
	hijacked bool
}

// Unwrap gives http.ResponseController the writer underneath.
func (w *captureWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// WriteHeader records the response (a 1xx passes through unrecorded).
func (w *captureWriter) WriteHeader(code int) {
	if w.status == 0 && !w.hijacked && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.begin(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *captureWriter) Write(p []byte) (int, error) {
	if w.status == 0 && !w.hijacked {
		w.begin(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	if n > 0 {
		w.body(p[:n])
	}
	if err != nil {
		w.c.fail(fmt.Errorf("inspect: writing the response: %w", err))
	}
	return n, err
}

// FlushError flushes through the writer underneath (http.ResponseController
// prefers it to Flush: errors, such as ErrNotSupported, come back).
func (w *captureWriter) FlushError() error {
	if w.status == 0 && !w.hijacked {
		w.begin(http.StatusOK)
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush keeps the writer an http.Flusher for handlers that test for one.
func (w *captureWriter) Flush() { w.FlushError() }

// Hijack takes the connection through the writer underneath, and returns
// it wrapped: what passes is decoded as a WebSocket after a 101.
func (w *captureWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.hijacked = true
	return w.c.hijack(conn, brw, w.status, w.Header())
}

// begin records the response's status and headers, and starts parsing
// the body when it is a stream.
func (w *captureWriter) begin(code int) {
	w.status = code
	h := w.Header()
	w.c.e.Response(code, h)
	for _, v := range h["Trailer"] {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				w.trailers = append(w.trailers, http.CanonicalHeaderKey(name))
			}
		}
	}
	if w.head || code == http.StatusNoContent || code == http.StatusNotModified || code < 200 {
		return
	}
	kind, seq := streamKind(h.Get("Content-Type"))
	if kind == "" {
		return
	}
	w.c.e.SetStream(kind)
	if enc := h.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		w.c.e.Note(fmt.Sprintf("the stream is compressed (%s): its items are not shown", enc))
		return
	}
	switch kind {
	case StreamSSE:
		w.feed = newSSEFeed(w.c)
		w.c.mu.Lock()
		w.c.feed = w.feed
		w.c.mu.Unlock()
	case StreamNDJSON:
		w.lines = &lineSplitter{seq: seq}
	}
}

// streamKind is the Stream of a response of that Content-Type: SSE
// (text/event-stream) or NDJSON, one JSON value a line
// (application/x-ndjson, application/ndjson, application/jsonl,
// application/x-jsonlines, application/jsonlines, and
// application/json-seq, RFC 7464, whose records' leading RS is dropped).
func streamKind(contentType string) (kind string, seq bool) {
	// The media type as mime.ParseMediaType finds it, without its
	// allocations for the many responses that are not streams.
	mt, _, _ := strings.Cut(contentType, ";")
	st, ok := streamTypes[strings.ToLower(strings.TrimSpace(mt))]
	if !ok {
		return "", false
	}
	if _, _, err := mime.ParseMediaType(contentType); err != nil {
		return "", false
	}
	return st.kind, st.seq
}

// streamTypes are the media types of streams (see streamKind).
var streamTypes = map[string]struct {
	kind string
	seq  bool
}{
	"text/event-stream":       {StreamSSE, false},
	"application/x-ndjson":    {StreamNDJSON, false},
	"application/ndjson":      {StreamNDJSON, false},
	"application/jsonl":       {StreamNDJSON, false},
	"application/x-jsonlines": {StreamNDJSON, false},
	"application/jsonlines":   {StreamNDJSON, false},
	"application/json-seq":    {StreamNDJSON, true},
}

// body notes bytes of the response body that were written.
func (w *captureWriter) body(p []byte) {
	w.c.respBody.add(w.c.e, false, p)
	switch {
	case w.feed != nil:
		w.feed.push(p)
	case w.lines != nil:
		w.lines.write(p, w.c.e)
	}
}

// finish runs when the handler returns: a handler that wrote nothing got
// a 200, a last line without its newline is a line, and the trailers are
// whatever the handler set for the names it announced, or with
// http.TrailerPrefix.
func (w *captureWriter) finish() {
	if w.hijacked {
		return
	}
	if w.status == 0 {
		w.begin(http.StatusOK)
	}
	if w.lines != nil {
		w.lines.flush(w.c.e)
	}
	h := w.Header()
	var tr http.Header
	add := func(name string, vv []string) {
		if len(vv) > 0 {
			if tr == nil {
				tr = http.Header{}
			}
			tr[name] = vv
		}
	}
	for _, name := range w.trailers {
		add(name, h[name])
	}
	for k, vv := range h {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			add(http.CanonicalHeaderKey(name), vv)
		}
	}
	w.c.e.SetTrailers(false, tr)
}

// lineSplitter cuts an NDJSON body into lines, keeping at most
// itemTextLimit bytes of each.
type lineSplitter struct {
	seq  bool   // application/json-seq: drop each record's leading RS
	buf  []byte // the line so far, cut at itemTextLimit
	size int64  // its bytes so far
}

func (s *lineSplitter) write(p []byte, e *Entry) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		part := p
		if i >= 0 {
			part = p[:i]
		}
		s.size += int64(len(part))
		if room := itemTextLimit - len(s.buf); room > 0 {
			s.buf = append(s.buf, part[:min(room, len(part))]...)
		}
		if i < 0 {
			return
		}
		s.flush(e)
		p = p[i+1:]
	}
}

// flush makes the line so far an item, unless it is blank.
func (s *lineSplitter) flush(e *Entry) {
	line, size := s.buf, s.size
	s.buf, s.size = s.buf[:0], 0
	if int64(len(line)) == size {
		if l, ok := bytes.CutSuffix(line, []byte("\r")); ok {
			line, size = l, size-1
		}
	}
	if s.seq {
		if l, ok := bytes.CutPrefix(line, []byte{0x1E}); ok {
			line, size = l, size-1
		}
	}
	if len(bytes.TrimSpace(line)) == 0 && int64(len(line)) == size {
		return
	}
	text := string(line)
	cut := int64(len(line)) < size
	if cut {
		text = validPrefix(text, len(text))
	}
	e.AddItem(Item{Kind: "line", Size: size, Text: text, Truncated: cut})
}

// Hijacked connections.

// wsCapture decodes what passes on a hijacked connection: the response
// head the handler writes, then WebSocket frames each way. Guarded by the
// capture's mu.
type wsCapture struct {
	headDone bool   // the response head has passed
	head     []byte // the head so far
	ws       bool   // a WebSocket: decode frames
	in, out  *wsDecoder
	inErr    bool // in stopped decoding
	outErr   bool
	readDone bool // reads ended
	wrDone   bool // CloseWrite was called
}

// hijack wraps the connection the handler took. status is the response's
// if the handler wrote it through WriteHeader (then no head comes on the
// connection).
func (c *capture) hijack(conn net.Conn, brw *bufio.ReadWriter, status int, h http.Header) (net.Conn, *bufio.ReadWriter, error) {
	c.mu.Lock()
	c.hijacked = true
	c.ws = &wsCapture{}
	if status != 0 {
		c.ws.headDone = true
		c.startWSLocked(status, h)
	}
	c.mu.Unlock()
	var hc net.Conn = &hijackedConn{Conn: conn, c: c}
	if _, ok := conn.(interface{ CloseWrite() error }); ok {
		hc = &hijackedHalfConn{hijackedConn{Conn: conn, c: c}}
	}
	// The server may have read bytes past the request head into
	// brw.Reader: they are read through it, and captured.
	r := bufio.NewReaderSize(&readTee{r: brw.Reader, c: c}, 16)
	return hc, bufio.NewReadWriter(r, bufio.NewWriterSize(hc, 4<<10)), nil
}

// startWSLocked decides, from the response, whether frames follow.
func (c *capture) startWSLocked(status int, h http.Header) {
	if status != http.StatusSwitchingProtocols || !strings.EqualFold(h.Get("Upgrade"), "websocket") {
		return
	}
	c.e.SetStream(StreamWebSocket)
	deflate := false
	for _, v := range h.Values("Sec-WebSocket-Extensions") {
		deflate = deflate || strings.Contains(strings.ToLower(v), "permessage-deflate")
	}
	c.ws.ws = true
	c.ws.in = newWSDecoder(itemTextLimit, deflate, func(m wsMessage) { c.e.AddItem(wsItem("in", m)) })
	c.ws.out = newWSDecoder(itemTextLimit, deflate, func(m wsMessage) { c.e.AddItem(wsItem("out", m)) })
}

// wsItem is a message as an Item: text as it is, binary payloads (and
// pings and pongs) as hex, a close frame as its code and reason.
func wsItem(dir string, m wsMessage) Item {
	it := Item{Kind: "message", Direction: dir, Opcode: wsOpcodeName(m.Opcode), Size: m.Size, Truncated: m.Truncated}
	switch {
	case m.Compressed:
		it.Text = fmt.Sprintf("compressed, %d bytes", m.Size)
	case m.Opcode == wsText:
		it.Text = string(m.Payload)
	case m.Opcode == wsClose:
		if len(m.Payload) >= 2 {
			it.Text = strings.TrimSpace(strconv.Itoa(int(binary.BigEndian.Uint16(m.Payload))) + " " + string(m.Payload[2:]))
		}
	default:
		p := m.Payload
		if len(p) > itemTextLimit/2 {
			p, it.Truncated = p[:itemTextLimit/2], true
		}
		it.Text = hex.EncodeToString(p)
	}
	return it
}

// fromClient notes bytes read from the client.
func (c *capture) fromClient(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ws := c.ws
	if ws.ws && !ws.inErr {
		if err := ws.in.Write(p); err != nil {
			ws.inErr = true
			c.e.Note(fmt.Sprintf("the client's WebSocket frames are not decoded further: %v", err))
		}
	}
	c.e.CountBody(true, int64(len(p)))
}

// toClient notes bytes written to the client: the response head, then its body.
func (c *capture) toClient(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ws := c.ws
	if !ws.headDone {
		var ok bool
		if p, ok = c.headLocked(p); !ok {
			return
		}
	}
	switch {
	case ws.ws && !ws.outErr:
		if err := ws.out.Write(p); err != nil {
			ws.outErr = true
			c.e.Note(fmt.Sprintf("the local server's WebSocket frames are not decoded further: %v", err))
		}
	case !ws.ws:
		c.respBody.add(c.e, false, p) // not a WebSocket: the raw bytes
		return
	}
	c.e.CountBody(false, int64(len(p)))
}

// headLocked takes the response head from p; it returns what follows it,
// and ok once the head is complete.
func (c *capture) headLocked(p []byte) (rest []byte, ok bool) {
	ws := c.ws
	ws.head = append(ws.head, p...)
	i := bytes.Index(ws.head, []byte("\r\n\r\n"))
	if i < 0 {
		if len(ws.head) > maxHead {
			ws.head, ws.headDone, ws.outErr, ws.inErr = nil, true, true, true
			c.e.Note("the response head written on the connection is too large: not decoded")
		}
		return nil, false
	}
	head, rest := ws.head[:i+4], ws.head[i+4:]
	ws.head, ws.headDone = nil, true
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(head)), nil)
	if err != nil {
		ws.outErr, ws.inErr = true, true
		c.e.Note(fmt.Sprintf("the response head written on the connection is not HTTP: %v", err))
		return rest, true
	}
	c.e.Response(resp.StatusCode, resp.Header)
	c.startWSLocked(resp.StatusCode, resp.Header)
	return rest, true
}

// readEnded and writeEnded: a connection closed both ways is closed.
func (c *capture) readEnded() {
	c.mu.Lock()
	c.ws.readDone = true
	both := c.ws.wrDone
	c.mu.Unlock()
	if both {
		c.closed()
	}
}

func (c *capture) writeEnded() {
	c.mu.Lock()
	c.ws.wrDone = true
	both := c.ws.readDone
	c.mu.Unlock()
	if both {
		c.closed()
	}
}

// hijackedConn is the connection a hijacking handler gets.
type hijackedConn struct {
	net.Conn
	c *capture
}

func (h *hijackedConn) Read(p []byte) (int, error) {
	n, err := h.Conn.Read(p)
	if n > 0 {
		h.c.fromClient(p[:n])
	}
	if err != nil {
		h.c.readEnded()
	}
	return n, err
}

func (h *hijackedConn) Write(p []byte) (int, error) {
	n, err := h.Conn.Write(p)
	if n > 0 {
		h.c.toClient(p[:n])
	}
	return n, err
}

func (h *hijackedConn) Close() error {
	err := h.Conn.Close()
	h.c.closed()
	return err
}

// hijackedHalfConn is a hijackedConn whose connection can close its
// writing half (TCP): so can the wrapper.
type hijackedHalfConn struct{ hijackedConn }

func (h *hijackedHalfConn) CloseWrite() error {
	err := h.Conn.(interface{ CloseWrite() error }).CloseWrite()
	h.c.writeEnded()
	return err
}

// readTee captures what is read through the hijacked connection's
// buffered reader.
type readTee struct {
	r io.Reader
	c *capture
}

func (t *readTee) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.c.fromClient(p[:n])
	}
	if err != nil {
		t.c.readEnded()
	}
	return n, err
}
