package tunnel

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/sluicehq/sluice/internal/reqctx"
)

// h2cStream is one stream of an h2cConn: its request, its response and
// the state they share with the read loop, guarded by the client's mu.
type h2cStream struct {
	// its cond also wakes awaitHead (the head came); its trailer goes
	// into resp.Trailer at EOF
	h2Stream
	c    *h2cConn
	stop reqctx.Stop // stops the request context's AfterFunc
	head bool        // a HEAD request

	// the response head, handed over once by the read loop
	infos []h2Info       // 1xx heads not yet passed on
	ninfo int            // 1xx heads received
	resp  *http.Response // the final head
	err   error          // why the stream ended early, if it did

	// receiving (the response body)
	recvWin int64 // window granted to the agent, not yet received
	unread  int64 // received, not yet read or dropped
	noBody  bool  // HEAD, 204, 304: no body, whatever comes

	// sending (the request body)
	localDone  bool // END_STREAM or RST_STREAM went out (or came)
	writerGone bool // the body will not be sent whole: the stream ends with the response
	got100     bool // the agent's 100 Continue was passed on: the body may go
	timedOut   bool // the wait for 100 Continue is over
	forgotten  bool

	body h2cBody
}

// h2Info is a 1xx response head.
type h2Info struct {
	code   int
	header http.Header
}

var (
	errStreamDone       = errors.New("tunnel: v2: stream ended")
	errResponseClosed   = errors.New("tunnel: v2: response body closed")
	errHeadTooLarge     = errors.New("tunnel: v2: response head over the limit")
	errRequestHeadLarge = errors.New("tunnel: v2: request head over the agent's limit")
	errBodyLength       = errors.New("tunnel: v2: request body length differs from its ContentLength")
	errIDsExhausted     = fmt.Errorf("%w: the stream IDs ran out", ErrSessionClosed)
)

// roundTrip sends req on a new stream and returns the response once its
// head came. With duplex, the request body stays open for the returned
// writer's writes (req.Body is not read); otherwise a body is sent by a
// goroutine of its own while it is being sent. req.Context() ending, or
// the response body's Close before its end, resets the stream.
func (c *h2cConn) roundTrip(req *http.Request, duplex bool) (*http.Response, *h2cWriter, error) {
	ctx := req.Context()
	body := req.Body
	cl := req.ContentLength // what is sent: as x/net's actualContentLength
	switch {
	case duplex:
		body, cl = nil, -1
	case body == nil || body == http.NoBody:
		body, cl = nil, 0
	case cl == 0:
		cl = -1
	}
	closeBody := func() {
		if body != nil {
			body.Close()
		}
	}
	if err := ctx.Err(); err != nil {
		closeBody()
		return nil, nil, err
	}
	st := &h2cStream{h2Stream: h2Stream{declLen: -1}, c: c, head: req.Method == http.MethodHead}
	st.cond.L = &c.mu
	st.body.st = st
	if err := c.open(st, req, cl, cl == 0); err != nil {
		closeBody()
		return nil, nil, err
	}
	c.mu.Lock()
	if !st.forgotten {
		st.stop = reqctx.AfterFunc(ctx, func() {
			c.mu.Lock()
			c.resetLocked(st, http2.ErrCodeCancel, ctx.Err())
			c.mu.Unlock()
		})
	}
	c.mu.Unlock()
	if body != nil {
		wait := c.continueTimeout > 0 && expectsContinue(req.Header)
		go st.writeBody(body, cl, wait)
	}
	resp, err := st.awaitHead(httptrace.ContextClientTrace(ctx))
	if err != nil {
		return nil, nil, err
	}
	resp.Request = req
	if duplex {
		return resp, &h2cWriter{st: st}, nil
	}
	return resp, nil, nil
}

