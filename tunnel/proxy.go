package tunnel

import (
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"net/url"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Proxy is the reverse proxy of both ends of the tunnel: the edge's public
// handler (its Transport is the agent's Session) and the agent's handler
// (its Transport reaches the local server). It does what
// httputil.ReverseProxy does for them, with the streaming rules, and less
// per request and per held stream:
//
//   - no goroutine or timer per response to flush the headers: they go out
//     with the first body bytes when those come at once, and are flushed
//     alone only when no body byte came within headerFlushDelay (rule 1:
//     an SSE feed shows its headers in milliseconds);
//   - a copy buffer of 64 KiB only while the body moves: a response waits
//     for its bytes holding a small buffer (smallBufferSize), and takes a
//     pooled large one when a read fills the small one, giving it back when
//     reads fit the small one again. A held SSE stream holds 2 KiB, not 64;
//   - no copy buffer at all for a body whose bytes already wait in buffers
//     of its own (chunkBody: the edge's v2 client): it writes them to the
//     client from there, each piece flushed, and gives them back once
//     written. A held stream then holds no buffer, and each byte is copied
//     once less;
//   - the URL is passed untouched (httputil removes query parameters it
//     cannot parse: a tunnel shows the local server what the visitor
//     sent).
//
// Upgrade requests (WebSocket) are served by Upgrades, an
// httputil.ReverseProxy configured alike: its 101 handling (hijack, copy
// both ways) is kept as it is.
type Proxy struct {
	// Rewrite readies the outgoing request (pr.Out, a copy of pr.In with
	// its own header map and URL, hop-by-hop fields and the client's
	// Forwarded/X-Forwarded-* fields removed), as for httputil.
	Rewrite func(pr *httputil.ProxyRequest)
	// Transport sends the outgoing request.
	Transport http.RoundTripper
	// ModifyResponse, if set, may change the response before it is
	// written; an error is handled by ErrorHandler.
	ModifyResponse func(*http.Response) error
	// ErrorHandler answers when Transport or ModifyResponse failed.
	ErrorHandler func(http.ResponseWriter, *http.Request, error)
	// Buffers lends the large copy buffers (and reserves them from its
	// budget, if it has one).
	Buffers *BufferPool
	// Upgrades serves upgrade requests.
	Upgrades http.Handler
}

// NewProxy returns a Proxy whose upgrade requests go to an
// httputil.ReverseProxy made from the same parts (errorLog: where that one
// logs; nil: the standard logger).
func NewProxy(p Proxy, errorLog *log.Logger) *Proxy {
	rp := &httputil.ReverseProxy{
		Rewrite:        p.Rewrite,
		Transport:      p.Transport,
		BufferPool:     p.Buffers,
		FlushInterval:  -1,
		ModifyResponse: p.ModifyResponse,
		ErrorHandler:   p.ErrorHandler,
		ErrorLog:       errorLog,
	}
	p.Upgrades = rp
	return &p
}

// headerFlushDelay is how long a response's headers wait for its first
// body bytes, to go out in one write with them, before they are flushed
// alone.
const headerFlushDelay = time.Millisecond

// smallBufferSize is the copy buffer of a body that is not moving much:
// what a held stream holds while it waits.
const smallBufferSize = 2 << 10

var smallBuffers = sync.Pool{New: func() any { b := make([]byte, smallBufferSize); return &b }}

// ServeHTTP proxies one request.
func (p *Proxy) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	if isUpgrade(req.Header) {
		p.Upgrades.ServeHTTP(rw, req)
		return
	}
	// What a request needs beyond the outgoing request itself, in one
	// allocation (every request passes here, at both ends).
	st := &proxyState{g: passInformational{rw: rw}}
	st.trace.Got1xxResponse = st.g.got
	// 1xx responses (100 Continue, 103 Early Hints) go to the client as
	// they come, until RoundTrip returned.
	out := req.WithContext(httptrace.WithClientTrace(req.Context(), &st.trace))
	// Request trailers do not cross (docs/protocol.md, "Trailers"): they
	// arrive after the header section was checked and rewritten.
	out.Trailer = nil
	st.url = *req.URL
	out.URL = &st.url
	out.Header = req.Header.Clone()
	if out.Header == nil {
		out.Header = make(http.Header)
	}
	out.Close = false
	if req.ContentLength == 0 {
		out.Body = nil // as httputil: a transport may retry a request without a body
	}
	if out.Body != nil {
		// The transport closes the body it was given when it fails; the
		// client's body is not closed under the handler (an unread
		// 100-continue body would hang its Close).
		out.Body = noopCloser{out.Body}
	}
	te := httpguts.HeaderValuesContainsToken(req.Header["Te"], "trailers")
	RemoveHopByHop(out.Header)
	if te {
		out.Header["Te"] = []string{"trailers"}
	}
	for _, h := range ForwardingHeaders {
		delete(out.Header, h)
	}
	st.pr = httputil.ProxyRequest{In: req, Out: out}
	p.Rewrite(&st.pr)
	out = st.pr.Out // (a request of Rewrite's own derives from Out, trace and all)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = []string{""} // not Go's default
	}

	g := &st.g
	res, err := p.Transport.RoundTrip(out)
	g.done()
	if err != nil {
		p.ErrorHandler(rw, out, err)
		return
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		res.Body.Close()
		p.ErrorHandler(rw, out, errors.New("tunnel: the server switched protocols on a request that asked for no upgrade"))
		return
	}
	RemoveHopByHop(res.Header)
	if p.ModifyResponse != nil {
		if err := p.ModifyResponse(res); err != nil {
			res.Body.Close()
			p.ErrorHandler(rw, out, err)
			return
		}
	}
	h := rw.Header()
	for k, vv := range res.Header {
		if prev, ok := h[k]; ok {
			h[k] = append(prev, vv...)
		} else {
			h[k] = vv
		}
	}
	announced := len(res.Trailer)
	AnnounceTrailers(h, res.Trailer)
	rw.WriteHeader(res.StatusCode)
	// The controller is a value in st (NewResponseController's result
	// would be an allocation of its own).
	st.copy.rw, st.copy.rc = rw, *http.NewResponseController(rw)
	rc := &st.copy.rc
	if announced > 0 {
		rc.Flush() // chunked, so that the trailers can follow
	}
	if err := p.copyBody(&st.copy, res.Body); err != nil {
		res.Body.Close()
		// Mid-stream: the client's connection is aborted, never ended as
		// if the body were complete (rule 6).
		panic(http.ErrAbortHandler)
	}
	res.Body.Close() // now: res.Trailer is filled
	if len(res.Trailer) == 0 {
		return
	}
	rc.Flush()
	if len(res.Trailer) == announced {
		for k, vv := range res.Trailer {
			h[k] = vv
		}
		return
	}
	for k, vv := range res.Trailer {
		for _, v := range vv {
			h.Add(http.TrailerPrefix+k, v)
		}
	}
}

