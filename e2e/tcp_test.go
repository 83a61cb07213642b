package e2e

// End-to-end tests of TCP tunnels: a real "sluice edge --tcp-ports" and
// "sluice tcp" (child processes), local TCP servers in this process or
// real ones (PostgreSQL, sshd), and real clients (psql, ssh, net.Dial).

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testtool"
)

// tcpRange returns a range of n loopback ports that were free a moment
// ago, as LOW-HIGH, for an edge's --tcp-ports.
func tcpRange(t *testing.T, n int) (low, high int) {
	t.Helper()
	for range 200 {
		base := 30000 + rand.IntN(25000)
		free := true
		for p := base; p < base+n && free; p++ {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				free = false
				break
			}
			ln.Close()
		}
		if free {
			return base, base + n - 1
		}
	}
	t.Fatal("no free port range")
	return 0, 0
}

// startTCPEdge starts an edge with a --tcp-ports range of its own.
func startTCPEdge(t *testing.T, token string) (e *edgeProc, low, high int) {
	t.Helper()
	low, high = tcpRange(t, 8)
	return startEdge(t, token, "--tcp-ports", fmt.Sprintf("%d-%d", low, high)), low, high
}

var forwardingTCP = regexp.MustCompile(`Forwarding tcp://([^:\s]+):(\d+) -> (\S+)\n`)

// startTCPAgent runs "sluice tcp LOCAL" at edge e (the embedded edge when
// e is nil) and waits for its Forwarding line; it returns the process and
// the public address to dial.
func startTCPAgent(t *testing.T, e *edgeProc, proto, name, token, local string, extra ...string) (*proc, string) {
	t.Helper()
	return startPortAgent(t, "tcp", forwardingTCP, e, proto, name, token, local, extra...)
}

// startPortAgent runs "sluice KIND LOCAL" (tcp or udp) as startTCPAgent
// does; forwarding matches its line.
func startPortAgent(t *testing.T, kind string, forwarding *regexp.Regexp, e *edgeProc, proto, name, token, local string, extra ...string) (*proc, string) {
	t.Helper()
	args := []string{kind, local, "--name", name, "--protocol", proto}
	if e != nil {
		args = append(args, "--edge", "http://"+e.addr, "--token", token)
	}
	p := startProc(t, kind+" agent "+name, append(args, extra...)...)
	if !p.waitOutput(p.stdout, "Forwarding "+kind+"://", 15*time.Second) || !p.waitOutput(p.stdout, "\n", time.Second) {
		t.Fatalf("%s agent %s printed no Forwarding line (exited: %v, %v)\nstdout: %s\nstderr: %s", kind, name, p.exited(), p.err, p.stdout, p.stderr)
	}
	m := forwarding.FindStringSubmatch(p.stdout.String())
	if m == nil || m[3] != local {
		t.Fatalf("%s agent %s: Forwarding line %q is not %s://HOST:PORT -> %s", kind, name, p.stdout, kind, local)
	}
	want := "localhost"
	if e == nil {
		want = "127.0.0.1"
	}
	if m[1] != want {
		t.Fatalf("public host %q, want %q", m[1], want)
	}
	return p, "127.0.0.1:" + m[2]
}

// localServer listens on loopback and runs serve for each connection.
func localServer(t *testing.T, serve func(c *net.TCPConn)) (addr string, accepted func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	n := 0
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			n++
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c.(*net.TCPConn))
			}()
		}
	}()
	return ln.Addr().String(), func() int { mu.Lock(); defer mu.Unlock(); return n }
}

func dialTCP(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(2 * time.Minute)) // a ceiling, not a bound: a hung test fails
	return c.(*net.TCPConn)
}

// sendAndSum writes size pseudo-random bytes of seed to c and half-closes
// it, while it reads c to EOF; it returns the sum of what it read.
func sendAndSum(c *net.TCPConn, seed uint64, size int64) ([32]byte, error) {
	errc := make(chan error, 1)
	go func() {
		_, err := io.CopyN(c, rand.NewChaCha8([32]byte{byte(seed)}), size)
		if err == nil {
			err = c.CloseWrite()
		}
		errc <- err
	}()
	h := sha256.New()
	_, rerr := io.Copy(h, c)
	werr := <-errc
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, errors.Join(rerr, werr)
}