// awaitHead waits for the final response head, passing the 1xx heads on
// to trace's Got1xxResponse as they come (the agent's 100 lets a body
// that waits for it go, once it was passed on). A final status above 299
// stops the request body, as x/net's client does.
func (st *h2cStream) awaitHead(trace *httptrace.ClientTrace) (*http.Response, error) {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for len(st.infos) > 0 {
			in := st.infos[0]
			st.infos = st.infos[1:]
			if trace != nil && trace.Got1xxResponse != nil {
				c.mu.Unlock()
				err := trace.Got1xxResponse(in.code, textproto.MIMEHeader(in.header))
				c.mu.Lock()
				if err != nil {
					c.resetLocked(st, http2.ErrCodeCancel, err)
					return nil, err
				}
			}
			if in.code == http.StatusContinue {
				st.got100 = true
				st.cond.Broadcast()
			}
		}
		if st.resp != nil {
			if st.resp.StatusCode > 299 {
				st.goneLocked()
			}
			return st.resp, nil
		}
		if st.err != nil {
			return nil, st.err
		}
		st.cond.Wait()
	}
}

// goneLocked says the request body will not be sent (whole): the stream
// ends with its response. The caller holds mu.
func (st *h2cStream) goneLocked() {
	if st.writerGone {
		return
	}
	st.writerGone = true
	st.cond.Broadcast()
	if st.remoteDone && !st.localDone {
		st.c.resetLocked(st, http2.ErrCodeCancel, errStreamDone)
	}
}

// open registers st, and sends its HEADERS (with END_STREAM when end):
// the stream's ID is taken and its header block encoded and queued under
// wmu, so that streams open in the order of their IDs.
func (c *h2cConn) open(st *h2cStream, req *http.Request, cl int64, end bool) error {
	// Checked before the encoder's state changes.
	size, err := requestFields(req, cl, nil)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	switch {
	case c.err != nil:
		err = c.err
	case c.goAway:
		err = fmt.Errorf("%w: the agent sent GOAWAY", ErrSessionClosed)
	case c.exhausted:
		err = errIDsExhausted
	case len(c.streams) >= c.maxStreams:
		err = ErrTooManyStreams
	case c.maxList > 0 && size > c.maxList:
		err = errRequestHeadLarge
	}
	if err != nil {
		c.mu.Unlock()
		return err
	}
	st.id = c.nextID
	c.nextID += 2
	c.lastID = st.id
	if c.nextID > h2MaxStreamID {
		c.exhausted = true // this one is the last
	}
	c.streams[st.id] = st
	st.sendWin = c.sendInit
	st.localDone = end
	grant := c.openWindowLocked(st)
	c.headerBlockLocked()
	c.mu.Unlock()

	requestFields(req, cl, c.enc)
	out := appendHeaderFrames(c.hfr[:0], c.hbuf.Bytes(), st.id, end)
	if grant > 0 {
		out = appendWindowUpdate(out, st.id, uint32(grant))
	}
	c.hfr = out
	if _, err := c.out.WriteBuffers([][]byte{out}); err != nil {
		err = fmt.Errorf("%w: %w", ErrSessionClosed, err)
		c.mu.Lock()
		st.localDone = true
		c.endLocked(st, err)
		c.mu.Unlock()
		return err
	}
	return nil
}

// requestFields checks req's head and returns its size as
// SETTINGS_MAX_HEADER_LIST_SIZE counts it; with enc, it encodes it
// instead. The fields are those x/net's client sends: the pseudo-fields,
// then the header without the connection-specific fields HTTP/2 forbids
// (RFC 9113, section 8.2.2), and Content-Length when the body's length is
// known (cl).
func requestFields(req *http.Request, cl int64, enc *hpackEncoder) (uint64, error) {
	var size uint64
	field := func(name, value string) {
		if enc != nil {
			enc.WriteField(hpack.HeaderField{Name: name, Value: value})
		}
		size += uint64(len(name) + len(value) + 32)
	}
	host := cmp.Or(req.Host, req.URL.Host)
	if enc == nil {
		h, err := httpguts.PunycodeHostPort(host)
		if err != nil || !httpguts.ValidHostHeader(h) {
			return 0, fmt.Errorf("tunnel: v2: invalid Host %q", host)
		}
		host = h
	} else {
		host, _ = httpguts.PunycodeHostPort(host)
	}
	method := cmp.Or(req.Method, http.MethodGet)
	path := req.URL.RequestURI()
	if enc == nil && (!httpguts.ValidHeaderFieldName(method) || path == "" || path[0] != '/' && path != "*") {
		return 0, fmt.Errorf("tunnel: v2: invalid request %s %q", method, path)
	}
	field(":authority", host)
	field(":method", method)
	field(":path", path)
	field(":scheme", cmp.Or(req.URL.Scheme, "http"))
	for k, vv := range req.Header {
		name, ok := lowerField(k)
		if !ok {
			if enc == nil {
				return 0, fmt.Errorf("tunnel: v2: invalid header field name %q", k)
			}
			continue
		}
		switch name {
		case "host", "content-length", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			continue
		case "te":
			if httpguts.HeaderValuesContainsToken(vv, "trailers") {
				field("te", "trailers")
			}
			continue
		case "user-agent":
			// At most one, none if empty: as net/http's clients.
			if len(vv) > 0 && vv[0] != "" {
				vv = vv[:1]
			} else {
				continue
			}
		}
		for _, v := range vv {
			if enc == nil && !httpguts.ValidHeaderFieldValue(v) {
				return 0, fmt.Errorf("tunnel: v2: invalid value of header field %q", k)
			}
			field(name, v)
		}
	}
	if cl > 0 || cl == 0 && (req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch) {
		field("content-length", strconv.FormatInt(cl, 10))
	}
	return size, nil
}

