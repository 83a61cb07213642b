package tunnel

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/wire"
	"golang.org/x/net/http/httpguts"
)

// Upgrades (WebSocket passthrough). At the agent, the local reverse proxy
// (httputil.ReverseProxy) answers an upgrade by hijacking the connection,
// writing the upstream's raw "HTTP/1.1 101" head on it, then copying bytes
// both ways. headConn is that hijacked connection for both protocols: it
// parses the head the proxy writes and hands it, and then the bytes, to the
// protocol.

// maxUpgradeHead bounds the response head a hijacking handler writes.
const maxUpgradeHead = 64 << 10

// headConn is a hijacked stream at the agent.
type headConn struct {
	r       io.Reader                             // the public client's bytes
	onHead  func(status int, h http.Header) error // the response head
	onData  func(p []byte) (int, error)           // the upstream's bytes
	onClose func(headSent bool)                   // the end
	abort   func()                                // unblocks a waiting onData before Close
	mu      sync.Mutex                            // serializes writes with Close
	head    []byte                                // the response head, until it is complete
	sent    bool                                  // the head went out
	closed  bool
	once    sync.Once
}

var errHijackedClosed = errors.New("tunnel: upgraded stream closed")

func (c *headConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *headConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, errHijackedClosed
	}
	if c.sent {
		return c.onData(p)
	}
	c.head = append(c.head, p...)
	i := bytes.Index(c.head, []byte("\r\n\r\n"))
	if i < 0 {
		if len(c.head) > maxUpgradeHead {
			return 0, errors.New("tunnel: upgrade response head too large")
		}
		return len(p), nil
	}
	status, h, err := parseHead(c.head[:i+4])
	if err != nil {
		return 0, err
	}
	rest := c.head[i+4:]
	c.head = nil
	if err := c.onHead(status, h); err != nil {
		return 0, err
	}
	c.sent = true
	if len(rest) > 0 {
		if _, err := c.onData(rest); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Close ends the stream, once.
func (c *headConn) Close() error {
	c.once.Do(func() {
		if c.abort != nil {
			c.abort()
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		c.closed = true
		c.onClose(c.sent)
	})
	return nil
}

func (c *headConn) LocalAddr() net.Addr              { return agentAddr }
func (c *headConn) RemoteAddr() net.Addr             { return agentAddr }
func (c *headConn) SetDeadline(time.Time) error      { return nil }
func (c *headConn) SetReadDeadline(time.Time) error  { return nil }
func (c *headConn) SetWriteDeadline(time.Time) error { return nil }

var agentAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}

// hijackResult is what a Hijack method returns for c.
func hijackResult(c *headConn) (net.Conn, *bufio.ReadWriter, error) {
	return c, bufio.NewReadWriter(bufio.NewReaderSize(c, 16), bufio.NewWriterSize(c, 4<<10)), nil
}

// parseHead reads a raw response head ("HTTP/1.1 101 ...", fields, blank
// line) as it is: unlike http.ReadResponse, it keeps Connection as sent.
func parseHead(head []byte) (int, http.Header, error) {
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(head)))
	line, err := tp.ReadLine()
	if err != nil {
		return 0, nil, err
	}
	proto, rest, ok := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	status, err := strconv.Atoi(code)
	if !ok || !strings.HasPrefix(proto, "HTTP/") || len(code) != 3 || err != nil || status < 100 {
		return 0, nil, fmt.Errorf("tunnel: bad upgrade response line %q", line)
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		return 0, nil, err
	}
	for name, vv := range h {
		if !httpguts.ValidHeaderFieldName(name) {
			return 0, nil, fmt.Errorf("tunnel: bad header name %q in an upgrade response", name)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return 0, nil, fmt.Errorf("tunnel: bad value of header %s in an upgrade response", name)
			}
		}
	}
	return status, http.Header(h), nil
}

// Hijack takes a v1 stream over for an upgrade request (with the upgrade
// feature), as httputil.ReverseProxy does after the upstream answered 101:
// the head it writes goes out as http_response_start, the bytes after it as
// chunks; reads get the edge's request chunks. Other requests cannot be
// hijacked.
func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.st.upgrade {
		return nil, nil, http.ErrNotSupported
	}
	if w.wroteHeader || w.hijacked != nil {
		return nil, nil, http.ErrHijacked
	}
	st := w.st
	conn := st.a.conn
	c := &headConn{
		r: st.body,
		onHead: func(status int, h http.Header) error {
			return conn.writeFrame(&wire.Frame{Type: wire.TypeHTTPResponseStart, RequestID: st.id, Status: status, Headers: h})
		},
		onData: w.sendChunks,
		abort:  st.cancel, // a write waiting for credit gives up
		onClose: func(headSent bool) {
			if headSent {
				conn.writeFrame(&wire.Frame{Type: wire.TypeHTTPResponseEnd, RequestID: st.id})
				return
			}
			conn.writeFrame(&wire.Frame{Type: wire.TypeHTTPResponse, RequestID: st.id, Status: http.StatusBadGateway,
				Headers: http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, Body: []byte("sluice agent: upgrade failed\n")})
		},
	}
	w.hijacked = c
	return hijackResult(c)
}

