package tunnel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Protocol v2 carries a TCP connection as one full-duplex HTTP/2 stream,
// opened like an upgrade (duplex): the edge's request carries the public
// client's address in Sluice-Tcp, and its body, raw, the client's bytes;
// END_STREAM on it is the client's half-close. The agent dials, then
// answers 200 (or 502 with the dial error's text in Sluice-Tcp-Error), and
// its response body carries the local server's bytes in chunks, each a
// 4-byte big-endian length and that many bytes; a zero length is the local
// server's half-close. (An HTTP/2 server cannot end its response while it
// still reads the request, so that end is said inside the body: the
// stream's END_STREAM follows once both sides finished.) RST_STREAM either
// way is a reset, and so is an end without the zero-length chunk.
const (
	tcpHeader      = "Sluice-Tcp"
	tcpErrorHeader = "Sluice-Tcp-Error"
	// maxTCPChunk bounds a chunk of the agent's bytes.
	maxTCPChunk = 1 << 20
)

// duplex sends out with a request body that stays open for the caller's
// writes (w), and returns the response: the machinery of upgrades, TCP
// and UDP streams. The writes go out from the caller's goroutine.
func (s *v2Edge) duplex(out *http.Request) (*http.Response, *h2cWriter, error) {
	return s.cc.roundTrip(out, true)
}

// openDuplex opens a TCP connection's or UDP session's stream (kind, with
// the public client's address in field): counted in the stream limit,
// and ctx bounding only the opening (the agent's dial). cancel ends the
// stream's context; the caller releases the stream's count when done.
func (s *v2Edge) openDuplex(ctx context.Context, kind, field, remoteAddr string) (*http.Response, *h2cWriter, context.CancelFunc, error) {
	if err := s.waitOpen(ctx); err != nil {
		return nil, nil, nil, err
	}
	if err := s.acquireStream(); err != nil {
		return nil, nil, nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	req, _ := http.NewRequestWithContext(sctx, http.MethodPost, "http://"+kind+"/", nil)
	req.Header.Set(field, remoteAddr)
	resp, pw, err := s.duplex(req)
	opening := stop()
	if err != nil || !opening {
		if err == nil {
			resp.Body.Close()
			pw.Close()
			err = ctx.Err()
		}
		cancel()
		s.release()
		select {
		case <-s.done:
			return nil, nil, nil, ErrSessionClosed
		default:
		}
		return nil, nil, nil, fmt.Errorf("tunnel: open %s: %w", kind, err)
	}
	return resp, pw, cancel, nil
}

// OpenTCP opens a TCP stream to the agent; ctx bounds the opening (the
// agent's dial), not the stream.
func (s *v2Edge) OpenTCP(ctx context.Context, remoteAddr string) (Stream, error) {
	if !s.cfg.tcp {
		return nil, ErrNotTCP
	}
	resp, pw, cancel, err := s.openDuplex(ctx, "tcp", tcpHeader, remoteAddr)
	if err != nil {
		return nil, err
	}
	st := &v2Stream{body: resp.Body, r: tcpChunkReader{r: resp.Body}, w: pw, cancel: cancel, release: s.release}
	if resp.StatusCode != http.StatusOK {
		st.err = dialError(resp.Header.Get(tcpErrorHeader))
	}
	return st, nil
}

// v2Stream is a TCP stream at the edge.
type v2Stream struct {
	body    io.ReadCloser
	r       tcpChunkReader
	err     error // the agent could not connect
	w       *h2cWriter
	cancel  context.CancelFunc
	release func()
	once    sync.Once
	// Both set when that way ended cleanly: CloseWrite was called, Read
	// returned io.EOF (the agent's half-close).
	wroteEOF, readEOF atomic.Bool
}

// tcpFinish bounds Close's wait, after both ways ended cleanly, for the
// stream's end (the agent's handler returning once it read the whole
// request body).
const tcpFinish = 10 * time.Second

func (st *v2Stream) Read(p []byte) (int, error) {
	if st.err != nil {
		return 0, st.err
	}
	n, err := st.r.Read(p)
	switch {
	case err == io.EOF:
		st.readEOF.Store(true)
	case err != nil:
		err = fmt.Errorf("%w: %w", ErrStreamReset, err)
	}
	return n, err
}

func (st *v2Stream) Write(p []byte) (int, error) {
	if st.err != nil {
		return 0, st.err
	}
	return st.w.Write(p)
}

// CloseWrite ends the request body: END_STREAM, the half-close.
func (st *v2Stream) CloseWrite() error {
	st.wroteEOF.Store(true)
	return st.w.Close()
}

// Close resets what did not end, and uncounts the stream. After both ways
// ended cleanly it first waits (up to tcpFinish) for the stream's own end:
// the last of the client's bytes may still be on their way to the agent,
// and a reset now would drop them.
func (st *v2Stream) Close() error {
	st.once.Do(func() {
		if st.err == nil && st.wroteEOF.Load() && st.readEOF.Load() {
			t := time.AfterFunc(tcpFinish, func() { st.body.Close() })
			io.Copy(io.Discard, st.body)
			t.Stop()
		}
		st.w.CloseWithError(ErrStreamReset)
		st.body.Close()
		st.cancel()
		st.release()
	})
	return nil
}

// tcpChunkReader reads the agent's chunks: io.EOF after the zero-length
// one, errTCPTruncated if the body ends before it.
type tcpChunkReader struct {
	r    io.Reader
	left int
	hdr  [4]byte
	eof  bool
}

var errTCPTruncated = errors.New("the agent's side ended without finishing")

func (c *tcpChunkReader) Read(p []byte) (int, error) {
	for c.left == 0 {
		if c.eof {
			return 0, io.EOF
		}
		if _, err := io.ReadFull(c.r, c.hdr[:]); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				err = errTCPTruncated
			}
			return 0, err
		}
		n := binary.BigEndian.Uint32(c.hdr[:])
		if n > maxTCPChunk {
			return 0, fmt.Errorf("a chunk of %d bytes from the agent", n)
		}
		c.left = int(n)
		c.eof = n == 0
	}
	n, err := c.r.Read(p[:min(len(p), c.left)])
	c.left -= n
	if err == io.EOF {
		if c.left > 0 {
			return n, errTCPTruncated
		}
		err = nil
	}
	return n, err
}

