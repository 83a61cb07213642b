package edge

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
)

// PortRange is a range of public TCP ports, LOW-HIGH inclusive (sluice
// edge --tcp-ports). The zero PortRange is empty.
type PortRange struct {
	Low, High int
}

// ParsePortRange parses "LOW-HIGH" (or a single "PORT"), ports 1 to 65535
// with LOW <= HIGH.
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		hi = lo
	}
	l, err1 := strconv.Atoi(strings.TrimSpace(lo))
	h, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if err1 != nil || err2 != nil {
		return PortRange{}, fmt.Errorf("edge: port range %q is not LOW-HIGH, such as 20000-20099", s)
	}
	r := PortRange{Low: l, High: h}
	if err := r.validate(); err != nil {
		return PortRange{}, err
	}
	return r, nil
}

func (r PortRange) validate() error {
	switch {
	case r == PortRange{}:
		return nil
	case r.Low < 1 || r.High > 65535:
		return fmt.Errorf("edge: port range %v: ports go from 1 to 65535", r)
	case r.Low > r.High:
		return fmt.Errorf("edge: port range %v: LOW is above HIGH", r)
	}
	return nil
}

// Empty reports whether r has no port.
func (r PortRange) Empty() bool { return r == PortRange{} }

// Contains reports whether port is in r.
func (r PortRange) Contains(port int) bool { return port >= r.Low && port <= r.High && port > 0 }

func (r PortRange) String() string { return strconv.Itoa(r.Low) + "-" + strconv.Itoa(r.High) }

// Errors of the port pool, refused to the agent with wire.CodePortUnavailable
// or wire.CodeNoTCPPorts / CodeNoUDPPorts (portRefusal).
var (
	errNoTCP          = errors.New("edge: this edge serves no TCP tunnels (start it with --tcp-ports LOW-HIGH)")
	errPortOutOfRange = errors.New("edge: the port asked for is outside this edge's TCP port range")
	errPortInUse      = errors.New("edge: the port asked for is in use")
	errNoFreePort     = errors.New("edge: no free port left in this edge's TCP port range")
)

// portReservedError is the pool's refusal of a port that a stored tunnel
// of the store names (another tunnel than the one asking): the port is
// kept for that tunnel's agent, online or not.
type portReservedError struct {
	port   int
	tunnel string
}

func (e *portReservedError) Error() string {
	return fmt.Sprintf("edge: port %d is reserved for stored tunnel %q", e.port, e.tunnel)
}

// portPool hands out the public ports of TCP tunnels, listening on each:
// a port is held from listen until its listener's release. One mutex owns
// the set of ports held. Its size is bounded by the range (or, with any,
// by the ports the system gives).
type portPool struct {
	host  string    // the address listeners bind ("" for all)
	rng   PortRange // the ports given out
	any   bool      // any free port (the embedded edge), rng unused
	mu    sync.Mutex
	inUse map[int]bool
}

// listen returns a TCP listener on port (0: any free port of the pool
// but those of reserved), or why not: errNoTCP, errPortOutOfRange,
// errPortInUse, errNoFreePort, a *portReservedError. reserved maps the
// ports kept for stored tunnels (other than the one asking) to their names.
func (p *portPool) listen(port int, reserved map[int]string) (net.Listener, int, error) {
	c, port, err := p.take(port, reserved, func(addr string) (io.Closer, int, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, 0, err
		}
		return ln, ln.Addr().(*net.TCPAddr).Port, nil
	})
	if err != nil {
		return nil, 0, err
	}
	return &poolListener{Listener: c.(net.Listener), pool: p, port: port}, port, nil
}

// listenPacket returns a UDP socket on port, as listen does a listener.
func (p *portPool) listenPacket(port int, reserved map[int]string) (net.PacketConn, int, error) {
	c, port, err := p.take(port, reserved, func(addr string) (io.Closer, int, error) {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, 0, err
		}
		return pc, pc.LocalAddr().(*net.UDPAddr).Port, nil
	})
	if err != nil {
		return nil, 0, err
	}
	return &poolPacketConn{PacketConn: c.(net.PacketConn), pool: p, port: port}, port, nil
}

// take binds port (0: any free port of the pool not in reserved) with
// bind, holding it. A pool of any port (the embedded edge, which has no
// store) leaves the choice to the system, reserved aside.
func (p *portPool) take(port int, reserved map[int]string, bind func(addr string) (io.Closer, int, error)) (io.Closer, int, error) {
	switch {
	case !p.any && p.rng.Empty():
		return nil, 0, errNoTCP
	case port < 0 || port > 65535 || port != 0 && !p.any && !p.rng.Contains(port):
		return nil, 0, errPortOutOfRange
	case port != 0 && reserved[port] != "":
		return nil, 0, &portReservedError{port: port, tunnel: reserved[port]}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inUse == nil {
		p.inUse = map[int]bool{}
	}
	try := func(port int) (io.Closer, int, error) {
		if port != 0 && p.inUse[port] {
			return nil, 0, errPortInUse
		}
		c, port, err := bind(net.JoinHostPort(p.host, strconv.Itoa(port)))
		if err != nil {
			return nil, 0, fmt.Errorf("%w: %w", errPortInUse, err)
		}
		p.inUse[port] = true
		return c, port, nil
	}
	if port != 0 || p.any {
		return try(port)
	}
	// Any port of the range: from a random one on, so that a port
	// just given back is not the next one given out.
	n := p.rng.High - p.rng.Low + 1
	start := rand.IntN(n)
	for i := range n {
		port := p.rng.Low + (start+i)%n
		if p.inUse[port] || reserved[port] != "" {
			continue
		}
		if c, port, err := try(port); err == nil {
			return c, port, nil
		}
	}
	return nil, 0, errNoFreePort
}

func (p *portPool) release(port int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.inUse, port)
}

// held is how many ports are given out.
func (p *portPool) held() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.inUse)
}

// poolListener gives its port back to the pool when closed (once).
type poolListener struct {
	net.Listener
	pool *portPool
	port int
	once sync.Once
}

func (l *poolListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { l.pool.release(l.port) })
	return err
}

// poolPacketConn gives its port back to the pool when closed (once).
type poolPacketConn struct {
	net.PacketConn
	pool *portPool
	port int
	once sync.Once
}

func (c *poolPacketConn) Close() error {
	err := c.PacketConn.Close()
	c.once.Do(func() { c.pool.release(c.port) })
	return err
}
