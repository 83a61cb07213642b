package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// Protocol v2 carries a UDP session as one full-duplex HTTP/2 stream,
// opened like a TCP stream (duplex): the edge's request carries the remote
// address in Sluice-Udp; the agent opens its local socket and answers 200
// (or 502 with the error in Sluice-Tcp-Error). Both bodies then carry
// datagrams, each a 2-byte big-endian length and that many bytes. The
// agent ends its response at its idle timeout; the edge resets the stream
// to end the session.
const udpHeader = "Sluice-Udp"

// OpenUDP opens a UDP session to the agent; ctx bounds the opening.
func (s *v2Edge) OpenUDP(ctx context.Context, remoteAddr string) (Datagrams, error) {
	if !s.cfg.udp {
		return nil, ErrNotUDP
	}
	resp, pw, cancel, err := s.openDuplex(ctx, "udp", udpHeader, remoteAddr)
	if err != nil {
		return nil, err
	}
	d := &v2Datagrams{body: resp.Body, w: pw, cancel: cancel, release: s.release}
	if resp.StatusCode != http.StatusOK {
		d.err = dialError(resp.Header.Get(tcpErrorHeader))
	}
	return d, nil
}

// v2Datagrams is a UDP session at the edge, in v2.
type v2Datagrams struct {
	body    io.ReadCloser
	err     error // the agent could not open its socket
	wmu     sync.Mutex
	w       *h2cWriter
	wbuf    []byte
	cancel  context.CancelFunc
	release func()
	once    sync.Once
}

func (d *v2Datagrams) ReadDatagram(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n, err := readDatagramFrom(d.body, p)
	if err != nil && err != io.EOF && !errors.Is(err, io.ErrShortBuffer) {
		err = fmt.Errorf("%w: %w", ErrStreamReset, err)
	}
	return n, err
}

func (d *v2Datagrams) WriteDatagram(p []byte) error {
	if d.err != nil {
		return d.err
	}
	d.wmu.Lock()
	defer d.wmu.Unlock()
	return writeDatagramTo(d.w, &d.wbuf, p)
}

// Close resets the stream and uncounts it.
func (d *v2Datagrams) Close() error {
	d.once.Do(func() {
		d.w.CloseWithError(ErrStreamReset)
		d.body.Close()
		d.cancel()
		d.release()
	})
	return nil
}

// serveUDPH2 serves a request with Sluice-Udp (a UDP session) at the
// agent: the local socket from dial, datagrams pumped until idle.
func serveUDPH2(w http.ResponseWriter, r *http.Request, d dialers) {
	conn, err := dialUDPSession(r.Context(), d.udp, r.Header.Get(udpHeader))
	if err != nil {
		w.Header().Set(tcpErrorHeader, tcpReason(err))
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	w.WriteHeader(http.StatusOK)
	p := &h2UDPPeer{w: w, rc: http.NewResponseController(w), body: r.Body}
	if err := p.rc.Flush(); err != nil {
		conn.Close()
		return
	}
	stop := context.AfterFunc(r.Context(), func() { conn.Close() })
	defer stop()
	pumpUDP(conn, p, d.udpIdle)
}

// h2UDPPeer is a UDP session at the agent, in v2.
type h2UDPPeer struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	body io.ReadCloser
	wbuf []byte
}

func (p *h2UDPPeer) readDatagram(b []byte) (int, error) { return readDatagramFrom(p.body, b) }

func (p *h2UDPPeer) writeDatagram(b []byte) error {
	if err := writeDatagramTo(p.w, &p.wbuf, b); err != nil {
		return err
	}
	return p.rc.Flush()
}

func (p *h2UDPPeer) end() { p.body.Close() }