func sumOf(seed uint64, size int64) [32]byte {
	h := sha256.New()
	io.CopyN(h, rand.NewChaCha8([32]byte{byte(seed)}), size)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// TestTCPTransfer carries 64 MiB each way at once, byte-exact, each side
// half-closing when it has sent its part while the other way goes on.
func TestTCPTransfer(t *testing.T) { forProtocols(t, testTCPTransfer) }

func testTCPTransfer(t *testing.T, proto string) {
	const size = 64 << 20
	e, _, _ := startTCPEdge(t, "tok")
	got := make(chan [32]byte, 1)
	local, _ := localServer(t, func(c *net.TCPConn) {
		sum, err := sendAndSum(c, 2, size)
		if err != nil {
			t.Errorf("local server: %v", err)
		}
		got <- sum
	})
	agent, public := startTCPAgent(t, e, proto, "bulk", "tok", local)
	c := dialTCP(t, public)
	sum, err := sendAndSum(c, 1, size)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	if sum != sumOf(2, size) {
		t.Error("the client got other bytes than the local server sent")
	}
	if <-got != sumOf(1, size) {
		t.Error("the local server got other bytes than the client sent")
		if resp, err := http.Get("http://" + e.addr + "/metrics"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "sluice_connection") {
					t.Log(l)
				}
			}
		}
	}
	if !agent.waitOutput(agent.stdout, "in 64.0 MB  out 64.0 MB", 10*time.Second) {
		t.Errorf("no console line with the bytes each way:\n%s", agent.stdout)
	}
}

// TestTCPHalfClose: after one side half-closes, the other still sends,
// and the first still receives; both ways.
func TestTCPHalfClose(t *testing.T) { forProtocols(t, testTCPHalfClose) }

func testTCPHalfClose(t *testing.T, proto string) {
	e, _, _ := startTCPEdge(t, "tok")
	local, _ := localServer(t, func(c *net.TCPConn) {
		// The client speaks first and half-closes; then the server
		// answers after EOF, and half-closes; then reads the client's
		// second part (which came after the server's EOF reached it).
		b, err := io.ReadAll(io.LimitReader(c, 5))
		if err != nil || string(b) != "hello" {
			t.Errorf("local server read %q, %v", b, err)
			return
		}
		if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
			t.Errorf("local server: after hello, %q, %v; want EOF", b, err)
			return
		}
		c.Write([]byte("answer after your EOF"))
		c.CloseWrite()
	})
	_, public := startTCPAgent(t, e, proto, "half", "tok", local)
	c := dialTCP(t, public)
	c.Write([]byte("hello"))
	c.CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "answer after your EOF" {
		t.Fatalf("client got %q, %v", b, err)
	}

	// The other way: the server half-closes first, the client then sends.
	e2, _, _ := startTCPEdge(t, "tok")
	got := make(chan string, 1)
	local2, _ := localServer(t, func(c *net.TCPConn) {
		c.Write([]byte("banner"))
		c.CloseWrite()
		b, err := io.ReadAll(c)
		if err != nil {
			t.Errorf("local server: %v", err)
		}
		got <- string(b)
	})
	_, public2 := startTCPAgent(t, e2, proto, "half2", "tok", local2)
	c2 := dialTCP(t, public2)
	if b, err := io.ReadAll(c2); err != nil || string(b) != "banner" {
		t.Fatalf("client got %q, %v; want banner then EOF", b, err)
	}
	c2.Write([]byte("sent after your EOF"))
	c2.CloseWrite()
	if s := <-got; s != "sent after your EOF" {
		t.Fatalf("local server got %q", s)
	}
}

// TestTCPRealClients: psql to the PostgreSQL of .ci/run and ssh to an
// sshd of the test's own, through the tunnel.
func TestTCPRealClients(t *testing.T) { forProtocols(t, testTCPRealClients) }

