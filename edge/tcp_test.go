package edge_test

import (
	"net"
	"net/http"
	"strconv"
	"strings"
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

// freeRange finds n consecutive loopback ports free a moment ago.
func freeRange(t *testing.T, n int) edge.PortRange {
	t.Helper()
	for base := 43000; base < 60000; base += 97 {
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
