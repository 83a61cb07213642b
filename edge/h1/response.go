package h1

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/sluicehq/sluice/internal/reqctx"
)

// stageSize is how many body bytes wait for the head before it is
// written, as net/http's bufferBeforeChunkingSize: a body that ends within
// them gets a Content-Length, and its type is sniffed from them.
const stageSize = 2048

// rstAvoidanceDelay is how long a connection with an unread request body
// stays half-closed before it closes, so that the response reaches the
// client before the reset its unread bytes cause (net/http's rule).
const rstAvoidanceDelay = 500 * time.Millisecond

// serveRequest serves req, whose head is buf[r:r+end], and reports
// whether the connection may serve another request.
func (c *conn) serveRequest(base context.Context, req *http.Request, end int) bool {
	c.r += end
	if c.r == c.w {
		c.release()
	}
	// (A reqctx.Context: the tunnel's HTTP/2 client watches its end
	// without a context.AfterFunc per request.)
	ctx := reqctx.New(base)
	defer ctx.Cancel()
	c.bgMu.Lock()
	c.reqCtx = ctx
	c.bgMu.Unlock()
	req = req.WithContext(ctx)
	if c.remote == "" {
		c.remote = c.rwc.RemoteAddr().String()
	}
	req.RemoteAddr = c.remote
	req.TLS = c.tls
	var b *body
	if req.ContentLength > 0 {
		b = &body{c: c, remaining: req.ContentLength}
		req.Body = b
		// Also when the handler panics: a reader elsewhere (the tunnel's
		// upload) is done with the connection's buffer before it goes.
		defer b.finish()
	} else {
		req.Body = http.NoBody
		c.startBackgroundRead()
	}
	w := &response{c: c, req: req, header: make(http.Header), contentLength: -1, isHEAD: req.Method == "HEAD", closeAfter: req.Close}
	c.s.Handler.ServeHTTP(w, req)
	ctx.Cancel()
	unread := b != nil && !b.finish()
	if unread {
		w.closeAfter = true
	}
	w.finish()
	c.abortPendingRead()
	c.bgMu.Lock()
	c.reqCtx = nil
	c.bgMu.Unlock()
	if w.writeDeadline {
		c.rwc.SetWriteDeadline(time.Time{})
	}
	if unread && w.werr == nil {
		// The client may still be sending: it reads the response first.
		if cw, ok := c.rwc.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
			time.Sleep(rstAvoidanceDelay)
		}
	}
	// A client that left (the background read failed) may still have
	// sent whole requests: readHead serves them, then sees the error.
	return w.reusable()
}

// response is the http.ResponseWriter of a request served here. It
// writes the head as net/http's server does (the same fields, rules and
// order), holding a pooled buffer only while bytes wait to go out: a
// held stream between two events holds none.
//
// One difference: the head holds the header map as it is when the head
// is written (the first flush, or the body past stageSize, or the end),
// where net/http's copies it at WriteHeader if the handler had called
// Header before. The edge's handlers do not change it in between.
type response struct {
	c   *conn
	req *http.Request

	header http.Header
	snap   http.Header // the head's fields, copied when Header is called after WriteHeader, before the head is written

	status        int
	wroteHeader   bool // a final status was given
	committed     bool // the head is in out or on the wire
	handlerDone   bool
	isHEAD        bool
	chunked       bool
	closeAfter    bool
	writeDeadline bool // the handler set one: cleared after the request

	contentLength int64 // declared or computed; -1: unknown
	written       int64
	trailers      []string // declared by the head's Trailer field

	stage  *[]byte // body bytes before the head, up to stageSize
	staged int
	out    *[]byte // bytes for the wire
	werr   error
}

func (w *response) Header() http.Header {
	if w.wroteHeader && !w.committed && w.snap == nil {
		w.snap = w.header.Clone()
	}
	return w.header
}

func (w *response) WriteHeader(code int) {
	if w.wroteHeader {
		w.c.logf("http: superfluous response.WriteHeader call (status %d after %d)", code, w.status)
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		// An informational response goes out at once, with the fields the
		// map holds now.
		out := w.outBuffer()
		out = appendStatusLine(out, code)
		out = appendFields(out, w.header, exclContentLength|exclTransferEncoding)
		*w.out = append(out, "\r\n"...)
		w.flushOut()
		return
	}
	w.wroteHeader = true
	w.status = code
	if cl := textproto.MIMEHeader(w.header).Get("Content-Length"); cl != "" {
		v, err := strconv.ParseInt(cl, 10, 64)
		if err == nil && v >= 0 {
			w.contentLength = v
		} else {
			w.c.logf("http: invalid Content-Length of %q", cl)
			w.header.Del("Content-Length")
		}
	}
}

