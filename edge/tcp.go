package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"

	"github.com/sluicehq/sluice/tunnel"
	"github.com/sluicehq/sluice/wire"
)

// portRefusal is the agent's answer for a port the pool did not give, for
// a tunnel of typ (wire.TunnelTCP or wire.TunnelUDP): the code and the
// flag of that kind of port.
func portRefusal(err error, typ string, asked int, rng PortRange) error {
	refuse := func(code, msg string) error { return &tunnel.RegisterError{Code: code, Message: msg} }
	kind, flag, none := "TCP", "--tcp-ports LOW-HIGH", wire.CodeNoTCPPorts
	if typ == wire.TunnelUDP {
		kind, flag, none = "UDP", "--udp-ports LOW-HIGH (or --tcp-ports, whose range UDP shares by default)", wire.CodeNoUDPPorts
	}
	var reserved *portReservedError
	switch {
	case errors.As(err, &reserved):
		return refuse(wire.CodePortUnavailable, fmt.Sprintf("%s port %d is reserved for stored tunnel %q (kept for its agent, online or not); ask for another, or for any", kind, asked, reserved.tunnel))
	case errors.Is(err, errNoTCP):
		return refuse(none, fmt.Sprintf("this edge serves no %s tunnels (its operator can start it with %s)", kind, flag))
	case errors.Is(err, errNoFreePort):
		return refuse(none, fmt.Sprintf("every port of this edge's %s range %v is taken", kind, rng))
	case errors.Is(err, errPortOutOfRange):
		return refuse(wire.CodePortUnavailable, fmt.Sprintf("port %d is outside this edge's %s port range %v", asked, kind, rng))
	default:
		return refuse(wire.CodePortUnavailable, fmt.Sprintf("%s port %d is in use at this edge", kind, asked))
	}
}

// publicPorts is the table of the public ports TCP tunnels hold, by
// number, owned by one mutex (which also guards each publicPort's refs
// and current). A port belongs to a tunnel name: a registration of the
// same name that would replace the session holding it (registry.mayClaim:
// an agent reconnecting before the edge saw its old connection die) takes
// the port over instead of being refused; another tunnel asking for it is
// refused.
type publicPorts struct {
	mu    sync.Mutex
	ports map[int]*publicPort
}

// publicPort is one listening public port. Its accept loop (started by
// the first serve) hands each connection to the tcpPort of the session
// that holds the port now (current); refs counts the tcpPorts using it,
// and the last to close closes the listener.
type publicPort struct {
	ln      net.Listener
	port    int
	name    string
	refs    int
	current *tcpPort
	started bool
	wg      sync.WaitGroup // the accept loop
}

// tcpPort is the public port of one TCP tunnel's session: the edge
// accepts connections on it while the session holds it, each carried to
// the agent as a stream (tunnel.Session.OpenTCP). close stops using the
// port, gives it back to the pool when no session of the tunnel uses it
// any more, and waits for the session's connections, which end with the
// session.
type tcpPort struct {
	s       *Server
	name    string
	pub     *publicPort
	url     string // tcp://HOST:PORT
	log     *slog.Logger
	session tunnel.Session
	wg      sync.WaitGroup // the connections
	once    sync.Once

	mu     sync.Mutex // guards conns and closed
	conns  map[*net.TCPConn]struct{}
	closed bool
}

// listenTCP gives registration reg a public port, or the refusal to send:
// the port it asks for (a new listener, or the one of the session of the
// same tunnel it replaces) or one from the pool, never one of reserved
// (reservedPorts).
func (s *Server) listenTCP(reg *tunnel.Registration, name string, owner bool, reserved map[int]string, log *slog.Logger) (*tcpPort, error) {
	t := &s.ports
	t.mu.Lock()
	defer t.mu.Unlock()
	pub := t.ports[reg.RemotePort]
	if reg.RemotePort == 0 || pub == nil || pub.name != name || !s.registry.mayClaim(name, reg.Token, owner) {
		ln, port, err := s.tcp.listen(reg.RemotePort, reserved)
		if err != nil {
			s.metrics.agentConns.WithLabelValues("no_port").Inc()
			return nil, portRefusal(err, wire.TunnelTCP, reg.RemotePort, s.cfg.TCPPorts)
		}
		pub = &publicPort{ln: ln, port: port, name: name}
		if t.ports == nil {
			t.ports = map[int]*publicPort{}
		}
		t.ports[port] = pub
	}
	pub.refs++
	return &tcpPort{s: s, name: name, pub: pub, url: s.portURL(wire.TunnelTCP, pub.port), log: log}, nil
}

// reservedPorts returns the ports of kind typ (wire.TunnelTCP or
// wire.TunnelUDP) that the store's tunnels other than name have (their
// remote ports), each to its tunnel's name: no other tunnel gets them,
// so that a stored tunnel's port waits for its agent while it is offline.
// Without a store, none.
func (s *Server) reservedPorts(ctx context.Context, typ, name string) (map[int]string, error) {
	if s.cfg.Store == nil {
		return nil, nil
	}
	ports, err := s.cfg.Store.RemotePorts(ctx, typ)
	if err != nil {
		return nil, fmt.Errorf("edge: reserved ports: %w", err)
	}
	for port, owner := range ports {
		if owner == name {
			delete(ports, port)
		}
	}
	return ports, nil
}

// portURL is the public URL of the port of a tunnel of typ
// (wire.TunnelTCP or wire.TunnelUDP): tcp://HOST:PORT or udp://HOST:PORT.
func (s *Server) portURL(typ string, port int) string {
	return typ + "://" + net.JoinHostPort(s.cfg.TCPHost, strconv.Itoa(port))
}