// Protocol v2 carries an upgrade as a full-duplex HTTP/2 stream, since
// HTTP/2 has no 101: the edge sends the request with its Upgrade value in
// Sluice-Upgrade (Connection and Upgrade are not allowed in HTTP/2) and a
// request body that stays open for the public client's bytes; the agent
// passes the request on as an HTTP/1.1 upgrade and, when the upstream
// switches, answers 200 with the upstream's 101 headers and Sluice-Upgraded
// set to the protocol, after which the response body carries the
// upstream's bytes. Any other answer is an ordinary response.
const (
	upgradeHeader  = "Sluice-Upgrade"
	upgradedHeader = "Sluice-Upgraded"
)

// roundTripUpgrade carries an upgrade request over v2 and returns a 101
// whose Body is the upgraded connection.
func (s *v2Edge) roundTripUpgrade(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	if req.Body != nil {
		req.Body.Close() // an upgrade request has no body of its own
	}
	proto := out.Header.Get("Upgrade")
	out.Header.Del("Connection")
	out.Header.Del("Upgrade")
	out.Header.Set(upgradeHeader, proto)
	resp, pw, err := s.duplex(out)
	if err != nil {
		return nil, err
	}
	up := resp.Header.Get(upgradedHeader)
	if up == "" {
		pw.Close() // refused: an ordinary response, and nothing more to send
		return resp, nil
	}
	resp.Header.Del(upgradedHeader)
	resp.Header.Set("Connection", "Upgrade")
	resp.Header.Set("Upgrade", up)
	resp.StatusCode, resp.Status = http.StatusSwitchingProtocols, "101 Switching Protocols"
	resp.Proto, resp.ProtoMajor, resp.ProtoMinor = "HTTP/1.1", 1, 1
	resp.ContentLength = 0 // (-1 would make the 101 go out with "Connection: close")
	resp.Body = &duplexBody{ReadCloser: resp.Body, w: pw}
	return resp, nil
}

// duplexBody is an upgraded v2 stream at the edge: reads from the response
// body, writes into the request body.
type duplexBody struct {
	io.ReadCloser
	w *h2cWriter
}

func (b *duplexBody) Write(p []byte) (int, error) { return b.w.Write(p) }

func (b *duplexBody) Close() error {
	b.w.Close()
	return b.ReadCloser.Close()
}

// serveUpgradeH2 wraps the agent's handler for v2: a request with
// Sluice-Upgrade becomes an HTTP/1.1 upgrade request again, and the
// handler's hijack of it is served on the HTTP/2 stream.
func serveUpgradeH2(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proto := r.Header.Get(upgradeHeader)
		if proto == "" {
			next.ServeHTTP(w, r)
			return
		}
		r.Header.Del(upgradeHeader)
		r.Header.Set("Connection", "Upgrade")
		r.Header.Set("Upgrade", proto)
		r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
		body := r.Body
		r.Body, r.ContentLength = http.NoBody, 0 // the body is the upgraded stream's
		next.ServeHTTP(&upgradeWriter{ResponseWriter: w, body: body, proto: proto}, r)
	})
}

// upgradeWriter lets the agent's handler hijack an upgrade request on v2.
type upgradeWriter struct {
	http.ResponseWriter
	body  io.ReadCloser
	proto string
	hj    *headConn
}

func (w *upgradeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hj != nil {
		return nil, nil, http.ErrHijacked
	}
	rc := http.NewResponseController(w.ResponseWriter)
	w.hj = &headConn{
		r: w.body,
		onHead: func(status int, h http.Header) error {
			dst := w.ResponseWriter.Header()
			proto := cmp.Or(h.Get("Upgrade"), w.proto)
			RemoveHopByHop(h)
			for k, vv := range h {
				dst[k] = vv
			}
			if status == http.StatusSwitchingProtocols {
				dst.Set(upgradedHeader, proto)
				status = http.StatusOK
			}
			w.ResponseWriter.WriteHeader(status)
			return rc.Flush()
		},
		onData: func(p []byte) (int, error) {
			n, err := w.ResponseWriter.Write(p)
			if err == nil {
				err = rc.Flush()
			}
			return n, err
		},
		onClose: func(bool) { w.body.Close() },
	}
	return hijackResult(w.hj)
}
