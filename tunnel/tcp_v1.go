package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/sluicehq/sluice/wire"
)

// Protocol v1 carries a TCP connection as Jetty's frames: tcp_connect
// (edge to agent), then tcp_data and tcp_close both ways. With
// wire.FeatureTCPHalfClose a tcp_close with reason "eof" is a half-close;
// with wire.FeatureWindow tcp_data is credited by window_update
// {connection_id} as bodies are. Without the half-close feature (a plain
// Jetty agent) a tcp_close ends the connection: without a reason (or with
// "eof") as a clean end, with one as a reset carrying it.

// v1TCP is a TCP stream at the edge. Its id comes from the session's
// request counter, so that issued tells late frames from unknown ones.
type v1TCP struct {
	recvWindow
	id     string
	credit *credit // bytes the agent lets us send
	done   chan struct{}
	once   sync.Once

	mu      sync.Mutex // guards sentEOF, gotEOF
	sentEOF bool       // this side finished writing (CloseWrite)
	gotEOF  bool       // the agent's side finished writing
}

// OpenTCP opens a TCP stream to the agent: tcp_connect goes out at once,
// and the agent's failure to connect comes back as a tcp_close. ctx
// bounds the opening only.
func (s *v1Edge) OpenTCP(ctx context.Context, remoteAddr string) (Stream, error) {
	if !s.cfg.tcp {
		return nil, ErrNotTCP
	}
	if err := s.waitOpen(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if err := s.acquire(s.cfg.MaxStreams); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	s.nextID++
	st := &v1TCP{
		id:     strconv.FormatUint(s.nextID, 10),
		credit: newCredit(int64(s.cfg.V1.Window)),
		done:   make(chan struct{}),
	}
	st.init(s, wire.Frame{Type: wire.TypeWindowUpdate, ConnectionID: st.id})
	s.tcp[st.id] = st
	s.mu.Unlock()
	if err := s.conn.writeFrame(&wire.Frame{Type: wire.TypeTCPConnect, ConnectionID: st.id, RemoteAddr: remoteAddr}); err != nil {
		st.fail(fmt.Errorf("%w: %w", ErrStreamReset, err))
		return nil, fmt.Errorf("tunnel: open tcp: %w", err)
	}
	if s.cfg.has(wire.FeatureWindow) {
		st.grant() // the window past the first, now that the agent knows the connection
	}
	return st, nil
}

func (st *v1TCP) Read(p []byte) (int, error) { return st.body.Read(p) }

// Write sends p as tcp_data frames within the agent's window.
func (st *v1TCP) Write(p []byte) (int, error) {
	s := st.s
	ended := func() bool {
		st.mu.Lock()
		closed := st.sentEOF
		st.mu.Unlock()
		return closed || st.over()
	}
	return s.conn.sendChunks(p, s.cfg.has(wire.FeatureWindow), st.credit, st.done, ended, func(data []byte) *wire.Frame {
		return &wire.Frame{Type: wire.TypeTCPData, ConnectionID: st.id, Data: data}
	})
}

// over reports whether the stream ended (both ways, or reset).
func (st *v1TCP) over() bool {
	select {
	case <-st.done:
		return true
	default:
		return false
	}
}

// CloseWrite half-closes toward the agent: tcp_close "eof" with the
// feature; without it the agent learns of the end only at Close.
func (st *v1TCP) CloseWrite() error {
	st.mu.Lock()
	if st.sentEOF {
		st.mu.Unlock()
		return nil
	}
	st.sentEOF = true
	both := st.gotEOF
	st.mu.Unlock()
	if !st.s.cfg.has(wire.FeatureTCPHalfClose) || st.over() {
		return nil
	}
	err := st.s.conn.writeFrame(&wire.Frame{Type: wire.TypeTCPClose, ConnectionID: st.id, Reason: wire.ReasonEOF})
	if both {
		st.forget()
	}
	return err
}

// Close ends the stream; an agent that still has it gets a tcp_close
// (a reset, unless it was finished).
func (st *v1TCP) Close() error {
	st.body.Close()
	if st.forget() {
		st.s.conn.writeFrame(&wire.Frame{Type: wire.TypeTCPClose, ConnectionID: st.id, Reason: "closed"})
	}
	return nil
}

// fail ends the stream with err for its reader, without telling the agent.
func (st *v1TCP) fail(err error) {
	st.body.closeWrite(err)
	st.forget()
}

// forget removes the stream from the session; it reports whether this
// call did.
func (st *v1TCP) forget() bool {
	did := false
	st.once.Do(func() {
		did = true
		st.s.mu.Lock()
		delete(st.s.tcp, st.id)
		st.s.mu.Unlock()
		st.endWindow()
		st.s.release()
		close(st.done)
	})
	return did
}

// handleTCP applies a tcp_data, tcp_close or window_update {connection_id}
// from the agent.
func (s *v1Edge) handleTCP(f *wire.Frame) {
	s.mu.Lock()
	st := s.tcp[f.ConnectionID]
	s.mu.Unlock()
	if st == nil {
		s.unknownStream(f, f.ConnectionID, "unknown_connection_id")
		return
	}
	switch f.Type {
	case wire.TypeTCPData:
		st.mu.Lock()
		after := st.gotEOF
		st.mu.Unlock()
		if after {
			s.conn.frameError("invalid", fmt.Errorf("tcp_data for connection %q after its eof", f.ConnectionID))
			return
		}
		if err := st.arrived(f.Data, !s.cfg.has(wire.FeatureWindow)); errors.Is(err, ErrFlowControl) {
			s.conn.frameError("flow_control", fmt.Errorf("connection %q: agent sent past its window", f.ConnectionID))
			st.fail(fmt.Errorf("%w: %w", ErrStreamReset, ErrFlowControl))
			s.conn.writeFrame(&wire.Frame{Type: wire.TypeTCPClose, ConnectionID: st.id, Reason: "flow control"})
		}
	case wire.TypeTCPClose:
		halfClose := s.cfg.has(wire.FeatureTCPHalfClose)
		if halfClose && f.Reason == wire.ReasonEOF {
			st.mu.Lock()
			dup, both := st.gotEOF, st.sentEOF
			st.gotEOF = true
			st.mu.Unlock()
			if dup {
				s.conn.frameError("duplicate_close", fmt.Errorf("second tcp_close for connection %q", f.ConnectionID))
				return
			}
			st.body.closeWrite(io.EOF)
			if both {
				st.forget()
			}
			return
		}
		if !halfClose && (f.Reason == "" || f.Reason == wire.ReasonEOF) {
			st.fail(io.EOF) // a plain agent's end: the whole connection ends cleanly
			return
		}
		st.fail(dialError(f.Reason))
	case wire.TypeWindowUpdate:
		if f.Bytes > 0 {
			st.credit.add(f.Bytes)
		}
	}
}

// unknownStream handles a frame for a stream (id) the session does not
// have: one that ended (counted as "late", logged only at debug level
// since cancellations make it normal), or one never issued (a frame error
// of kind).
func (s *v1Edge) unknownStream(f *wire.Frame, id, kind string) {
	if !s.issued(id) {
		s.conn.frameError(kind, fmt.Errorf("%s for unknown stream %q", f.Type, id))
		return
	}
	s.cfg.Logger.Debug("frame for an ended stream", "type", f.Type, "id", id)
	if s.cfg.OnFrameError != nil {
		s.cfg.OnFrameError("late")
	}
}

// agentTCP is a TCP connection at the agent, the tcpPeer of pumpTCP.
type agentTCP struct {
	id     string
	a      *agentSession
	in     *pipe   // the edge's bytes
	credit *credit // bytes the edge lets us send
	unread atomic.Int64
	done   chan struct{} // closed when the edge closed it or the pump ended
	once   sync.Once

	mu      sync.Mutex
	gotEOF  bool // the edge finished writing
	closed  bool // the edge closed it fully, or we sent our full close
	sentEOF bool
}

// startTCP handles tcp_connect: dial, then pump on a goroutine of its own.
func (a *agentSession) startTCP(f *wire.Frame) {
	a.mu.Lock()
	if _, dup := a.tcp[f.ConnectionID]; dup || f.ConnectionID == "" {
		a.mu.Unlock()
		a.conn.frameError("duplicate_start", fmt.Errorf("tcp_connect for connection %q in use", f.ConnectionID))
		return
	}
	limit, onRead := plainBuffer, func(int) {}
	p := &agentTCP{id: f.ConnectionID, a: a, credit: newCredit(a.cfg.window), done: make(chan struct{})}
	if a.cfg.has(wire.FeatureWindow) {
		limit, onRead = a.cfg.V1.Window, p.creditEdge
	}
	p.in = newPipe(limit, onRead)
	a.tcp[p.id] = p
	a.mu.Unlock()
	remoteAddr := f.RemoteAddr // f is the read loop's, reused
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer p.forget()
		err := errNoDialTCP
		var conn net.Conn
		if a.dialTCP != nil {
			ctx, cancel := context.WithCancel(a.ctx)
			go func() { // the edge's close cancels the dial
				select {
				case <-p.done:
					cancel()
				case <-ctx.Done():
				}
			}()
			conn, err = a.dialTCP(ctx, remoteAddr)
			defer cancel()
		}
		if err != nil {
			p.reset(tcpReason(err))
			return
		}
		if pumpTCP(conn, p, chunkSize) == nil && !a.cfg.has(wire.FeatureTCPHalfClose) {
			p.reset("") // a plain edge's end: the full close
		}
	}()
}