// headers handles a HEADERS frame from the agent: a response head (1xx or
// final), or a response's trailers. The read loop calls it.
func (c *h2cConn) headers(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.opened(id) {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	st := c.streams[id]
	if st == nil {
		return nil // a stream that ended here (its block was decoded)
	}
	if st.remoteDone {
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeStreamClosed}
	}
	if st.resp != nil {
		return c.trailersLocked(st, f)
	}
	bad := http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol}
	if f.Truncated {
		err := fmt.Errorf("%w: a response head of stream %d over %d bytes", errHeadTooLarge, id, c.maxHeaderBytes)
		c.report("oversized_head", err)
		c.resetLocked(st, http2.ErrCodeProtocol, err)
		return nil
	}
	var status string
	for _, hf := range f.PseudoFields() {
		if hf.Name != ":status" {
			return bad
		}
		status = hf.Value
	}
	code, err := strconv.Atoi(status)
	if err != nil || len(status) != 3 || code < 100 {
		return bad
	}
	if code < 200 {
		if f.StreamEnded() || code == http.StatusSwitchingProtocols {
			return bad
		}
		if st.ninfo >= maxInformational {
			c.report("too_many_informational", fmt.Errorf("more than %d informational responses on stream %d", maxInformational, id))
			return nil
		}
		st.ninfo++
		st.infos = append(st.infos, h2Info{code, c.header(f.RegularFields(), nil)})
		st.cond.Broadcast()
		return nil
	}
	resp := &http.Response{
		Status:        status + " " + http.StatusText(code),
		StatusCode:    code,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		ContentLength: -1,
		Body:          &st.body,
	}
	resp.Header = c.header(f.RegularFields(), &resp.Trailer)
	st.noBody = st.head || code == http.StatusNoContent || code == http.StatusNotModified
	if vv := resp.Header["Content-Length"]; len(vv) == 1 {
		if n, err := strconv.ParseUint(vv[0], 10, 63); err == nil {
			resp.ContentLength = int64(n)
			st.declLen = int64(n)
		}
	} else if f.StreamEnded() && !st.head {
		resp.ContentLength = 0
	}
	st.resp = resp
	st.cond.Broadcast()
	if f.StreamEnded() {
		c.remoteEndLocked(st, io.EOF)
	}
	return nil
}

// trailersLocked takes a response's trailers. The caller holds mu.
func (c *h2cConn) trailersLocked(st *h2cStream, f *http2.MetaHeadersFrame) error {
	if !f.StreamEnded() || len(f.PseudoFields()) > 0 {
		return http2.StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}
	}
	if fields := f.RegularFields(); len(fields) > 0 && !f.Truncated {
		st.trailer = c.header(fields, nil)
	}
	c.remoteEndLocked(st, io.EOF)
	return nil
}

