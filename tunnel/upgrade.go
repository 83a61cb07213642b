package tunnel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/wire"
)

// maxUpgradeHead bounds the response head a hijacking handler writes.
const maxUpgradeHead = 64 << 10

// Hijack takes the stream over for an upgrade request (with the upgrade
// feature), as httputil.ReverseProxy does after the upstream answered 101:
// what the handler then writes is a raw HTTP/1.1 response head, sent as
// http_response_start, followed by the upgraded connection's bytes, sent as
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
	c := &hijackedConn{w: w}
	w.hijacked = c
	return c, bufio.NewReadWriter(bufio.NewReaderSize(c, 16), bufio.NewWriterSize(c, 4<<10)), nil
}

// hijackedConn is an upgraded stream on the agent's side of protocol v1.
type hijackedConn struct {
	w      *responseWriter
	mu     sync.Mutex // serializes writes with Close
	head   []byte     // the response head, until it is complete
	sent   bool       // the head went out
	closed bool
	once   sync.Once
}

var errHijackedClosed = errors.New("tunnel: upgraded stream closed")

func (c *hijackedConn) Read(p []byte) (int, error) { return c.w.st.body.Read(p) }

func (c *hijackedConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, errHijackedClosed
	}
	if c.sent {
		return c.w.sendChunks(p)
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
	if err := c.w.st.a.conn.writeFrame(&wire.Frame{Type: wire.TypeHTTPResponseStart, RequestID: c.w.st.id, Status: status, Headers: h}); err != nil {
		return 0, err
	}
	c.sent = true
	if len(rest) > 0 {
		if _, err := c.w.sendChunks(rest); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// parseHead reads a raw response head ("HTTP/1.1 101 ...", fields, blank
// line) as it is: unlike http.ReadResponse, it keeps Connection as sent.
func parseHead(head []byte) (int, http.Header, error) {
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(head)))
	line, err := tp.ReadLine()
	if err != nil {
		return 0, nil, err
	}
	_, rest, ok := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	status, err := strconv.Atoi(code)
	if !ok || err != nil || status < 100 || status > 999 {
		return 0, nil, fmt.Errorf("tunnel: bad upgrade response line %q", line)
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		return 0, nil, err
	}
	return status, http.Header(h), nil
}

// Close ends the stream: http_response_end once the head went out.
func (c *hijackedConn) Close() error {
	c.once.Do(func() {
		st := c.w.st
		st.cancel() // a write waiting for credit gives up
		c.mu.Lock()
		defer c.mu.Unlock()
		c.closed = true
		if c.sent {
			st.a.conn.writeFrame(&wire.Frame{Type: wire.TypeHTTPResponseEnd, RequestID: st.id})
		} else {
			st.a.conn.writeFrame(&wire.Frame{Type: wire.TypeHTTPResponse, RequestID: st.id, Status: http.StatusBadGateway,
				Headers: http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, Body: []byte("sluice agent: upgrade failed\n")})
		}
	})
	return nil
}

func (c *hijackedConn) LocalAddr() net.Addr              { return agentAddr }
func (c *hijackedConn) RemoteAddr() net.Addr             { return agentAddr }
func (c *hijackedConn) SetDeadline(time.Time) error      { return nil }
func (c *hijackedConn) SetReadDeadline(time.Time) error  { return nil }
func (c *hijackedConn) SetWriteDeadline(time.Time) error { return nil }

var agentAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}
