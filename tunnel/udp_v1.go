package tunnel

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/sluicehq/sluice/wire"
)

// Protocol v1 carries a UDP session as udp_data frames under a
// connection_id of the edge's: each of the edge's carries the remote
// address (remote_addr), and the agent opens its local socket at the
// first one of a connection_id. tcp_close {connection_id} ends the
// session either way: the edge's when it forgets the remote address, the
// agent's at its idle timeout (reason "idle") or when its socket failed
// (the reason says why). Datagrams are not credited: a session's queue
// holds udpQueue of them, and past it they are dropped and counted
// (OnFrameError "udp_dropped"), as a full socket buffer drops them.

// v1UDP is a UDP session at the edge.
type v1UDP struct {
	s      *v1Edge
	id     string
	remote string
	in     chan []byte
	done   chan struct{}
	once   sync.Once
	err    error // why it ended, set before done closes
}

// OpenUDP starts a UDP session; nothing goes to the agent before the
// first datagram.
func (s *v1Edge) OpenUDP(ctx context.Context, remoteAddr string) (Datagrams, error) {
	if !s.cfg.udp {
		return nil, ErrNotUDP
	}
	if err := s.waitOpen(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.acquire(s.cfg.MaxStreams); err != nil {
		return nil, err
	}
	s.nextID++
	d := &v1UDP{s: s, id: strconv.FormatUint(s.nextID, 10), remote: remoteAddr, in: make(chan []byte, udpQueue), done: make(chan struct{})}
	s.udp[d.id] = d
	return d, nil
}

func (d *v1UDP) ReadDatagram(p []byte) (int, error) {
	select {
	case b := <-d.in:
		if len(b) > len(p) {
			return 0, fmt.Errorf("tunnel: datagram of %d bytes: %w", len(b), io.ErrShortBuffer)
		}
		return copy(p, b), nil
	case <-d.done:
		return 0, d.err
	}
}

func (d *v1UDP) WriteDatagram(p []byte) error {
	if len(p) > MaxDatagram {
		return ErrDatagramTooLarge
	}
	select {
	case <-d.done:
		return d.err
	default:
	}
	return d.s.conn.writeFrame(&wire.Frame{Type: wire.TypeUDPData, ConnectionID: d.id, RemoteAddr: d.remote, Data: p})
}

// Close ends the session, telling the agent.
func (d *v1UDP) Close() error {
	if d.fail(fmt.Errorf("%w: closed", ErrStreamReset)) {
		d.s.conn.writeFrame(&wire.Frame{Type: wire.TypeTCPClose, ConnectionID: d.id, Reason: "closed"})
	}
	return nil
}

// fail ends the session with err for its reader; it reports whether this
// call did.
func (d *v1UDP) fail(err error) bool {
	did := false
	d.once.Do(func() {
		did = true
		d.err = err
		d.s.mu.Lock()
		delete(d.s.udp, d.id)
		d.s.mu.Unlock()
		d.s.release()
		close(d.done)
	})
	return did
}

// handleUDP queues a udp_data from the agent for its session.
func (s *v1Edge) handleUDP(f *wire.Frame) {
	s.mu.Lock()
	d := s.udp[f.ConnectionID]
	s.mu.Unlock()
	if d == nil {
		s.unknownStream(f, f.ConnectionID, "unknown_connection_id")
		return
	}
	if len(f.Data) > MaxDatagram {
		s.conn.frameError("oversized_datagram", fmt.Errorf("udp_data of %d bytes for session %q", len(f.Data), f.ConnectionID))
		return
	}
	select {
	case d.in <- append([]byte(nil), f.Data...):
	default:
		s.conn.frameError("udp_dropped", fmt.Errorf("session %q: its queue of %d datagrams is full", f.ConnectionID, udpQueue))
	}
}

// closeUDP applies a tcp_close for a UDP session (the agent ended it),
// reporting whether f was one.
func (s *v1Edge) closeUDP(f *wire.Frame) bool {
	if f.Type != wire.TypeTCPClose {
		return false
	}
	s.mu.Lock()
	d := s.udp[f.ConnectionID]
	s.mu.Unlock()
	if d == nil {
		return false
	}
	if f.Reason == "" || f.Reason == "idle" || f.Reason == wire.ReasonEOF {
		d.fail(io.EOF)
	} else {
		d.fail(dialError(f.Reason))
	}
	return true
}

// agentUDP is a UDP session at the agent, the udpPeer of pumpUDP.
type agentUDP struct {
	id   string
	a    *agentSession
	in   chan []byte
	done chan struct{}
	once sync.Once

	mu     sync.Mutex
	closed bool // the edge ended it, or we sent tcp_close
}

// handleUDP applies a udp_data from the edge: to its session, opened at
// the first datagram of a connection_id.
func (a *agentSession) handleUDP(f *wire.Frame) {
	if f.ConnectionID == "" {
		a.conn.frameError("invalid", fmt.Errorf("udp_data without connection_id"))
		return
	}
	if len(f.Data) > MaxDatagram {
		a.conn.frameError("oversized_datagram", fmt.Errorf("udp_data of %d bytes for session %q", len(f.Data), f.ConnectionID))
		return
	}
	a.mu.Lock()
	p := a.udp[f.ConnectionID]
	if p == nil {
		p = &agentUDP{id: f.ConnectionID, a: a, in: make(chan []byte, udpQueue), done: make(chan struct{})}
		a.udp[p.id] = p
		a.wg.Add(1)
		go p.run(f.RemoteAddr)
	}
	a.mu.Unlock()
	select {
	case p.in <- append([]byte(nil), f.Data...):
	default:
		a.conn.frameError("udp_dropped", fmt.Errorf("session %q: its queue of %d datagrams is full", f.ConnectionID, udpQueue))
	}
}

// run opens the local socket and pumps until the session ends, then
// tells the edge why (unless the edge ended it).
func (p *agentUDP) run(remoteAddr string) {
	a := p.a
	defer a.wg.Done()
	ctx, cancel := context.WithCancel(a.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, p.end)
	defer stop()
	conn, err := dialUDPSession(ctx, a.dial.udp, remoteAddr)
	if err == nil {
		err = pumpUDP(conn, p, a.dial.udpIdle)
	}
	p.end()
	p.mu.Lock()
	send := !p.closed
	p.closed = true
	p.mu.Unlock()
	if send {
		reason := udpReason(err)
		if reason == "" {
			reason = "closed"
		}
		a.conn.writeFrame(&wire.Frame{Type: wire.TypeTCPClose, ConnectionID: p.id, Reason: reason})
	}
}

func (p *agentUDP) readDatagram(b []byte) (int, error) {
	select {
	case d := <-p.in:
		return copy(b, d), nil
	case <-p.done:
		return 0, ErrStreamReset
	}
}

func (p *agentUDP) writeDatagram(b []byte) error {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return ErrStreamReset
	}
	return p.a.conn.writeFrame(&wire.Frame{Type: wire.TypeUDPData, ConnectionID: p.id, Data: b})
}

// end forgets the session: its pump stops.
func (p *agentUDP) end() {
	p.once.Do(func() {
		p.a.mu.Lock()
		if p.a.udp[p.id] == p {
			delete(p.a.udp, p.id)
		}
		p.a.mu.Unlock()
		close(p.done)
	})
}

// closeUDP applies a tcp_close for a UDP session (the edge ended it),
// reporting whether f was one.
func (a *agentSession) closeUDP(f *wire.Frame) bool {
	if f.Type != wire.TypeTCPClose {
		return false
	}
	a.mu.Lock()
	p := a.udp[f.ConnectionID]
	a.mu.Unlock()
	if p == nil {
		return false
	}
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.end()
	return true
}

// endUDP ends every UDP session (the connection is gone).
func (a *agentSession) endUDP() {
	a.mu.Lock()
	ps := make([]*agentUDP, 0, len(a.udp))
	for _, p := range a.udp {
		ps = append(ps, p)
	}
	a.mu.Unlock()
	for _, p := range ps {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.end()
	}
}