// serveTCPH2 wraps the agent's handler for v2: a request with Sluice-Tcp
// is a TCP connection, dialed with d.tcp and pumped on the stream; one
// with Sluice-Udp a UDP session (udp_v2.go); one with Sluice-Pipe a pipe
// (pipes.go).
func serveTCPH2(d dialers, next http.Handler) http.Handler {
	dial := d.tcp
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.Header[udpHeader]; ok {
			serveUDPH2(w, r, d)
			return
		}
		if _, ok := r.Header[pipeHeader]; ok {
			servePipe(w, r, d.pipe)
			return
		}
		if _, ok := r.Header[tcpHeader]; !ok {
			next.ServeHTTP(w, r)
			return
		}
		err := errNoDialTCP
		var conn net.Conn
		if dial != nil {
			conn, err = dial(r.Context(), r.Header.Get(tcpHeader))
		}
		if err != nil {
			w.Header().Set(tcpErrorHeader, tcpReason(err))
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		pumpStream(w, r, conn)
	})
}

// pumpStream answers a TCP connection's or a pipe's stream with 200 and
// pumps it to conn, the local connection it dialed.
func pumpStream(w http.ResponseWriter, r *http.Request, conn net.Conn) {
	w.WriteHeader(http.StatusOK)
	p := &h2Peer{w: w, rc: http.NewResponseController(w), body: r.Body}
	if err := p.rc.Flush(); err != nil {
		conn.Close()
		return
	}
	stop := context.AfterFunc(r.Context(), func() { abortConn(conn) })
	defer stop()
	if err := pumpTCP(conn, p, copyBufferSize); err != nil {
		panic(http.ErrAbortHandler) // RST_STREAM: the edge sees a reset
	}
}

// h2Peer is a TCP stream at the agent, in v2.
type h2Peer struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	body io.ReadCloser
	hdr  [4]byte
}

func (p *h2Peer) Read(b []byte) (int, error) { return p.body.Read(b) }

func (p *h2Peer) Write(b []byte) (int, error) {
	written := 0
	for written < len(b) {
		n := min(len(b)-written, maxTCPChunk)
		if err := p.chunk(b[written : written+n]); err != nil {
			return written, err
		}
		written += n
	}
	return written, nil
}

// chunk writes one chunk and flushes it.
func (p *h2Peer) chunk(b []byte) error {
	binary.BigEndian.PutUint32(p.hdr[:], uint32(len(b)))
	if _, err := p.w.Write(p.hdr[:]); err != nil {
		return err
	}
	if len(b) > 0 {
		if _, err := p.w.Write(b); err != nil {
			return err
		}
	}
	return p.rc.Flush()
}

// CloseWrite sends the zero-length chunk.
func (p *h2Peer) CloseWrite() error { return p.chunk(nil) }

// reset makes a blocked Read return; the handler then aborts the stream.
func (p *h2Peer) reset(string) { p.body.Close() }
