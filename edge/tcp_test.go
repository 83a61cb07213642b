package edge_test

import (
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/edge"
	"golang.org/x/crypto/bcrypt"
)

// registerTCP sends a TCP tunnel's register frame (as a plain v1 agent)
// and returns the answer.
func registerTCP(t *testing.T, e *testEdge, name string, port int, extra string) (*rawAgent, frame) {
	t.Helper()
	a := e.dial(t)
	a.send(t, `{"type":"register","tunnel_id":"`+name+`","agent_token":"T","tunnel_type":"tcp","remote_port":`+strconv.Itoa(port)+extra+`}`)
	return a, a.read(t, 5*time.Second)
}

// rangeCalls spreads freeRange's search over the test binary's calls, so
// that parallel tests never pick the same range (each saw it free).
var rangeCalls atomic.Int64

// freeRange finds n consecutive loopback ports free a moment ago, apart
// from the ranges this test binary's other calls found.
func freeRange(t *testing.T, n int) edge.PortRange {
	t.Helper()
	// Below the kernel's ephemeral ports (32768 and up on Linux), which
	// every outgoing connection of the tests running beside takes one of;
	// each call, and each test binary (another suite beside this one),
	// starts elsewhere and goes round the whole span.
	first := (os.Getpid()*131 + int(rangeCalls.Add(1)-1)*97*3) % 12000
	for i := 0; i < 12000; i += 97 {
		base := 20000 + (first+i)%12000
		ok := true
		for p := base; p < base+n && ok; p++ {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				ok = false
				continue
			}
			ln.Close()
		}
		if ok {
			return edge.PortRange{Low: base, High: base + n - 1}
		}
	}
	t.Fatal("no free port range")
	return edge.PortRange{}
}

func TestTCPRegistration(t *testing.T) {
	t.Parallel()
	t.Run("no range", func(t *testing.T) {
		e := startEdge(t, nil)
		_, f := registerTCP(t, e, "db", 0, "")
		if f.typ() != "error" || f.str("code") != "no_tcp_ports" {
			t.Fatalf("a TCP tunnel at an edge without --tcp-ports: %s", f.raw)
		}
	})
	rng := freeRange(t, 2)
	e := startEdge(t, func(c *edge.Config) { c.TCPPorts, c.TCPListenHost = rng, "127.0.0.1" })
	if _, f := registerTCP(t, e, "out", rng.High+1, ""); f.typ() != "error" || f.str("code") != "port_unavailable" ||
		!strings.Contains(f.str("message"), "outside this edge's TCP port range") {
		t.Fatalf("a port outside the range: %s", f.raw)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if _, f := registerTCP(t, e, "auth", 0, `,"features":["access"],"basic_auth_user":"u","basic_auth_bcrypt":"`+string(hash)+`"`); f.typ() != "error" || f.str("code") != "bad_access" {
		t.Fatalf("basic auth for a TCP tunnel: %s", f.raw)
	}
	a, f := registerTCP(t, e, "db", rng.Low, "")
	want := "tcp://localhost:" + strconv.Itoa(rng.Low)
	if f.typ() != "registered" || f.str("public_url") != want {
		t.Fatalf("registered %s, want public_url %s", f.raw, want)
	}
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(rng.Low))
	if err != nil {
		t.Fatalf("the tunnel's port does not accept connections: %v", err)
	}
	c.Close()
	if _, f := registerTCP(t, e, "other", rng.Low, ""); f.typ() != "error" || f.str("code") != "port_unavailable" {
		t.Fatalf("a port held by another tunnel: %s", f.raw)
	}
	if r := e.get(t, "db.localhost:"+e.port, "/"); r.resp == nil || r.resp.StatusCode != http.StatusNotFound || !strings.Contains(string(r.body), "TCP tunnel") {
		t.Fatalf("HTTP to a TCP tunnel's host: %v", r)
	}
	// The session ends: its port goes back to the range.
	a.ws.Close()
	deadline := time.Now().Add(waitFor(10 * time.Second))
	for {
		b, f := registerTCP(t, e, "again", rng.Low, "")
		if f.typ() == "registered" {
			b.ws.Close()
			break
		}
		b.ws.Close()
		if time.Now().After(deadline) {
			t.Fatalf("the port was not given back after its session ended: %s", f.raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTCPPlainJettyAgent: an agent that speaks only Jetty's frames (no
// features) registers a TCP tunnel and serves a public connection with
// tcp_connect, tcp_data both ways and its tcp_close, which the public
// client sees as the connection's clean end.
func TestTCPPlainJettyAgent(t *testing.T) {
	t.Parallel()
	rng := freeRange(t, 1)
	e := startEdge(t, func(c *edge.Config) { c.TCPPorts, c.TCPListenHost = rng, "127.0.0.1" })
	a, f := registerTCP(t, e, "jetty", 0, "")
	if f.typ() != "registered" {
		t.Fatalf("registered: %s", f.raw)
	}
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(rng.Low))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitFor(10 * time.Second)))
	connect := a.read(t, 10*time.Second)
	id := connect.str("connection_id")
	if connect.typ() != "tcp_connect" || id == "" || !strings.HasPrefix(connect.str("remote_addr"), "127.0.0.1:") {
		t.Fatalf("first frame for a connection: %s", connect.raw)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	data := a.read(t, 10*time.Second)
	if data.typ() != "tcp_data" || data.str("connection_id") != id || data.str("data_b64") != base64.StdEncoding.EncodeToString([]byte("ping")) {
		t.Fatalf("the client's bytes reached the agent as %s", data.raw)
	}
	a.send(t, `{"type":"tcp_data","connection_id":"`+id+`","data_b64":"`+base64.StdEncoding.EncodeToString([]byte("pong"))+`"}`)
	a.send(t, `{"type":"tcp_close","connection_id":"`+id+`"}`)
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "pong" {
		t.Fatalf("the client read %q, %v; want pong and a clean end", b, err)
	}
}
