package tunnel

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/sluicehq/sluice/internal/reqctx"
)

// h2sStream is one stream of an h2Server: its request body (body), its
// response (w) and the state they share with the read loop, guarded by
// the server's mu unless said otherwise.
type h2sStream struct {
	h2Stream // its trailer goes into reqTrailer at the body's end
	c        *h2Server
	ctx      *reqctx.Context // the request's; Cancel ends it

	// receiving (the request body)
	recvWin      int64 // what the peer may still send
	unacked      int64 // read, not yet granted again
	needContinue bool  // read only by the body's reader: 100 Continue on the first read
	reqTrailer   http.Header

	// sending (the response)
	reset       error // the stream ended (reset, or the connection): writes fail
	handlerDone bool
	headersOut  bool // the final header block went out (guarded by c.wmu)

	body h2Body
	w    h2Writer
}

// h2RecvBuf holds a request body's received bytes in pooled chunks, taken
// only while bytes wait.
type h2RecvBuf struct {
	chunks []*h2Chunk
	r      int // read offset in chunks[0]
	n      int // bytes held
}

type h2Chunk struct{ b []byte }

// h2ChunkSizes are the chunk classes: a frame's bytes go in the smallest
// that holds them (frames are at most h2AgentFrameSize).
var h2ChunkSizes = [...]int{1 << 10, 4 << 10, 16 << 10, h2AgentFrameSize}

var h2ChunkPools [len(h2ChunkSizes)]sync.Pool

func getChunk(n int) *h2Chunk {
	for i, size := range h2ChunkSizes {
		if n <= size || i == len(h2ChunkSizes)-1 {
			if v := h2ChunkPools[i].Get(); v != nil {
				ch := v.(*h2Chunk)
				ch.b = ch.b[:0]
				return ch
			}
			return &h2Chunk{b: make([]byte, 0, max(size, n))}
		}
	}
	panic("unreachable")
}

func putChunk(ch *h2Chunk) {
	for i, size := range h2ChunkSizes {
		if cap(ch.b) == size {
			h2ChunkPools[i].Put(ch)
			return
		}
	}
}

// write appends p.
func (b *h2RecvBuf) write(p []byte) {
	b.n += len(p)
	if k := len(b.chunks); k > 0 {
		last := b.chunks[k-1]
		m := min(len(p), cap(last.b)-len(last.b))
		last.b = append(last.b, p[:m]...)
		p = p[m:]
	}
	for len(p) > 0 {
		ch := getChunk(len(p))
		m := min(len(p), cap(ch.b))
		ch.b = append(ch.b, p[:m]...)
		p = p[m:]
		b.chunks = append(b.chunks, ch)
	}
}

// read moves bytes into p.
func (b *h2RecvBuf) read(p []byte) int {
	n := 0
	for n < len(p) && len(b.chunks) > 0 {
		ch := b.chunks[0]
		m := copy(p[n:], ch.b[b.r:])
		n += m
		b.r += m
		if b.r == len(ch.b) {
			b.r = 0
			b.chunks[0] = nil
			b.chunks = b.chunks[1:]
			putChunk(ch)
		}
	}
	if len(b.chunks) == 0 {
		b.chunks = nil
	}
	b.n -= n
	return n
}

// release drops what is held, returning its size.
func (b *h2RecvBuf) release() int {
	n := b.n
	for _, ch := range b.chunks {
		putChunk(ch)
	}
	*b = h2RecvBuf{}
	return n
}

// h2Body is a stream's request body. Read and Close may be called
// concurrently.
type h2Body struct{ st *h2sStream }

