package e2e

// End-to-end tests of UDP tunnels: a real "sluice edge --tcp-ports" (whose
// range UDP tunnels share) and "sluice udp", a real DNS server (dnsmasq)
// queried with dig, and a UDP echo server of the test's own.

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testtool"
)

var forwardingUDP = regexp.MustCompile(`Forwarding udp://([^:\s]+):(\d+) -> (\S+)\n`)

// startUDPAgent runs "sluice udp LOCAL" at edge e (the embedded edge when
// e is nil); it returns the process and the public address.
func startUDPAgent(t *testing.T, e *edgeProc, proto, name, token, local string, extra ...string) (*proc, string) {
	t.Helper()
	return startPortAgent(t, "udp", forwardingUDP, e, proto, name, token, local, extra...)
}

// udpEcho runs a UDP echo server on loopback: each datagram goes back to
// its sender as it came.
func udpEcho(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], addr)
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
	return pc.LocalAddr().String()
}

// exchange sends b from c and waits for its echo, resending on loss (UDP
// may drop on a busy machine); the echo must be b, whole.
func exchange(t *testing.T, c *net.UDPConn, b []byte) {
	t.Helper()
	buf := make([]byte, 65536)
	for try := 0; ; try++ {
		if _, err := c.Write(b); err != nil {
			t.Fatalf("write %d bytes: %v", len(b), err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		if err == nil {
			if !bytes.Equal(buf[:n], b) {
				t.Fatalf("sent %d bytes, got %d back, not the same", len(b), n)
			}
			return
		}
		if try == 5 {
			t.Fatalf("no echo of %d bytes after %d tries: %v", len(b), try+1, err)
		}
	}
}

// TestUDPEcho: 1,000 datagrams of 1 to 60,000 bytes come back whole, and
// two client addresses (127.0.0.2, 127.0.0.3) get their own replies.
func TestUDPEcho(t *testing.T) { forProtocols(t, testUDPEcho) }

func testUDPEcho(t *testing.T, proto string) {
	e, _, _ := startTCPEdge(t, "tok")
	_, public := startUDPAgent(t, e, proto, "echo", "tok", udpEcho(t))
	raddr, _ := net.ResolveUDPAddr("udp", public)
	dial := func(ip string) *net.UDPConn {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)}, raddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c := dial("127.0.0.1")
	for i := range 1000 {
		size := 1 + (i*7919)%60000
		if i%100 == 0 {
			size = 60000
		}
		b := bytes.Repeat(fmt.Appendf(nil, "%d.", i), size/2+1)[:size]
		exchange(t, c, b)
	}
	var wg sync.WaitGroup
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		c := dial(ip)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				exchange(t, c, fmt.Appendf(nil, "from %s #%d", ip, i))
			}
		}()
	}
	wg.Wait()
}

// freeDNSPort returns a loopback port free a moment ago for both UDP and
// TCP (a DNS server listens on both).
func freeDNSPort(t *testing.T) string {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		pc, err := net.ListenPacket("udp", "127.0.0.1:"+port)
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no port free for both UDP and TCP")
	return ""
}

// TestUDPDig: dig asks a real DNS server (dnsmasq on a loopback port)
// through the tunnel.
func TestUDPDig(t *testing.T) { forProtocols(t, testUDPDig) }

func testUDPDig(t *testing.T, proto string) {
	dnsmasq := testtool.Need(t, "dnsmasq", "dnsmasq")
	dig := testtool.Need(t, "dig", "bind9-dnsutils")
	port := freeDNSPort(t)
	cmd := exec.Command(dnsmasq, "-d", "-C", "/dev/null", "-p", port, "--listen-address=127.0.0.1", "--bind-interfaces",
		"--no-resolv", "--address=/test.example/192.0.2.7")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	e, _, _ := startTCPEdge(t, "tok")
	_, public := startUDPAgent(t, e, proto, "dns", "tok", "127.0.0.1:"+port)
	host, pport, _ := net.SplitHostPort(public)
	var out []byte
	var err error
	for try := 0; try < 10; try++ { // dnsmasq may still be starting
		out, err = exec.Command(dig, "@"+host, "-p", pport, "test.example", "+short", "+time=5", "+tries=2").CombinedOutput()
		if err == nil && strings.TrimSpace(string(out)) == "192.0.2.7" {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("dig through the tunnel: %v\n%s\ndnsmasq: %s", err, out, stderr.String())
}