func testTCPRealClients(t *testing.T, proto string) {
	e, _, _ := startTCPEdge(t, "tok")
	t.Run("psql", func(t *testing.T) {
		pg := needPostgres(t)
		psql := testtool.Need(t, "psql", "postgresql-client")
		_, public := startTCPAgent(t, e, proto, "pg", "tok", pg.Host)
		host, port, _ := net.SplitHostPort(public)
		pass, _ := pg.User.Password()
		cmd := exec.Command(psql, "-h", host, "-p", port, "-U", pg.User.Username(), "-d", strings.TrimPrefix(pg.Path, "/"), "-tAc", "select 1")
		cmd.Env = append(os.Environ(), "PGPASSWORD="+pass, "PGCONNECT_TIMEOUT=30")
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "1" {
			t.Fatalf("psql through the tunnel: %v\n%s", err, out)
		}
	})
	t.Run("ssh", func(t *testing.T) {
		sshAddr, key := startSSHD(t)
		ssh := testtool.Need(t, "ssh", "openssh-client")
		_, public := startTCPAgent(t, e, proto, "ssh", "tok", sshAddr)
		_, port, _ := net.SplitHostPort(public)
		out, err := exec.Command(ssh, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
			"-o", "ConnectTimeout=30", "-i", key, "-p", port, "127.0.0.1", "echo", "ok").CombinedOutput()
		if err != nil || !strings.HasSuffix(string(out), "ok\n") {
			t.Fatalf("ssh through the tunnel: %v\n%s", err, out)
		}
	})
}

// needPostgres returns the URL of the PostgreSQL server of .ci/run
// (SLUICE_TEST_POSTGRES); without it the test is skipped, except under CI.
func needPostgres(t *testing.T) *url.URL {
	t.Helper()
	s := os.Getenv("SLUICE_TEST_POSTGRES")
	if s == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("SLUICE_TEST_POSTGRES is not set: CI must run the psql test")
		}
		t.Skip("SLUICE_TEST_POSTGRES not set (bash .ci/run sets it)")
	}
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// startSSHD runs a real sshd on a loopback port, with host and user keys
// made for the test; it returns its address and the user's private key.
func startSSHD(t *testing.T) (addr, key string) {
	t.Helper()
	sshd := testtool.Need(t, "sshd", "openssh-server")
	keygen := testtool.Need(t, "ssh-keygen", "openssh-client")
	dir := t.TempDir()
	for _, k := range []string{"host", "user"} {
		if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "user.pub"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600)
	if os.Geteuid() == 0 {
		os.MkdirAll("/run/sshd", 0o755) // sshd's privilege separation directory
	}
	for attempt := 0; attempt < 5; attempt++ {
		addr = "127.0.0.1:" + strconv.Itoa(freePort(t))
		_, port, _ := net.SplitHostPort(addr)
		conf := filepath.Join(dir, "sshd_config")
		os.WriteFile(conf, []byte(strings.Join([]string{
			"Port " + port, "ListenAddress 127.0.0.1", "HostKey " + filepath.Join(dir, "host"),
			"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"), "PidFile " + filepath.Join(dir, "sshd.pid"),
			"StrictModes no", "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
			"PermitRootLogin prohibit-password", "",
		}, "\n")), 0o600)
		cmd := exec.Command(sshd, "-D", "-e", "-f", conf)
		var errOut bytes.Buffer
		cmd.Stderr = &errOut
		if err := cmd.Start(); err != nil {
			t.Fatalf("sshd: %v", err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		t.Cleanup(func() { cmd.Process.Kill(); <-done })
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				return addr, filepath.Join(dir, "user")
			}
			select {
			case <-done:
				deadline = time.Time{}
			default:
			}
		}
		t.Logf("sshd on %s did not start: %s", addr, errOut.String())
	}
	t.Fatal("sshd did not start")
	return "", ""
}

// TestTCPLocalRefuses: nothing listens at the local address. The public
// client's connection is closed, and the agent's console says why.
func TestTCPLocalRefuses(t *testing.T) { forProtocols(t, testTCPLocalRefuses) }

func testTCPLocalRefuses(t *testing.T, proto string) {
	e, _, _ := startTCPEdge(t, "tok")
	local := "127.0.0.1:" + strconv.Itoa(freePort(t))
	agent, public := startTCPAgent(t, e, proto, "refused", "tok", local)
	// The edge may reset the connection before the dial has returned:
	// closed either way.
	if c, err := net.DialTimeout("tcp", public, 10*time.Second); err != nil {
		t.Logf("public client: %v", err)
	} else {
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		c.Write([]byte("hello"))
		b, err := io.ReadAll(c)
		if len(b) != 0 {
			t.Fatalf("read %q from a tunnel whose local server refused", b)
		}
		t.Logf("public client: %v", err) // EOF or a reset: closed either way
	}
	if !agent.waitOutput(agent.stdout, "connection refused", 15*time.Second) {
		t.Fatalf("the agent's console does not say connection refused:\n%s", agent.stdout)
	}
}