// data handles a DATA frame: its bytes wait in the stream's body until
// the caller reads them, within the windows the client granted. The read
// loop calls it.
func (c *h2cConn) data(f *http2.DataFrame) error {
	id := f.StreamID
	n := int64(f.Length) // with the padding
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.opened(id) {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if n > c.recvConn {
		return c.flowControlError(fmt.Errorf("tunnel: v2 agent sent %d bytes past the connection's window", n-c.recvConn))
	}
	c.recvConn -= n
	st := c.streams[id]
	if st == nil || st.remoteDone || st.resp == nil {
		// A stream that ended (or was reset) here: the bytes are dropped,
		// and given back to the connection.
		c.connConsumedLocked(n)
		if st == nil {
			return nil
		}
		if st.remoteDone {
			return http2.StreamError{StreamID: id, Code: http2.ErrCodeStreamClosed}
		}
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol} // DATA before HEADERS
	}
	if err := c.overWindowLocked(st, n); err != nil {
		return err
	}
	data := f.Data()
	if !st.noBody && st.declLen >= 0 && st.gotLen+int64(len(data)) > st.declLen {
		c.receivedLocked(st, n, 0)
		return http2.StreamError{StreamID: id, Code: http2.ErrCodeProtocol,
			Cause: fmt.Errorf("tunnel: v2: a response body longer than its Content-Length of %d", st.declLen)}
	}
	st.gotLen += int64(len(data))
	keep := int64(len(data))
	if st.noBody || st.bodyClosed {
		keep = 0
	}
	c.receivedLocked(st, n, keep)
	if keep > 0 {
		st.recv.write(data)
		st.cond.Broadcast()
	}
	if f.StreamEnded() {
		c.remoteEndLocked(st, io.EOF)
	}
	return nil
}

// h2cBody is a stream's response body. Read and Close may be called
// concurrently.
type h2cBody struct{ st *h2cStream }

// Ready reports whether a read returns at once (ReadyBody): bytes came,
// or the body ended.
func (b *h2cBody) Ready() bool {
	st := b.st
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return st.noBody || st.recv.n > 0 || st.bodyErr != nil || st.bodyClosed
}

// wait waits until the body holds bytes, ended or was closed, taking
// none (a pipe's body waits so, holding no buffer: pipeBody).
func (b *h2cBody) wait() {
	st := b.st
	st.c.mu.Lock()
	if !st.noBody {
		st.awaitLocked()
	}
	st.c.mu.Unlock()
}

func (b *h2cBody) Read(p []byte) (int, error) {
	st := b.st
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.noBody && !st.bodyClosed {
		return 0, io.EOF
	}
	return st.readLocked(p, errResponseClosed, func(n int64) error {
		c.consumedLocked(st, n, true)
		return nil
	}, st.handTrailersLocked)
}

// writeNext waits for the body's next bytes, or its end, holding no
// buffer, and writes the bytes held to w from the chunks they wait in
// (chunkBody: the Proxy's copy). The chunks, and the bytes' credit in the
// stream's window and the budget, are given back once w took them: while
// a client is slow to take them, its stream's window stays shut and its
// bytes stay counted. Like Read, for one goroutine at a time (not
// concurrently with Read); Close may be called meanwhile.
func (b *h2cBody) writeNext(w io.Writer, _ *BufferPool) (int, error) {
	st := b.st
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.noBody && !st.bodyClosed {
		return 0, io.EOF
	}
	return st.writeLocked(w, errResponseClosed, func(n int64, written bool) {
		c.consumedLocked(st, n, written)
	}, st.handTrailersLocked)
}

// handTrailersLocked hands the response's trailers over at the body's
// end. The caller holds mu.
func (st *h2cStream) handTrailersLocked(trailer http.Header) {
	if st.resp.Trailer == nil {
		st.resp.Trailer = make(http.Header, len(trailer))
	}
	for k, vv := range trailer {
		st.resp.Trailer[k] = vv
	}
}

// Close drops the bytes held and those to come; a stream not yet ended
// both ways is reset (CANCEL).
func (b *h2cBody) Close() error {
	st := b.st
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := st.closeBodyLocked()
	if !ok {
		return nil
	}
	if n > 0 {
		c.consumedLocked(st, n, false)
	}
	c.resetLocked(st, http2.ErrCodeCancel, errResponseClosed)
	return nil
}