func (w *response) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowedForStatus(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	w.written += int64(len(p))
	if w.contentLength != -1 && w.written > w.contentLength {
		return 0, http.ErrContentLength
	}
	if w.werr != nil {
		return 0, w.werr
	}
	if !w.committed {
		if w.staged+len(p) <= stageSize {
			if w.stage == nil {
				w.stage = headBuffers.Get().(*[]byte)
			}
			w.staged += copy((*w.stage)[w.staged:], p)
			return len(p), nil
		}
		// The body goes past the stage: the head now, its type sniffed
		// from the body's first bytes.
		sniff := p
		if w.staged > 0 {
			k := min(len(p), sniffLen-min(w.staged, sniffLen))
			sniff = append((*w.stage)[:w.staged], p[:k]...)
		}
		w.commit(sniff)
	}
	if err := w.writeBody(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// sniffLen is how many bytes http.DetectContentType reads.
const sniffLen = 512

// writeBody puts p, framed as a chunk if the body is chunked, after the
// bytes waiting in out; a p too large for out goes out with them in one
// vectored write.
func (w *response) writeBody(p []byte) error {
	if w.isHEAD {
		return nil
	}
	out := w.outBuffer()
	if len(out)+len(p)+chunkFraming <= cap(out) {
		if w.chunked {
			out = appendChunkHeader(out, len(p))
		}
		out = append(out, p...)
		if w.chunked {
			out = append(out, "\r\n"...)
		}
		*w.out = out
		return nil
	}
	if w.chunked {
		out = appendChunkHeader(out, len(p))
	}
	bufs := net.Buffers{out, p}
	if w.chunked {
		bufs = append(bufs, crlf)
	}
	_, err := bufs.WriteTo(w.c.rwc)
	w.releaseOut()
	return w.failed(err)
}

var crlf = []byte("\r\n")

// chunkFraming is room enough for a chunk's size line and end.
const chunkFraming = 20

func appendChunkHeader(b []byte, n int) []byte {
	b = strconv.AppendUint(b, uint64(n), 16)
	return append(b, "\r\n"...)
}

// Flush writes the head, if not yet written, and the bytes waiting.
func (w *response) Flush() { w.FlushError() }

// FlushError is Flush with its error, for http.ResponseController.
func (w *response) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.werr != nil {
		return w.werr
	}
	if !w.committed {
		w.commit(w.stagedBytes())
	}
	return w.flushOut()
}

// SetReadDeadline sets the connection's read deadline (the request
// body's), for http.ResponseController.
func (w *response) SetReadDeadline(t time.Time) error { return w.c.rwc.SetReadDeadline(t) }

// SetWriteDeadline sets the connection's write deadline, for
// http.ResponseController; it is cleared after the request, unless the
// handler cleared it already.
func (w *response) SetWriteDeadline(t time.Time) error {
	w.writeDeadline = !t.IsZero()
	return w.c.rwc.SetWriteDeadline(t)
}

// EnableFullDuplex is what every response here does: the body can be
// read while the response is written.
func (w *response) EnableFullDuplex() error { return nil }

func (w *response) stagedBytes() []byte {
	if w.stage == nil {
		return nil
	}
	return (*w.stage)[:w.staged]
}

// finish ends the response when the handler returned: the head if not
// yet written, the staged body, the last chunk and the trailers.
func (w *response) finish() {
	w.handlerDone = true
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.werr != nil {
		w.releaseStage()
		w.releaseOut()
		return
	}
	if !w.committed {
		w.commit(w.stagedBytes())
	}
	if w.chunked {
		out := append(w.outBuffer(), "0\r\n"...)
		out = appendTrailers(out, w.header, w.trailers)
		*w.out = append(out, "\r\n"...)
	}
	w.flushOut()
}

// reusable reports whether the connection may serve another request
// after this response (net/http's shouldReuseConnection).
func (w *response) reusable() bool {
	if w.closeAfter || w.werr != nil {
		return false
	}
	if !w.isHEAD && w.contentLength != -1 && bodyAllowedForStatus(w.status) && w.contentLength != w.written {
		return false
	}
	return true
}

// outBuffer returns out, taking a pooled buffer if there is none.
func (w *response) outBuffer() []byte {
	if w.out == nil {
		w.out = headBuffers.Get().(*[]byte)
		*w.out = (*w.out)[:0]
	}
	return *w.out
}

// flushOut writes out and gives the buffer back.
func (w *response) flushOut() error {
	if w.out == nil {
		return w.werr
	}
	var err error
	if len(*w.out) > 0 && w.werr == nil {
		_, err = w.c.rwc.Write(*w.out)
	}
	w.releaseOut()
	return w.failed(err)
}

// failed notes a write error: the connection is closed (as net/http's
// server does), and later writes fail with the error.
func (w *response) failed(err error) error {
	if err != nil && w.werr == nil {
		w.werr = err
		w.c.rwc.Close()
	}
	return w.werr
}

func (w *response) releaseOut() {
	if w.out != nil {
		*w.out = (*w.out)[:cap(*w.out)]
		headBuffers.Put(w.out)
		w.out = nil
	}
}

func (w *response) releaseStage() {
	if w.stage != nil {
		headBuffers.Put(w.stage)
		w.stage, w.staged = nil, 0
	}
}

// Header fields commit may leave out of the head.
const (
	exclContentLength = 1 << iota
	exclTransferEncoding
	exclConnection
	exclContentType
)

// commit puts the head, and the staged body, in out: net/http's
// chunkWriter.writeHeader, for HTTP/1.1 requests. first is the body's
// first bytes (all of it, if the handler is done).
func (w *response) commit(first []byte) {
	w.committed = true
	h := w.header
	if w.snap != nil {
		h = w.snap
	}
	keepAlives := !w.c.s.stopping.Load()
	var excl int
	trailers := false
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			trailers = true
			break
		}
	}
	for _, v := range h["Trailer"] {
		trailers = true
		for _, k := range strings.Split(v, ",") {
			if k = textproto.TrimString(k); k == "" {
				continue
			}
			if k = http.CanonicalHeaderKey(k); httpguts.ValidTrailerHeader(k) {
				w.trailers = append(w.trailers, k)
			}
		}
	}
	get := func(k string) string { return textproto.MIMEHeader(h).Get(k) }
	te := get("Transfer-Encoding")
	hasTE := te != ""
	var clBuf [20]byte
	var setCL []byte
	_, haveCL := h["Content-Length"]
	if w.handlerDone && !trailers && !hasTE && bodyAllowedForStatus(w.status) && !haveCL && (!w.isHEAD || len(first) > 0) {
		w.contentLength = int64(len(first))
		setCL = strconv.AppendInt(clBuf[:0], int64(len(first)), 10)
	}
	hasCL := w.contentLength != -1
	if get("Connection") == "close" || !keepAlives {
		w.closeAfter = true
	}
	var setType, setConn, setTE string
	if bodyAllowedForStatus(w.status) {
		_, haveType := h["Content-Type"]
		if get("Content-Encoding") == "" && !haveType && !hasTE && len(first) > 0 {
			setType = http.DetectContentType(first)
		}
	} else {
		excl |= exclContentLength | exclTransferEncoding
		if w.status == http.StatusNotModified {
			excl |= exclContentType
		}
	}
	_, haveDate := h["Date"]
	if hasCL && hasTE && te != "identity" {
		w.c.logf("http: WriteHeader called with both Transfer-Encoding of %q and a Content-Length of %d", te, w.contentLength)
		excl |= exclContentLength
		hasCL = false
	}
	switch {
	case w.isHEAD || !bodyAllowedForStatus(w.status) || w.status == http.StatusNoContent:
		excl |= exclTransferEncoding
	case hasCL:
		excl |= exclTransferEncoding
	case hasTE && te == "identity":
		w.closeAfter = true
		excl |= exclTransferEncoding
	default:
		w.chunked = true
		setTE = "chunked"
		if te == "chunked" {
			excl |= exclTransferEncoding
		}
	}
	if w.chunked {
		excl |= exclContentLength
	}
	if w.closeAfter && (!keepAlives || !httpguts.HeaderValuesContainsToken([]string{get("Connection")}, "close")) && !isProtocolSwitch(w.status, h) {
		excl |= exclConnection
		setConn = "close"
	}

	out := appendStatusLine(w.outBuffer(), w.status)
	out = appendFields(out, h, excl)
	if !haveDate {
		out = append(out, "Date: "...)
		out = appendDate(out)
		out = append(out, "\r\n"...)
	}
	if setCL != nil {
		out = append(out, "Content-Length: "...)
		out = append(out, setCL...)
		out = append(out, "\r\n"...)
	}
	for _, f := range [...]struct{ k, v string }{{"Content-Type", setType}, {"Connection", setConn}, {"Transfer-Encoding", setTE}} {
		if f.v != "" {
			out = append(out, f.k...)
			out = append(out, ": "...)
			out = append(out, f.v...)
			out = append(out, "\r\n"...)
		}
	}
	*w.out = append(out, "\r\n"...)
	if staged := w.stagedBytes(); len(staged) > 0 {
		w.writeBody(staged)
	}
	w.releaseStage()
}