// TestTCPAgentKilled: the agent dies mid-transfer; the public connection
// is reset, never ended as if the transfer were complete.
func TestTCPAgentKilled(t *testing.T) { forProtocols(t, testTCPAgentKilled) }

func testTCPAgentKilled(t *testing.T, proto string) {
	e, _, _ := startTCPEdge(t, "tok")
	local, _ := localServer(t, func(c *net.TCPConn) {
		io.Copy(c, rand.NewChaCha8([32]byte{})) // endless, until the tunnel breaks
	})
	agent, public := startTCPAgent(t, e, proto, "killed", "tok", local)
	c := dialTCP(t, public)
	if _, err := io.CopyN(io.Discard, c, 1<<20); err != nil {
		t.Fatalf("before the kill: %v", err)
	}
	agent.kill()
	_, err := io.Copy(io.Discard, c)
	if err == nil {
		t.Fatal("the public connection ended cleanly (EOF) after its agent was killed mid-transfer")
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the public connection ended with %v, want a reset", err)
	}
}

// TestTCPRemotePort: a port of the range asked for is given; one outside
// is refused with the reason.
func TestTCPRemotePort(t *testing.T) { forProtocols(t, testTCPRemotePort) }

func testTCPRemotePort(t *testing.T, proto string) {
	e, low, high := startTCPEdge(t, "tok")
	local, _ := localServer(t, func(c *net.TCPConn) { c.Write([]byte("hi")) })
	want := high - 1
	_, public := startTCPAgent(t, e, proto, "asked", "tok", local, "--remote-port", strconv.Itoa(want))
	if public != "127.0.0.1:"+strconv.Itoa(want) {
		t.Fatalf("public address %s, want port %d", public, want)
	}
	if b, err := io.ReadAll(dialTCP(t, public)); err != nil || string(b) != "hi" {
		t.Fatalf("through the port asked for: %q, %v", b, err)
	}

	out := strconv.Itoa(low - 1)
	p := startProc(t, "tcp agent out", "tcp", local, "--edge", "http://"+e.addr, "--token", "tok", "--name", "out", "--protocol", proto, "--remote-port", out)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the agent asking for a port outside the range did not stop")
	}
	if p.err == nil || !strings.Contains(p.stderr.String(), "port "+out+" is outside this edge's TCP port range") {
		t.Fatalf("exit %v, stderr:\n%s", p.err, p.stderr)
	}
	if strings.Contains(p.stdout.String(), "Forwarding") {
		t.Fatalf("forwarding printed for a refused port:\n%s", p.stdout)
	}
}

// TestTCPAllow: a visitor outside the tunnel's --allow networks is
// closed at once; the local server never sees it.
func TestTCPAllow(t *testing.T) { forProtocols(t, testTCPAllow) }

func testTCPAllow(t *testing.T, proto string) {
	e, _, _ := startTCPEdge(t, "tok")
	local, accepted := localServer(t, func(c *net.TCPConn) { c.Write([]byte("secret")) })
	_, public := startTCPAgent(t, e, proto, "allow", "tok", local, "--allow", "10.0.0.0/8")
	b, _ := io.ReadAll(dialTCP(t, public))
	if len(b) != 0 || accepted() != 0 {
		t.Fatalf("a visitor outside --allow got %q; the local server saw %d connections", b, accepted())
	}
}

// TestTCPEmbedded: "sluice tcp PORT" alone, with the edge inside it.
func TestTCPEmbedded(t *testing.T) {
	t.Parallel()
	local, _ := localServer(t, func(c *net.TCPConn) {
		b, _ := io.ReadAll(c)
		c.Write(bytes.ToUpper(b))
	})
	_, public := startTCPAgent(t, nil, "auto", "embedded", "", local)
	c := dialTCP(t, public)
	c.Write([]byte("shout"))
	c.CloseWrite()
	if b, err := io.ReadAll(c); err != nil || string(b) != "SHOUT" {
		t.Fatalf("through the embedded edge: %q, %v", b, err)
	}
}