// writeBody sends a request body (of cl bytes, or -1: unknown), after the
// agent's 100 Continue with wait, then closes it. It runs in a goroutine of
// its own while the body is being sent.
func (st *h2cStream) writeBody(body io.ReadCloser, cl int64, wait bool) {
	defer body.Close()
	if wait && !st.awaitContinue() {
		return
	}
	size := h2AgentFrameSize
	if cl > 0 && cl < int64(size) {
		size = int(cl)
	}
	ch := getChunk(size)
	defer putChunk(ch)
	buf := ch.b[:cap(ch.b)]
	var sent int64
	for {
		n, err := body.Read(buf)
		if n > 0 {
			sent += int64(n)
			if cl >= 0 && sent > cl {
				st.fail(errBodyLength)
				return
			}
			last := sent == cl
			if werr := st.write(buf[:n], last); werr != nil || last {
				return
			}
		}
		switch {
		case err == io.EOF && cl >= 0 && sent < cl:
			st.fail(errBodyLength)
			return
		case err == io.EOF:
			st.write(nil, true)
			return
		case err != nil:
			st.fail(fmt.Errorf("tunnel: v2: reading the request body: %w", err))
			return
		}
	}
}

// awaitContinue waits until the body may go: the agent's 100 was passed
// on, or continueTimeout passed. It reports false when it will never go
// (a final response above 299, the stream's end).
func (st *h2cStream) awaitContinue() bool {
	c := st.c
	t := time.AfterFunc(c.continueTimeout, func() {
		c.mu.Lock()
		st.timedOut = true
		st.cond.Broadcast()
		c.mu.Unlock()
	})
	defer t.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for !st.got100 && !st.timedOut && !st.writerGone && !st.localDone {
		st.cond.Wait()
	}
	return !st.writerGone && !st.localDone
}

// fail resets the stream: its request body could not be sent.
func (st *h2cStream) fail(err error) {
	c := st.c
	c.mu.Lock()
	c.resetLocked(st, http2.ErrCodeCancel, err)
	c.mu.Unlock()
}

// write sends p as DATA frames within the agent's windows and frame size,
// END_STREAM on the last with end (an empty frame if p is). An error
// means the stream ended (or the body is no longer wanted): nothing more
// is sent.
func (st *h2cStream) write(p []byte, end bool) error {
	c := st.c
	var hdr [9]byte
	for {
		n, last, err := c.reserve(st, len(p), end)
		if err != nil {
			return err
		}
		var flags http2.Flags
		if last {
			flags = http2.FlagDataEndStream
		}
		appendFrameHeader(hdr[:0], n, http2.FrameData, flags, st.id)
		if _, err := c.out.WriteBuffers([][]byte{hdr[:], p[:n]}); err != nil {
			return err
		}
		p = p[n:]
		if last {
			c.mu.Lock()
			c.forgetLocked(st)
			c.mu.Unlock()
		}
		if len(p) == 0 {
			return nil
		}
	}
}

// reserve takes up to want bytes (and at most a frame) of the stream's and
// the connection's send windows, waiting while there is none; last says
// that the frame ends the stream (with end, all of want fits), and the
// stream's sending side is then over.
func (c *h2cConn) reserve(st *h2cStream, want int, end bool) (n int, last bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err = c.reserveLocked(&st.h2Stream, want, true, func() error {
		switch {
		case st.err != nil:
			return st.err
		case st.localDone || st.writerGone:
			return errStreamDone
		}
		return nil
	})
	if err != nil {
		return 0, false, err
	}
	last = end && n == want
	st.localDone = last
	return n, last, nil
}

// h2cWriter is the request body of a full-duplex stream (upgrades, TCP,
// UDP), written by its caller. Like an io.PipeWriter, Write and Close are
// for one goroutine at a time, and CloseWithError may be called from
// another to end a Write waiting for window.
type h2cWriter struct {
	st     *h2cStream
	mu     sync.Mutex
	closed bool
}

func (w *h2cWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, io.ErrClosedPipe
	}
	if len(p) == 0 {
		return 0, nil
	}
	if err := w.st.write(p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close ends the request body: END_STREAM. Like an io.PipeWriter's, it
// does not wait for a Write in progress (one that waits for window, from
// another goroutine): the stream is reset instead.
func (w *h2cWriter) Close() error {
	if !w.mu.TryLock() {
		return w.CloseWithError(io.ErrClosedPipe)
	}
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	w.st.write(nil, true)
	return nil
}

// CloseWithError resets the stream (CANCEL) unless its request body was
// ended: reads of its response fail with err.
func (w *h2cWriter) CloseWithError(err error) error {
	st := w.st
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !st.localDone {
		c.resetLocked(st, http2.ErrCodeCancel, err)
	}
	return nil
}