func (b *h2Body) Read(p []byte) (int, error) {
	st := b.st
	c := st.c
	if st.needContinue {
		st.needContinue = false
		st.w.informational(http.StatusContinue, nil)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return st.readLocked(p, errBodyClosed, func(n int64) error {
		return c.consumedLocked(st, n)
	}, func(trailer http.Header) {
		for k, vv := range trailer {
			st.reqTrailer[k] = vv
		}
	})
}

// Close drops the bytes held and those to come (their window goes back to
// the connection only: the stream's peer has nobody to send to).
func (b *h2Body) Close() error {
	st := b.st
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if n, _ := st.closeBodyLocked(); n > 0 {
		c.consumedLocked(nil, n)
	}
	return nil
}

// h2Writer is a stream's http.ResponseWriter. Like net/http's, it is for
// the handler's goroutine (and, for full-duplex streams, writes from one
// goroutine while another reads the body).
type h2Writer struct {
	st          *h2sStream
	head        bool // a HEAD request's response: no body
	header      http.Header
	status      int
	wroteHeader bool
	sentHeader  bool
	// the response head as of WriteHeader (net/http ignores later
	// changes, trailers aside), in wire form
	fields   []hpack.HeaderField
	clen     string // a valid Content-Length the handler set
	clenSet  bool   // the handler set Content-Length at all
	sentLen  int64  // clen's value
	hasCT    bool
	hasCE    bool
	trailers []string // declared trailers, canonical
	wrote    int64
	buf      *h2Chunk // body bytes not sent yet, at most h2ResponseBuffer
	dataHdr  [9]byte
	ended    bool // END_STREAM went out (or was attempted)
}

func (w *h2Writer) Header() http.Header {
	if w.header == nil {
		w.header = http.Header{}
	}
	return w.header
}

func (w *h2Writer) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 {
		if code != http.StatusSwitchingProtocols { // not in HTTP/2
			w.informational(code, w.header)
		}
		return
	}
	w.wroteHeader = true
	w.status = code
	if w.fields == nil {
		w.fields = make([]hpack.HeaderField, 0, len(w.header)+2) // one allocation, not one per doubling
	}
	for k, vv := range w.header {
		switch k {
		case "Content-Length":
			w.clenSet = true
			if len(vv) > 0 {
				if n, err := strconv.ParseUint(vv[0], 10, 63); err == nil {
					w.clen, w.sentLen = vv[0], int64(n)
				}
			}
			continue
		case "Connection":
			continue
		case "Content-Type":
			w.hasCT = true
		case "Content-Encoding":
			w.hasCE = len(vv) > 0 && vv[0] != ""
		case "Trailer":
			for _, v := range vv {
				for name := range strings.SplitSeq(v, ",") {
					w.declareTrailer(strings.TrimSpace(name))
				}
			}
		}
		w.fields = appendFields(w.fields, k, vv)
	}
}

// appendFields appends the wire form of field k's values, leaving out
// what HTTP/2 cannot carry, as x/net's server does.
func appendFields(dst []hpack.HeaderField, k string, vv []string) []hpack.HeaderField {
	name, ok := lowerField(k)
	if !ok {
		return dst
	}
	for _, v := range vv {
		if !httpguts.ValidHeaderFieldValue(v) || name == "transfer-encoding" && v != "trailers" {
			continue
		}
		dst = append(dst, hpack.HeaderField{Name: name, Value: v})
	}
	return dst
}

func (w *h2Writer) declareTrailer(k string) {
	if k == "" {
		return
	}
	k = http.CanonicalHeaderKey(k)
	if httpguts.ValidTrailerHeader(k) && !slices.Contains(w.trailers, k) {
		w.trailers = append(w.trailers, k)
	}
}

func (w *h2Writer) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.wrote += int64(len(p))
	if w.clen != "" && w.wrote > w.sentLen {
		return 0, errTooLong
	}
	if w.buf == nil && len(p) == 0 {
		return 0, nil
	}
	held := 0
	if w.buf != nil {
		held = len(w.buf.b)
	}
	if held+len(p) <= h2ResponseBuffer {
		if w.buf == nil {
			w.buf = getChunk(h2ResponseBuffer)
		}
		w.buf.b = append(w.buf.b, p...)
		return len(p), nil
	}
	var a []byte
	if w.buf != nil {
		a = w.buf.b
	}
	if err := w.send(a, p, false); err != nil {
		return 0, err
	}
	w.release()
	return len(p), nil
}