// chunkBody is a response body whose bytes wait in buffers of its own
// (the edge's v2 client: h2cBody). writeNext waits for the next bytes,
// or the body's end, and writes the bytes held to w from those buffers,
// giving them back once written; it returns how many bytes were written
// and, like Read, io.EOF at the end (with or after the last bytes), or
// the error of the body or of w. The copy then needs no buffer of its
// own: a held stream holds none while it waits, and each byte is copied
// once less. A body that reads its bytes into a buffer all the same (a
// pipe's: pipeBody) takes it while it reads, a large one from buffers
// while they flow.
type chunkBody interface {
	writeNext(w io.Writer, buffers *BufferPool) (int, error)
	ReadyBody
}

// ReadyBody is a response body that can tell that its next read will
// not wait: bytes, or its end, are there. The proxy then sets no timer to
// flush the headers alone (a timer per response, at each end, for the
// small responses that come whole). The edge's HTTP/2 client's bodies and
// the lean HTTP/1.1 client's (internal/h1client) are ReadyBodies.
type ReadyBody interface {
	Ready() bool
}

// copyBody writes body to rw as it is read, each read flushed (but the
// last, which the end of the response flushes as the handler returns). The
// headers, written but not flushed, go out with the first bytes, or alone
// after headerFlushDelay if none came by then (no timer when a ReadyBody
// has them already). A chunkBody writes its bytes itself; another body is
// read into the proxy's buffers.
func (p *Proxy) copyBody(c *bodyCopy, body io.Reader) error {
	if rb, ok := body.(ReadyBody); !ok || !rb.Ready() {
		c.t = time.AfterFunc(headerFlushDelay, c.flushHead)
	}
	if cb, ok := body.(chunkBody); ok {
		for {
			n, err := cb.writeNext(c, p.Buffers)
			c.begin()
			if n > 0 && err != io.EOF {
				if err := c.flush(); err != nil {
					return err
				}
			}
			if err != nil {
				if err == io.EOF {
					return nil
				}
				return err
			}
		}
	}
	small := smallBuffers.Get().(*[]byte)
	buf, large := *small, false
	defer func() {
		if large {
			p.Buffers.Put(buf)
		}
		smallBuffers.Put(small)
	}()
	for {
		n, rerr := body.Read(buf)
		c.begin()
		if n > 0 {
			if _, err := c.rw.Write(buf[:n]); err != nil {
				return err
			}
			if rerr == io.EOF {
				// The last bytes: they go out with the end of the
				// response when the handler returns (one write, and the
				// end of an HTTP/2 stream on the same frame).
			} else if err := c.flush(); err != nil {
				return err
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return nil
			}
			return rerr
		}
		switch {
		case !large && n == len(buf):
			// The body moves: a large buffer while it does.
			if b := p.Buffers.Get(); len(b) > len(buf) {
				buf, large = b, true
			} else {
				p.Buffers.Put(b)
			}
		case large && n <= smallBufferSize:
			// The small one would have done: the large one goes back.
			p.Buffers.Put(buf)
			buf, large = *small, false
		}
	}
}