func isProtocolSwitch(code int, h http.Header) bool {
	return code == http.StatusSwitchingProtocols && textproto.MIMEHeader(h).Get("Upgrade") != "" &&
		httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade")
}

// bodyAllowedForStatus is net/http's rule: 1xx, 204 and 304 have no
// body.
func bodyAllowedForStatus(code int) bool {
	switch {
	case code >= 100 && code <= 199:
		return false
	case code == http.StatusNoContent, code == http.StatusNotModified:
		return false
	}
	return true
}

func appendStatusLine(b []byte, code int) []byte {
	b = append(b, "HTTP/1.1 "...)
	if text := http.StatusText(code); text != "" {
		b = strconv.AppendInt(b, int64(code), 10)
		b = append(b, ' ')
		b = append(b, text...)
		return append(b, "\r\n"...)
	}
	return fmt.Appendf(b, "%03d status code %d\r\n", code, code)
}

// appendFields appends h's fields as http.Header.Write does (keys sorted,
// invalid names left out, line breaks in values made spaces, values
// trimmed), less the fields excl names and those of trailers.
func appendFields(b []byte, h http.Header, excl int) []byte {
	var kb [32]string
	keys := kb[:0]
	for k := range h {
		if excluded(k, excl) || strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b = appendField(b, k, h[k])
	}
	return b
}