func (w *h2Writer) Flush() { w.FlushError() }

// FlushError sends the headers, if not yet sent, and the body bytes held.
func (w *h2Writer) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	var a []byte
	if w.buf != nil {
		a = w.buf.b
	}
	if len(a) == 0 && w.sentHeader {
		c := w.st.c
		c.mu.Lock()
		err := w.st.reset
		c.mu.Unlock()
		return err
	}
	err := w.send(a, nil, false)
	w.release()
	return err
}

// EnableFullDuplex: HTTP/2 streams are full-duplex.
func (w *h2Writer) EnableFullDuplex() error { return nil }

// SetReadDeadline and SetWriteDeadline are not supported (nothing in the
// agent uses them).
func (w *h2Writer) SetReadDeadline(time.Time) error  { return http.ErrNotSupported }
func (w *h2Writer) SetWriteDeadline(time.Time) error { return http.ErrNotSupported }

// release gives the held-bytes buffer back.
func (w *h2Writer) release() {
	if w.buf != nil {
		putChunk(w.buf)
		w.buf = nil
	}
}

// finish ends the response once the handler returned: the headers (with
// the whole body's Content-Length when it was all held), the bytes held,
// END_STREAM, the trailers.
func (w *h2Writer) finish() {
	if w.ended {
		return
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	// Trailers set under http.TrailerPrefix, undeclared.
	for k, vv := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			w.declareTrailer(name)
			w.header[http.CanonicalHeaderKey(name)] = vv
		}
	}
	slices.Sort(w.trailers)
	var a []byte
	if w.buf != nil {
		a = w.buf.b
	}
	w.send(a, nil, true)
}

// informational sends a 1xx head at once, unless the final one went out.
func (w *h2Writer) informational(code int, h http.Header) {
	var fields []hpack.HeaderField
	for k, vv := range h {
		if k != "Content-Length" && k != "Transfer-Encoding" {
			fields = appendFields(fields, k, vv)
		}
	}
	c := w.st.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if w.st.headersOut {
		return
	}
	c.mu.Lock()
	err := w.st.reset
	c.mu.Unlock()
	if err != nil {
		return
	}
	b := c.headerFrames(w.st.id, code, fields, "", "", false)
	c.out.WriteBuffers([][]byte{b})
}

// send sends the headers if they did not go out yet, then a and b as DATA
// within the peer's windows, and with final the end of the response:
// END_STREAM, on the last frame or on trailers.
func (w *h2Writer) send(a, b []byte, final bool) error {
	st := w.st
	c := st.c
	if w.ended {
		return nil
	}
	if !final && w.clen != "" && w.wrote == w.sentLen && len(w.trailers) == 0 && !w.prefixTrailers() {
		// The whole body of the Content-Length goes: END_STREAM with
		// it, not in a frame of its own when the handler returns.
		final = true
	}
	if final {
		w.ended = true
	}
	pending := !w.sentHeader
	w.sentHeader = true
	var ctype, clen string
	if pending {
		clen = w.clen
		first := a
		if len(first) == 0 {
			first = b
		}
		if !w.clenSet && final && bodyAllowed(w.status) && (len(first) > 0 || !w.head) {
			clen = strconv.Itoa(len(first))
		}
		if !w.hasCE && !w.hasCT && bodyAllowed(w.status) && len(first) > 0 {
			ctype = http.DetectContentType(first)
		}
		if w.head || final && len(a)+len(b) == 0 && len(w.trailers) == 0 {
			return w.write(true, clen, ctype, nil, false, true)
		}
	} else if w.head {
		return nil
	}
	trailers := final && w.nonEmptyTrailers()
	end := final && !trailers
	sentEnd := false
	for i, p := range [2][]byte{a, b} {
		for len(p) > 0 {
			n, err := c.reserve(st, len(p), !pending)
			if err != nil {
				return err
			}
			if n == 0 { // no window yet: the headers go first
				if err := w.write(true, clen, ctype, nil, false, false); err != nil {
					return err
				}
				pending = false
				continue
			}
			last := end && n == len(p) && (i == 1 || len(b) == 0)
			if err := w.write(pending, clen, ctype, p[:n], true, last); err != nil {
				return err
			}
			pending, sentEnd = false, last
			p = p[n:]
		}
	}
	if pending || end && !sentEnd {
		if err := w.write(pending, clen, ctype, nil, end && !sentEnd, end && !sentEnd); err != nil {
			return err
		}
	}
	if trailers {
		var fields []hpack.HeaderField
		for _, k := range w.trailers {
			fields = appendFields(fields, k, w.header[k])
		}
		c.wmu.Lock()
		defer c.wmu.Unlock()
		if err := c.streamErr(st); err != nil {
			return err
		}
		_, err := c.out.WriteBuffers([][]byte{c.headerFrames(st.id, 0, fields, "", "", true)})
		return err
	}
	return nil
}