// serve makes p the holder of its port, for session: the port's
// connections go to it from now on.
func (p *tcpPort) serve(session tunnel.Session) {
	p.session = session
	t := &p.s.ports
	t.mu.Lock()
	defer t.mu.Unlock()
	pub := p.pub
	pub.current = p
	if pub.started {
		return
	}
	pub.started = true
	pub.wg.Add(1)
	go func() {
		defer pub.wg.Done()
		for {
			c, err := pub.ln.Accept()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				return // closed
			}
			tc := c.(*net.TCPConn)
			t.mu.Lock()
			cur := pub.current
			t.mu.Unlock()
			if cur == nil || !cur.track(tc) {
				reset(tc)
				continue
			}
			go func() {
				defer cur.untrack(tc)
				cur.serveConn(tc)
			}()
		}
	}()
}

// close stops taking connections, gives the port back when no other
// session of the tunnel took it over, resets the connections still open
// (their session is gone: none is complete) and waits for them. It is
// idempotent.
func (p *tcpPort) close() {
	p.once.Do(func() {
		t := &p.s.ports
		t.mu.Lock()
		pub := p.pub
		if pub.current == p {
			pub.current = nil
		}
		pub.refs--
		last := pub.refs == 0
		if last {
			delete(t.ports, pub.port)
		}
		t.mu.Unlock()
		if last {
			pub.ln.Close()
			pub.wg.Wait()
		}
		p.mu.Lock()
		p.closed = true
		for c := range p.conns {
			reset(c)
		}
		p.mu.Unlock()
	})
	p.wg.Wait()
}

// track adds c to p's connections (counted in p.wg), unless p is closed.
func (p *tcpPort) track(c *net.TCPConn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	if p.conns == nil {
		p.conns = map[*net.TCPConn]struct{}{}
	}
	p.conns[c] = struct{}{}
	p.wg.Add(1)
	return true
}

func (p *tcpPort) untrack(c *net.TCPConn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	p.wg.Done()
}

// serveConn carries one public connection: the tunnel's visitor rules
// and the per-address stream limit apply, then a stream to the agent
// with bytes copied both ways.
func (p *tcpPort) serveConn(c *net.TCPConn) {
	s := p.s
	m := s.metrics
	ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	refuse := func(result string) {
		m.conns.WithLabelValues(wire.TunnelTCP, result).Inc()
		c.Close()
	}
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	release, refused := s.admitPorted(ctx, wire.TunnelTCP, p.name, p.session, ip, p.log)
	if refused != "" {
		refuse(refused)
		return
	}
	defer release()
	st, err := p.session.OpenTCP(ctx, c.RemoteAddr().String())
	if err != nil {
		p.log.Debug("public connection not carried", "visitor", ip, "err", err)
		m.conns.WithLabelValues(wire.TunnelTCP, "open_failed").Inc()
		reset(c)
		return
	}
	m.conns.WithLabelValues(wire.TunnelTCP, "ok").Inc()
	open := m.openConns.WithLabelValues(wire.TunnelTCP)
	open.Inc()
	defer open.Dec()
	pipe(c, st, &s.buffers, m.tcpBytesIn, m.tcpBytesOut)
}

// admitPorted decides on a public connection (a UDP session) of kind
// wire.TunnelTCP or TunnelUDP from ip to tunnel name, served by session:
// the tunnel must still be that session's (not replaced, not ended by an
// admin), its visitor rules must let ip in, and ip must be under its
// limit of streams in flight. It returns the release of that count, or
// the result to count the refusal under.
func (s *Server) admitPorted(ctx context.Context, kind, name string, session tunnel.Session, ip string, log *slog.Logger) (release func(), refused string) {
	e := s.registry.lookup(name)
	if e == nil || e.session != session {
		return nil, "not_allowed"
	}
	rules, err := s.visitorRules(ctx, name, e)
	if err != nil {
		return nil, "store_error"
	}
	if rules != nil && (!rules.enabled || !rules.allows(ip)) {
		s.cfg.Session.LogLimiter.Log(log, slog.LevelInfo, kind+":not_allowed", "public "+kind+" traffic refused by the tunnel's visitor rules", "visitor", ip)
		return nil, "not_allowed"
	}
	if !s.perIP.acquire(ip, s.cfg.MaxStreamsPerIP) {
		s.metrics.limited.WithLabelValues("streams_per_ip").Inc()
		return nil, "streams_per_ip"
	}
	return func() { s.perIP.release(ip) }, ""
}

// counter is the part of prometheus.Counter pipe needs.
type counter interface{ Add(float64) }

// pipe copies c to st and st to c, with their half-closes, until both
// ways are done, through buffers of pool. A stream that fails (the agent
// reset it, its local connection failed, the session died) resets c: the
// visitor never takes a broken connection for a complete one. A
// connection that fails closes st, which tells the agent.
func pipe(c *net.TCPConn, st tunnel.Stream, pool *tunnel.BufferPool, in, out counter) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // visitor -> agent
		defer wg.Done()
		buf := pool.Get()
		defer pool.Put(buf)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := st.Write(buf[:n]); werr != nil {
					reset(c)
					return
				}
				in.Add(float64(n))
			}
			if errors.Is(err, io.EOF) {
				st.CloseWrite()
				return
			}
			if err != nil {
				st.Close()
				return
			}
		}
	}()
	buf := pool.Get()
	defer pool.Put(buf)
	for { // agent -> visitor
		n, err := st.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				st.Close()
				break
			}
			out.Add(float64(n))
		}
		if errors.Is(err, io.EOF) {
			c.CloseWrite()
			break
		}
		if err != nil {
			reset(c)
			st.Close()
			break
		}
	}
	wg.Wait()
	st.Close()
	c.Close()
}

// reset ends c with a TCP reset, not a clean close.
func reset(c *net.TCPConn) {
	c.SetLinger(0)
	c.Close()
}