// creditEdge gives the edge credit back once half a window was read.
func (p *agentTCP) creditEdge(n int) {
	if v := p.unread.Add(int64(n)); v >= int64(p.a.cfg.V1.Window/2) {
		p.unread.Add(-v)
		p.a.conn.writeFrame(&wire.Frame{Type: wire.TypeWindowUpdate, ConnectionID: p.id, Bytes: v})
	}
}

func (p *agentTCP) Read(b []byte) (int, error) { return p.in.Read(b) }

// Write sends b as tcp_data within the edge's window.
func (p *agentTCP) Write(b []byte) (int, error) {
	a := p.a
	ended := func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.closed
	}
	return a.conn.sendChunks(b, a.cfg.has(wire.FeatureWindow), p.credit, p.done, ended, func(data []byte) *wire.Frame {
		return &wire.Frame{Type: wire.TypeTCPData, ConnectionID: p.id, Data: data}
	})
}

// CloseWrite sends tcp_close "eof" to an edge with the half-close
// feature; to others, the full close goes when the pump ends.
func (p *agentTCP) CloseWrite() error {
	if !p.a.cfg.has(wire.FeatureTCPHalfClose) {
		return nil
	}
	p.mu.Lock()
	if p.closed || p.sentEOF {
		p.mu.Unlock()
		return nil
	}
	p.sentEOF = true
	p.mu.Unlock()
	return p.a.conn.writeFrame(&wire.Frame{Type: wire.TypeTCPClose, ConnectionID: p.id, Reason: wire.ReasonEOF})
}