// prefixTrailers reports whether the header has http.TrailerPrefix keys.
func (w *h2Writer) prefixTrailers() bool {
	for k := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

func (w *h2Writer) nonEmptyTrailers() bool {
	for _, k := range w.trailers {
		if _, ok := w.header[k]; ok {
			return true
		}
	}
	return false
}

// write sends the response's headers (with hdrs), then, with data, one
// DATA frame of p (window reserved), END_STREAM on the last frame with
// end: all in one write.
func (w *h2Writer) write(hdrs bool, clen, ctype string, p []byte, data, end bool) error {
	st := w.st
	c := st.c
	var flags http2.Flags
	if end {
		flags = http2.FlagDataEndStream
	}
	if !hdrs {
		if err := c.streamErr(st); err != nil {
			return err
		}
		appendFrameHeader(w.dataHdr[:0], len(p), http2.FrameData, flags, st.id)
		_, err := c.out.WriteBuffers([][]byte{w.dataHdr[:], p})
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.streamErr(st); err != nil {
		return err
	}
	st.headersOut = true
	out := c.headerFrames(st.id, w.status, w.fields, clen, ctype, end && !data)
	w.fields = nil
	if !data {
		_, err := c.out.WriteBuffers([][]byte{out})
		return err
	}
	out = appendFrameHeader(out, len(p), http2.FrameData, flags, st.id)
	c.hfr = out
	_, err := c.out.WriteBuffers([][]byte{out, p})
	return err
}

// streamErr returns why st's writes fail, or nil.
func (c *h2Server) streamErr(st *h2sStream) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return st.reset
}

// headerFrames encodes a header block (status 0: trailers) and frames it:
// HEADERS, then CONTINUATIONs. The caller holds wmu; the result is valid
// until it releases it.
func (c *h2Server) headerFrames(id uint32, status int, fields []hpack.HeaderField, clen, ctype string, end bool) []byte {
	c.mu.Lock()
	c.headerBlockLocked()
	c.mu.Unlock()
	if status != 0 {
		c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: statusString(status)})
	}
	for _, f := range fields {
		c.enc.WriteField(f)
	}
	if ctype != "" {
		c.enc.WriteField(hpack.HeaderField{Name: "content-type", Value: ctype})
	}
	if clen != "" {
		c.enc.WriteField(hpack.HeaderField{Name: "content-length", Value: clen})
	}
	c.hfr = appendHeaderFrames(c.hfr[:0], c.hbuf.Bytes(), id, end)
	return c.hfr
}

func statusString(code int) string {
	switch code {
	case 200:
		return "200"
	case 204:
		return "204"
	case 404:
		return "404"
	}
	return strconv.Itoa(code)
}

// reserve takes up to want bytes (and at most a frame) of the stream's and
// the connection's send windows; with wait, it waits for some while there
// is none, else it returns 0.
func (c *h2Server) reserve(st *h2sStream, want int, wait bool) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reserveLocked(&st.h2Stream, want, wait, func() error { return st.reset })
}
