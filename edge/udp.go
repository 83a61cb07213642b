package edge

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/tunnel"
	"github.com/sluicehq/sluice/wire"
)

const (
	// maxUDPSessions bounds the remote addresses a UDP tunnel serves at
	// once; datagrams from further ones are dropped (counted).
	maxUDPSessions = 1024
	// udpSessionQueue bounds the datagrams waiting for one session's
	// opening or its agent; past it they are dropped (counted), as a full
	// socket buffer drops them.
	udpSessionQueue = 64
)

// udpPort is the public port of one UDP tunnel's session: datagrams from
// each remote address form a session (tunnel.Session.OpenUDP) that ends
// after Config.UDPIdleTimeout without a datagram either way; replies go
// back to that address. One mutex guards the sessions.
type udpPort struct {
	s       *Server
	name    string
	pc      net.PacketConn
	url     string // udp://HOST:PORT
	log     *slog.Logger
	session tunnel.Session
	wg      sync.WaitGroup
	once    sync.Once

	mu       sync.Mutex
	sessions map[string]*udpSession
	closed   bool
}

// udpSession is one remote address's session at the edge.
type udpSession struct {
	addr net.Addr
	q    chan []byte
	done chan struct{}
	once sync.Once
}

func (u *udpSession) end() { u.once.Do(func() { close(u.done) }) }

// listenUDP gives registration reg a public UDP port, never one of
// reserved (reservedPorts), or the refusal.
func (s *Server) listenUDP(reg *tunnel.Registration, name string, reserved map[int]string, log *slog.Logger) (*udpPort, error) {
	pc, port, err := s.udp.listenPacket(reg.RemotePort, reserved)
	if err != nil {
		s.metrics.agentConns.WithLabelValues("no_port").Inc()
		return nil, portRefusal(err, wire.TunnelUDP, reg.RemotePort, s.udp.rng)
	}
	return &udpPort{s: s, name: name, pc: pc, url: s.portURL(wire.TunnelUDP, port), log: log, sessions: map[string]*udpSession{}}, nil
}

// serve reads datagrams for session until close.
func (p *udpPort) serve(session tunnel.Session) {
	p.session = session
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		buf := make([]byte, tunnel.MaxDatagram+1)
		for {
			n, addr, err := p.pc.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			p.route(addr, append([]byte(nil), buf[:n]...))
		}
	}()
}

// route queues b for addr's session, starting one for a new address.
func (p *udpPort) route(addr net.Addr, b []byte) {
	m := p.s.metrics
	key := addr.String()
	p.mu.Lock()
	u := p.sessions[key]
	if u == nil {
		if p.closed {
			p.mu.Unlock()
			return
		}
		if len(p.sessions) >= maxUDPSessions {
			p.mu.Unlock()
			m.limited.WithLabelValues("udp_sessions").Inc()
			return
		}
		u = &udpSession{addr: addr, q: make(chan []byte, udpSessionQueue), done: make(chan struct{})}
		p.sessions[key] = u
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serveSession(u)
			p.mu.Lock()
			delete(p.sessions, key)
			p.mu.Unlock()
		}()
	}
	p.mu.Unlock()
	select {
	case u.q <- b:
	default:
		m.frameErrors.WithLabelValues("udp_dropped").Inc()
	}
}

// close stops reading, gives the port back, ends the sessions and waits
// for them. It is idempotent.
func (p *udpPort) close() {
	p.once.Do(func() {
		p.pc.Close()
		p.mu.Lock()
		p.closed = true
		for _, u := range p.sessions {
			u.end()
		}
		p.mu.Unlock()
	})
	p.wg.Wait()
}

// serveSession carries one remote address's session: the tunnel's
// visitor rules and the per-address limit apply, then datagrams go both
// ways until it is idle, the agent ends it, or the port closes.
func (p *udpPort) serveSession(u *udpSession) {
	s := p.s
	m := s.metrics
	ip, _, _ := net.SplitHostPort(u.addr.String())
	refuse := func(result string) { m.conns.WithLabelValues(wire.TunnelUDP, result).Inc() }
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, u.end)
	defer stop()
	release, refused := s.admitPorted(ctx, wire.TunnelUDP, p.name, p.session, ip, p.log)
	if refused != "" {
		refuse(refused)
		return
	}
	defer release()
	d, err := p.session.OpenUDP(ctx, u.addr.String())
	if err != nil {
		p.log.Debug("public datagrams not carried", "visitor", ip, "err", err)
		refuse("open_failed")
		return
	}
	defer d.Close()
	m.conns.WithLabelValues(wire.TunnelUDP, "ok").Inc()
	open := m.openConns.WithLabelValues(wire.TunnelUDP)
	open.Inc()
	defer open.Dec()
	in, out := m.connBytes.WithLabelValues(wire.TunnelUDP, "in"), m.connBytes.WithLabelValues(wire.TunnelUDP, "out")
	idle := s.cfg.UDPIdleTimeout
	t := time.AfterFunc(idle, u.end)
	defer t.Stop()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // agent -> visitor
		defer wg.Done()
		defer u.end()
		buf := make([]byte, tunnel.MaxDatagram)
		for {
			n, err := d.ReadDatagram(buf)
			if err != nil {
				return
			}
			t.Reset(idle)
			if _, err := p.pc.WriteTo(buf[:n], u.addr); err != nil {
				kind := writeFailure(err)
				if kind == "" {
					return
				}
				m.frameErrors.WithLabelValues(kind).Inc()
				continue
			}
			out.Add(float64(n))
		}
	}()
	for { // visitor -> agent
		select {
		case b := <-u.q:
			t.Reset(idle)
			if len(b) > tunnel.MaxDatagram {
				m.frameErrors.WithLabelValues("oversized_datagram").Inc()
				continue
			}
			if err := d.WriteDatagram(b); err != nil {
				u.end()
				continue
			}
			in.Add(float64(len(b)))
			continue
		case <-u.done:
		}
		break
	}
	d.Close()
	wg.Wait()
}

// writeFailure is the kind a failed write of a datagram toward a visitor
// is counted under (sluice_frame_errors_total): oversized_datagram when it
// is too large for the socket (EMSGSIZE: above 65,507 bytes toward an IPv4
// address), udp_write_failed for any other failure; "" when the port is
// closing (nothing to count).
func writeFailure(err error) string {
	switch {
	case errors.Is(err, net.ErrClosed):
		return ""
	case errors.Is(err, syscall.EMSGSIZE):
		return "oversized_datagram"
	}
	return "udp_write_failed"
}