// reset closes the connection toward the edge with reason, unless the edge
// closed it, and makes a blocked Read return.
func (p *agentTCP) reset(reason string) {
	p.mu.Lock()
	send := !p.closed
	p.closed = true
	p.mu.Unlock()
	if send {
		p.a.conn.writeFrame(&wire.Frame{Type: wire.TypeTCPClose, ConnectionID: p.id, Reason: reason})
	}
	p.in.closeWrite(ErrStreamReset)
	p.forget()
}

// end ends the connection from the edge's side (its full close, the
// session's end): the pump's reads fail, its writes stop, and nothing more
// goes to the edge.
func (p *agentTCP) end(err error) {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.in.closeWrite(err)
	p.forget()
}

// forget removes the connection from the session.
func (p *agentTCP) forget() {
	p.once.Do(func() {
		p.a.mu.Lock()
		delete(p.a.tcp, p.id)
		p.a.mu.Unlock()
		close(p.done)
	})
}

// handleTCP applies a tcp_data, tcp_close or window_update {connection_id}
// from the edge. Frames for a connection that ended here are dropped.
func (a *agentSession) handleTCP(f *wire.Frame) {
	a.mu.Lock()
	p := a.tcp[f.ConnectionID]
	a.mu.Unlock()
	if p == nil {
		return
	}
	switch f.Type {
	case wire.TypeTCPData:
		window := a.cfg.has(wire.FeatureWindow)
		if _, err := p.in.write(f.Data, !window, p.done); errors.Is(err, ErrFlowControl) {
			a.conn.frameError("flow_control", fmt.Errorf("connection %q: edge sent past its window", f.ConnectionID))
			p.reset("flow control")
		}
	case wire.TypeTCPClose:
		if f.Reason == wire.ReasonEOF && a.cfg.has(wire.FeatureTCPHalfClose) {
			p.mu.Lock()
			dup := p.gotEOF
			p.gotEOF = true
			p.mu.Unlock()
			if dup {
				a.conn.frameError("duplicate_close", fmt.Errorf("second tcp_close for connection %q", f.ConnectionID))
				return
			}
			p.in.closeWrite(io.EOF)
			return
		}
		p.end(ErrStreamReset)
	case wire.TypeWindowUpdate:
		if f.Bytes > 0 {
			p.credit.add(f.Bytes)
		}
	}
}
