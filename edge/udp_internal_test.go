package edge

import (
	"net"
	"testing"
)

// A failed write toward a visitor is counted as oversized_datagram only
// when the datagram was too large; other failures have a kind of their
// own, and a closed port none. The errors are real ones, of a real socket.
func TestWriteFailure(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	local := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
	for _, c := range []struct {
		what string
		b    []byte
		to   net.Addr
		want string
	}{
		{"65,520 bytes toward IPv4", make([]byte, 65520), local, "oversized_datagram"},
		{"a loopback socket toward another network", []byte("x"), &net.UDPAddr{IP: net.IPv4(10, 255, 255, 1), Port: 9}, "udp_write_failed"},
		{"an IPv6 address from an IPv4 socket", []byte("x"), &net.UDPAddr{IP: net.IPv6loopback, Port: 9}, "udp_write_failed"},
	} {
		_, err := pc.WriteTo(c.b, c.to)
		if err == nil {
			t.Fatalf("%s: the write did not fail", c.what)
		}
		if got := writeFailure(err); got != c.want {
			t.Errorf("%s (%v): counted as %q, want %q", c.what, err, got, c.want)
		}
	}
	pc.Close()
	_, err = pc.WriteTo([]byte("x"), local)
	if got := writeFailure(err); err == nil || got != "" {
		t.Errorf("a closed socket (%v): counted as %q, want nothing", err, got)
	}
}