func appendField(b []byte, k string, vv []string) []byte {
	for _, v := range vv {
		if strings.ContainsAny(v, "\r\n") {
			v = newlineToSpace.Replace(v)
		}
		v = textproto.TrimString(v)
		b = append(b, k...)
		b = append(b, ": "...)
		b = append(b, v...)
		b = append(b, "\r\n"...)
	}
	return b
}

var newlineToSpace = strings.NewReplacer("\n", " ", "\r", " ")

func excluded(k string, excl int) bool {
	switch k {
	case "Content-Length":
		return excl&exclContentLength != 0
	case "Transfer-Encoding":
		return excl&exclTransferEncoding != 0
	case "Connection":
		return excl&exclConnection != 0
	case "Content-Type":
		return excl&exclContentType != 0
	}
	return false
}

// appendTrailers appends the trailer fields of a chunked body: those named
// with http.TrailerPrefix, and those the head declared (net/http's
// finalTrailers), sorted.
func appendTrailers(b []byte, h http.Header, declared []string) []byte {
	var t http.Header
	for k, vv := range h {
		if kk, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			if t == nil {
				t = make(http.Header)
			}
			t[kk] = vv
		}
	}
	for _, k := range declared {
		if t == nil {
			t = make(http.Header)
		}
		for _, v := range h[k] {
			t.Add(k, v)
		}
	}
	if t == nil {
		return b
	}
	return appendFields(b, t, 0)
}

// dateCache is the Date field's value for the current second.
var dateCache atomic.Pointer[dateValue]

type dateValue struct {
	sec int64
	b   []byte
}

func appendDate(b []byte) []byte {
	now := time.Now()
	d := dateCache.Load()
	if d == nil || d.sec != now.Unix() {
		d = &dateValue{sec: now.Unix(), b: now.UTC().AppendFormat(nil, http.TimeFormat)}
		dateCache.Store(d)
	}
	return append(b, d.b...)
}
