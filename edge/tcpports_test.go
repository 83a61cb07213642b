package edge

import (
	"errors"
	"net"
	"os"
	"strconv"
	"testing"
)

func TestParsePortRange(t *testing.T) {
	for _, c := range []struct {
		in   string
		want PortRange
		ok   bool
	}{
		{"20000-20099", PortRange{20000, 20099}, true},
		{"5432", PortRange{5432, 5432}, true},
		{" 1 - 65535 ", PortRange{1, 65535}, true},
		{"20099-20000", PortRange{}, false},
		{"0-10", PortRange{}, false},
		{"1-65536", PortRange{}, false},
		{"a-b", PortRange{}, false},
		{"", PortRange{}, false},
		{"10-", PortRange{}, false},
	} {
		t.Run(c.in, func(t *testing.T) {
			got, err := ParsePortRange(c.in)
			if (err == nil) != c.ok || got != c.want {
				t.Fatalf("ParsePortRange(%q) = %v, %v; want %v, ok %v", c.in, got, err, c.want, c.ok)
			}
		})
	}
}

// freeRange returns a range of n loopback ports free at the moment,
// below the kernel's ephemeral ports (32768 and up on Linux: outgoing
// connections of the tests beside take them) and apart from the external
// tests' (20000-32000).
func freeRange(t *testing.T, n int) PortRange {
	t.Helper()
	for base := 10000 + os.Getpid()%5000; base < 20000-n; base += n {
		free := true
		for p := base; p < base+n && free; p++ {
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				free = false
				continue
			}
			ln.Close()
		}
		if free {
			return PortRange{base, base + n - 1}
		}
	}
	t.Fatal("no free port range")
	return PortRange{}
}

func TestPortPool(t *testing.T) {
	r := freeRange(t, 3)
	p := &portPool{host: "127.0.0.1", rng: r}
	if _, _, err := p.listen(r.High+1, nil); !errors.Is(err, errPortOutOfRange) {
		t.Fatalf("out of range: %v", err)
	}
	ln, port, err := p.listen(r.Low, nil)
	if err != nil || port != r.Low {
		t.Fatalf("requested port: %d, %v", port, err)
	}
	if _, _, err := p.listen(r.Low, nil); !errors.Is(err, errPortInUse) {
		t.Fatalf("same port twice: %v", err)
	}
	var lns []net.Listener
	seen := map[int]bool{r.Low: true}
	for range 2 {
		l, port, err := p.listen(0, nil)
		if err != nil || !r.Contains(port) || seen[port] {
			t.Fatalf("any port: %d, %v (seen %v)", port, err, seen)
		}
		seen[port] = true
		lns = append(lns, l)
	}
	if _, _, err := p.listen(0, nil); !errors.Is(err, errNoFreePort) {
		t.Fatalf("range full: %v", err)
	}
	ln.Close()
	ln.Close() // idempotent: the port is given back once
	if p.held() != 2 {
		t.Fatalf("held %d ports after a release, want 2", p.held())
	}
	l, port, err := p.listen(0, nil)
	if err != nil || port != r.Low {
		t.Fatalf("port given back: %d, %v", port, err)
	}
	l.Close()
	for _, l := range lns {
		l.Close()
	}
	if p.held() != 0 {
		t.Fatalf("held %d ports, want 0", p.held())
	}
	if _, _, err := (&portPool{}).listen(0, nil); !errors.Is(err, errNoTCP) {
		t.Fatalf("no range: %v", err)
	}
	// A port of the range that another program holds is skipped.
	busy, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(r.Low))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if _, _, err := p.listen(r.Low, nil); !errors.Is(err, errPortInUse) {
		t.Fatalf("port held elsewhere: %v", err)
	}
	busy.Close()
	// A port reserved for a stored tunnel is refused when asked for, and
	// never given as any port; UDP sockets likewise.
	reserved := map[int]string{r.Low: "db"}
	var re *portReservedError
	if _, _, err := p.listen(r.Low, reserved); !errors.As(err, &re) || re.tunnel != "db" || re.port != r.Low {
		t.Fatalf("a reserved port: %v", err)
	}
	if _, _, err := p.listenPacket(r.Low, reserved); !errors.As(err, &re) {
		t.Fatalf("a reserved UDP port: %v", err)
	}
	lns = lns[:0]
	for range 2 {
		l, port, err := p.listen(0, reserved)
		if err != nil || port == r.Low {
			t.Fatalf("any port beside a reserved one: %d, %v", port, err)
		}
		lns = append(lns, l)
	}
	if _, _, err := p.listen(0, reserved); !errors.Is(err, errNoFreePort) {
		t.Fatalf("the range full but its reserved port: %v", err)
	}
	for _, l := range lns {
		l.Close()
	}
	udp := &portPool{host: "127.0.0.1", rng: PortRange{r.Low, r.Low + 1}}
	pc, port, err := udp.listenPacket(0, reserved)
	if err != nil || port != r.Low+1 {
		t.Fatalf("any UDP port beside a reserved one: %d, %v", port, err)
	}
	if _, _, err := udp.listenPacket(0, reserved); !errors.Is(err, errNoFreePort) {
		t.Fatalf("the UDP range full but its reserved port: %v", err)
	}
	pc.Close()
	anyp := &portPool{host: "127.0.0.1", any: true}
	l, port, err = anyp.listen(0, nil)
	if err != nil || port == 0 {
		t.Fatalf("any pool: %d, %v", port, err)
	}
	l.Close()
}