// bodyCopy is copyBody's state: the client's response and the timer that
// flushes its headers alone. As an io.Writer, it is what a chunkBody
// writes to.
type bodyCopy struct {
	rw      http.ResponseWriter
	rc      http.ResponseController
	t       *time.Timer // the headers' flush, until the copy began
	mu      sync.Mutex
	copying bool // guarded by mu: from then on only the copy touches rw
}

// flushHead flushes the headers alone, unless the copy began: the timer
// runs it.
func (c *bodyCopy) flushHead() {
	c.mu.Lock()
	if !c.copying {
		c.rc.Flush()
	}
	c.mu.Unlock()
}

// begin stops the headers' timer once the body's first read returned: a
// flush it began is done, none begins after.
func (c *bodyCopy) begin() {
	if c.t == nil {
		return
	}
	c.t.Stop()
	c.mu.Lock()
	c.copying = true
	c.mu.Unlock()
	c.t = nil
}

// Write writes body bytes to the client.
func (c *bodyCopy) Write(p []byte) (int, error) {
	c.begin()
	return c.rw.Write(p)
}

// flush sends what was written to the client.
func (c *bodyCopy) flush() error {
	if err := c.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// proxyState is what ServeHTTP allocates for a request besides the
// outgoing request.
type proxyState struct {
	url   url.URL
	pr    httputil.ProxyRequest
	g     passInformational
	trace httptrace.ClientTrace
	copy  bodyCopy
}

// passInformational passes 1xx responses to the client while RoundTrip runs.
type passInformational struct {
	mu       sync.Mutex
	rw       http.ResponseWriter
	finished bool
}

func (g *passInformational) got(code int, header textproto.MIMEHeader) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.finished {
		return nil
	}
	h := g.rw.Header()
	for k, vv := range header {
		h[k] = append(h[k], vv...)
	}
	g.rw.WriteHeader(code)
	clear(h) // WriteHeader leaves a 1xx's fields in the map
	return nil
}

func (g *passInformational) done() {
	g.mu.Lock()
	g.finished = true
	g.mu.Unlock()
}

// noopCloser keeps the transport from closing the client's body.
type noopCloser struct{ io.Reader }

func (noopCloser) Close() error { return nil }
