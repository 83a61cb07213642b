package edge_test

import (
	"context"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/store"
)

// tcpStoreEdge starts an edge with a store, the admin token "A" and the
// TCP port range rng; it returns the edge and an agent token's id and
// secret.
func tcpStoreEdge(t *testing.T, rng edge.PortRange) (*testEdge, string, string) {
	t.Helper()
	st, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := startEdge(t, func(c *edge.Config) {
		c.Store, c.AdminTokens, c.TCPPorts, c.TCPListenHost = st, []string{"A"}, rng, "127.0.0.1"
	})
	tok, secret, err := st.CreateToken(context.Background(), store.KindAgent, "agent")
	if err != nil {
		t.Fatal(err)
	}
	return e, tok.ID, secret
}

// Stored tunnels of type tcp through the API: what they keep, and the
// 400s for what does not go with their type.
func TestAPITCPTunnels(t *testing.T) {
	t.Parallel()
	e, agentID, _ := tcpStoreEdge(t, edge.PortRange{})
	ctx := context.Background()
	c := adminClient(t, e, "A")
	tun, err := c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("db"), Type: ptr("tcp"), Upstream: ptr("tcp://127.0.0.1:5432"), RemotePort: ptr(20001), AgentTokenID: ptr(agentID)})
	if err != nil || tun.Type != "tcp" || tun.Upstream != "tcp://127.0.0.1:5432" || tun.RemotePort != 20001 {
		t.Fatalf("create a tcp tunnel: %+v %v", tun, err)
	}
	if got, err := c.Tunnel(ctx, "db"); err != nil || got.Type != "tcp" || got.RemotePort != 20001 {
		t.Fatalf("get: %+v %v", got, err)
	}
	if tun, err := c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("web"), Upstream: ptr("http://127.0.0.1:3000"), AgentTokenID: ptr(agentID)}); err != nil || tun.Type != "http" || tun.RemotePort != 0 {
		t.Fatalf("an http tunnel by default: %+v %v", tun, err)
	}
	for _, tc := range []struct {
		name string
		req  api.TunnelRequest
		code string
		msg  string
	}{
		{"unknown type", api.TunnelRequest{Type: ptr("sctp"), Upstream: ptr("tcp://127.0.0.1:53")}, api.CodeBadType, `type "sctp" is not "http", "tcp" or "udp"`},
		{"tcp upstream for http", api.TunnelRequest{Upstream: ptr("tcp://127.0.0.1:5432")}, api.CodeBadUpstream, "tcp:// upstreams are for tunnels of type tcp"},
		{"http upstream for tcp", api.TunnelRequest{Type: ptr("tcp"), Upstream: ptr("http://127.0.0.1:3000")}, api.CodeBadUpstream, `upstream "http://127.0.0.1:3000" is not a tcp://HOST:PORT URL`},
		{"no port", api.TunnelRequest{Type: ptr("tcp"), Upstream: ptr("tcp://127.0.0.1")}, api.CodeBadUpstream, "is not a tcp://HOST:PORT URL"},
		{"no upstream", api.TunnelRequest{Type: ptr("tcp")}, api.CodeBadUpstream, "such as tcp://127.0.0.1:5432"},
		{"remote port for http", api.TunnelRequest{Upstream: ptr("http://127.0.0.1:3000"), RemotePort: ptr(20002)}, api.CodeBadType, "remote_port is for tunnels of type tcp"},
		{"port out of range", api.TunnelRequest{Type: ptr("tcp"), Upstream: ptr("tcp://127.0.0.1:1"), RemotePort: ptr(70000)}, api.CodeBadType, "remote_port 70000 is not a port"},
		{"hostname", api.TunnelRequest{Type: ptr("tcp"), Upstream: ptr("tcp://127.0.0.1:1"), Hostnames: ptr([]string{"db.example.com"})}, api.CodeBadType, "has no hostnames"},
		{"basic auth", api.TunnelRequest{Type: ptr("tcp"), Upstream: ptr("tcp://127.0.0.1:1"), BasicAuthUser: ptr("u"), BasicAuthPassword: ptr("p")}, api.CodeBadType, "basic auth does not apply"},
		{"host header", api.TunnelRequest{Type: ptr("tcp"), Upstream: ptr("tcp://127.0.0.1:1"), HostHeader: ptr("rewrite")}, api.CodeBadType, "host_header does not apply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req
			req.Name, req.AgentTokenID = ptr("x"+strings.ReplaceAll(tc.name, " ", "-")), ptr(agentID)
			_, err := c.CreateTunnel(ctx, req)
			if ae := wantAPIError(t, tc.name, err, 400, tc.code); !strings.Contains(ae.Message, tc.msg) {
				t.Errorf("message %q, want it to say %q", ae.Message, tc.msg)
			}
		})
	}
	_, err = c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("db2"), Type: ptr("tcp"), Upstream: ptr("tcp://127.0.0.1:5433"), RemotePort: ptr(20001), AgentTokenID: ptr(agentID)})
	if ae := wantAPIError(t, "a second tunnel on port 20001", err, 409, api.CodePortTaken); !strings.Contains(ae.Message, "remote_port belongs to another stored tunnel") {
		t.Errorf("message %q", ae.Message)
	}
	// PATCH checks the tunnel as it would be.
	_, err = c.UpdateTunnel(ctx, "web", api.TunnelRequest{Type: ptr("tcp")})
	wantAPIError(t, "web to tcp with its http upstream", err, 400, api.CodeBadUpstream)
	_, err = c.UpdateTunnel(ctx, "db", api.TunnelRequest{Hostnames: ptr([]string{"db.example.com"})})
	wantAPIError(t, "a hostname for db", err, 400, api.CodeBadType)
	if tun, err := c.UpdateTunnel(ctx, "db", api.TunnelRequest{RemotePort: ptr(20005)}); err != nil || tun.RemotePort != 20005 || tun.Type != "tcp" {
		t.Fatalf("change db's port: %+v %v", tun, err)
	}
	if tun, err := c.UpdateTunnel(ctx, "db", api.TunnelRequest{Type: ptr("http"), Upstream: ptr("http://127.0.0.1:80"), RemotePort: ptr(0)}); err != nil || tun.Type != "http" {
		t.Fatalf("db to http: %+v %v", tun, err)
	}
}

// The edge gives a stored tcp tunnel its stored port, and refuses its
// agent when the registration's type or port is not the stored one.
func TestStoredTCPTunnelRegistration(t *testing.T) {
	t.Parallel()
	rng := freeRange(t, 2)
	e, agentID, secret := tcpStoreEdge(t, rng)
	ctx := context.Background()
	c := adminClient(t, e, "A")
	if _, err := c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("db"), Type: ptr("tcp"), Upstream: ptr("tcp://127.0.0.1:5432"),
		RemotePort: ptr(rng.High), AgentTokenID: ptr(agentID)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("web"), Upstream: ptr("http://127.0.0.1:3000"), AgentTokenID: ptr(agentID)}); err != nil {
		t.Fatal(err)
	}
	reg := func(name, typ string, port int) frame {
		t.Helper()
		a := e.dial(t)
		a.send(t, `{"type":"register","tunnel_id":"`+name+`","agent_token":"`+secret+`","tunnel_type":"`+typ+`","remote_port":`+strconv.Itoa(port)+`}`)
		f := a.read(t, 5*time.Second)
		a.ws.Close()
		return f
	}
	if f := reg("db", "http", 0); f.typ() != "error" || f.str("code") != "bad_register" || !strings.Contains(f.str("message"), "stored as a tunnel of type tcp") {
		t.Fatalf("db as http: %s", f.raw)
	}
	if f := reg("web", "tcp", 0); f.typ() != "error" || f.str("code") != "bad_register" || !strings.Contains(f.str("message"), "type http, not tcp") {
		t.Fatalf("web as tcp: %s", f.raw)
	}
	if f := reg("db", "tcp", rng.Low); f.typ() != "error" || f.str("code") != "port_unavailable" {
		t.Fatalf("db on another port: %s", f.raw)
	}
	want := "tcp://localhost:" + strconv.Itoa(rng.High)
	if f := reg("db", "tcp", 0); f.typ() != "registered" || f.str("public_url") != want {
		t.Fatalf("db without a port: %s, want public_url %s", f.raw, want)
	}
}

// Stored tunnels of type udp through the API: the rules of tcp tunnels
// with udp:// upstreams, and their own port numbers (a udp tunnel may have
// a tcp tunnel's).
func TestAPIUDPTunnels(t *testing.T) {
	t.Parallel()
	e, agentID, secret := tcpStoreEdge(t, edge.PortRange{})
	ctx := context.Background()
	c := adminClient(t, e, "A")
	if _, err := c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("db"), Type: ptr("tcp"), Upstream: ptr("tcp://127.0.0.1:5432"), RemotePort: ptr(20001), AgentTokenID: ptr(agentID)}); err != nil {
		t.Fatal(err)
	}
	tun, err := c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("dns"), Type: ptr("udp"), Upstream: ptr("udp://127.0.0.1:53"), RemotePort: ptr(20001), AgentTokenID: ptr(agentID)})
	if err != nil || tun.Type != "udp" || tun.Upstream != "udp://127.0.0.1:53" || tun.RemotePort != 20001 {
		t.Fatalf("create a udp tunnel on the tcp tunnel's port number: %+v %v", tun, err)
	}
	if got, err := c.Tunnel(ctx, "dns"); err != nil || got.Type != "udp" || got.RemotePort != 20001 {
		t.Fatalf("get: %+v %v", got, err)
	}
	for _, tc := range []struct {
		name string
		req  api.TunnelRequest
		code string
		msg  string
	}{
		{"udp upstream for http", api.TunnelRequest{Upstream: ptr("udp://127.0.0.1:53")}, api.CodeBadUpstream, "udp:// upstreams are for tunnels of type udp"},
		{"tcp upstream for udp", api.TunnelRequest{Type: ptr("udp"), Upstream: ptr("tcp://127.0.0.1:53")}, api.CodeBadUpstream, `upstream "tcp://127.0.0.1:53" is not a udp://HOST:PORT URL, as a tunnel of type udp needs, such as udp://127.0.0.1:53`},
		{"udp upstream for tcp", api.TunnelRequest{Type: ptr("tcp"), Upstream: ptr("udp://127.0.0.1:53")}, api.CodeBadUpstream, "is not a tcp://HOST:PORT URL"},
		{"no upstream", api.TunnelRequest{Type: ptr("udp")}, api.CodeBadUpstream, "such as udp://127.0.0.1:53"},
		{"port out of range", api.TunnelRequest{Type: ptr("udp"), Upstream: ptr("udp://127.0.0.1:53"), RemotePort: ptr(-1)}, api.CodeBadType, "remote_port -1 is not a port"},
		{"hostname", api.TunnelRequest{Type: ptr("udp"), Upstream: ptr("udp://127.0.0.1:53"), Hostnames: ptr([]string{"dns.example.com"})}, api.CodeBadType, "a tunnel of type udp has no hostnames"},
		{"basic auth", api.TunnelRequest{Type: ptr("udp"), Upstream: ptr("udp://127.0.0.1:53"), BasicAuthUser: ptr("u"), BasicAuthPassword: ptr("p")}, api.CodeBadType, "basic auth does not apply to a tunnel of type udp"},
		{"host header", api.TunnelRequest{Type: ptr("udp"), Upstream: ptr("udp://127.0.0.1:53"), HostHeader: ptr("rewrite")}, api.CodeBadType, "host_header does not apply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req
			req.Name, req.AgentTokenID = ptr("x"+strings.ReplaceAll(tc.name, " ", "-")), ptr(agentID)
			_, err := c.CreateTunnel(ctx, req)
			if ae := wantAPIError(t, tc.name, err, 400, tc.code); !strings.Contains(ae.Message, tc.msg) {
				t.Errorf("message %q, want it to say %q", ae.Message, tc.msg)
			}
		})
	}
	_, err = c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("dns2"), Type: ptr("udp"), Upstream: ptr("udp://127.0.0.1:54"), RemotePort: ptr(20001), AgentTokenID: ptr(agentID)})
	wantAPIError(t, "a second udp tunnel on port 20001", err, 409, api.CodePortTaken)
	if _, err := c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("dns2"), Type: ptr("udp"), Upstream: ptr("udp://127.0.0.1:54"), AgentTokenID: ptr(agentID)}); err != nil {
		t.Fatal(err)
	}
	_, err = c.UpdateTunnel(ctx, "dns2", api.TunnelRequest{RemotePort: ptr(20001)})
	wantAPIError(t, "dns2 onto dns's port", err, 409, api.CodePortTaken)
	// The agent's config gives a udp tunnel with a port its public URL.
	ac, err := api.NewClient("http://"+e.addr, secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := ac.AgentConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	urls := map[string]string{}
	for _, at := range cfg.Tunnels {
		urls[at.Name] = at.Type + " " + at.PublicURL
	}
	if want := map[string]string{"db": "tcp tcp://localhost:20001", "dns": "udp udp://localhost:20001", "dns2": "udp "}; !maps.Equal(urls, want) {
		t.Fatalf("agent config: %v, want %v", urls, want)
	}
}

// The edge gives a stored udp tunnel its stored port, and refuses its
// agent when the registration's type or port is not the stored one.
func TestStoredUDPTunnelRegistration(t *testing.T) {
	t.Parallel()
	rng := freeRange(t, 2)
	e, agentID, secret := tcpStoreEdge(t, rng)
	ctx := context.Background()
	c := adminClient(t, e, "A")
	if _, err := c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("dns"), Type: ptr("udp"), Upstream: ptr("udp://127.0.0.1:53"),
		RemotePort: ptr(rng.High), AgentTokenID: ptr(agentID)}); err != nil {
		t.Fatal(err)
	}
	reg := func(name, typ string, port int) frame {
		t.Helper()
		a := e.dial(t)
		a.send(t, `{"type":"register","tunnel_id":"`+name+`","agent_token":"`+secret+`","tunnel_type":"`+typ+`","remote_port":`+strconv.Itoa(port)+`}`)
		f := a.read(t, 5*time.Second)
		a.ws.Close()
		return f
	}
	if f := reg("dns", "tcp", 0); f.typ() != "error" || f.str("code") != "bad_register" || !strings.Contains(f.str("message"), "stored as a tunnel of type udp, not tcp") {
		t.Fatalf("dns as tcp: %s", f.raw)
	}
	if f := reg("dns", "udp", rng.Low); f.typ() != "error" || f.str("code") != "port_unavailable" || !strings.Contains(f.str("message"), "stored with port") {
		t.Fatalf("dns on another port: %s", f.raw)
	}
	want := "udp://localhost:" + strconv.Itoa(rng.High)
	if f := reg("dns", "udp", 0); f.typ() != "registered" || f.str("public_url") != want {
		t.Fatalf("dns without a port: %s, want public_url %s", f.raw, want)
	}
}

// A stored tunnel's remote port waits for its agent while it is offline:
// an ad-hoc tunnel asking for it is refused, naming the stored tunnel, and
// one asking for any port never gets it. TCP and UDP ports are apart: a
// stored tcp tunnel's port is free for an ad-hoc udp tunnel.
func TestStoredPortReserved(t *testing.T) {
	t.Parallel()
	rng := freeRange(t, 3)
	e, agentID, secret := tcpStoreEdge(t, rng)
	ctx := context.Background()
	c := adminClient(t, e, "A")
	if _, err := c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("db"), Type: ptr("tcp"), Upstream: ptr("tcp://127.0.0.1:5432"),
		RemotePort: ptr(rng.Low), AgentTokenID: ptr(agentID)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateTunnel(ctx, api.TunnelRequest{Name: ptr("dns"), Type: ptr("udp"), Upstream: ptr("udp://127.0.0.1:53"),
		RemotePort: ptr(rng.Low + 1), AgentTokenID: ptr(agentID)}); err != nil {
		t.Fatal(err)
	}
	reg := func(name, token, typ string, port int) (*rawAgent, frame) {
		t.Helper()
		a := e.dial(t)
		a.send(t, `{"type":"register","tunnel_id":"`+name+`","agent_token":"`+token+`","tunnel_type":"`+typ+`","remote_port":`+strconv.Itoa(port)+`}`)
		return a, a.read(t, 5*time.Second)
	}
	if _, f := reg("adhoc", "T", "tcp", rng.Low); f.typ() != "error" || f.str("code") != "port_unavailable" ||
		!strings.Contains(f.str("message"), `TCP port `+strconv.Itoa(rng.Low)+` is reserved for stored tunnel "db"`) {
		t.Fatalf("an ad-hoc tunnel on db's port: %s", f.raw)
	}
	// Any port: the two others of the range, then none.
	for i := range 2 {
		_, f := reg("any"+strconv.Itoa(i), "T", "tcp", 0)
		if f.typ() != "registered" || f.str("public_url") == "tcp://localhost:"+strconv.Itoa(rng.Low) {
			t.Fatalf("ad-hoc tunnel %d on any port: %s (db's port is %d)", i, f.raw, rng.Low)
		}
	}
	if _, f := reg("any2", "T", "tcp", 0); f.typ() != "error" || f.str("code") != "no_tcp_ports" {
		t.Fatalf("a third ad-hoc tunnel on any port, with db's port left: %s", f.raw)
	}
	// The stored tunnel's own agent gets its port.
	if _, f := reg("db", secret, "tcp", 0); f.typ() != "registered" || f.str("public_url") != "tcp://localhost:"+strconv.Itoa(rng.Low) {
		t.Fatalf("db's agent: %s", f.raw)
	}
	// UDP: dns's port is kept, db's (a TCP port) is not.
	if _, f := reg("adhoc", "T", "udp", rng.Low+1); f.typ() != "error" || f.str("code") != "port_unavailable" ||
		!strings.Contains(f.str("message"), `UDP port `+strconv.Itoa(rng.Low+1)+` is reserved for stored tunnel "dns"`) {
		t.Fatalf("an ad-hoc tunnel on dns's port: %s", f.raw)
	}
	if _, f := reg("adhoc", "T", "udp", rng.Low); f.typ() != "registered" || f.str("public_url") != "udp://localhost:"+strconv.Itoa(rng.Low) {
		t.Fatalf("an ad-hoc udp tunnel on db's TCP port number: %s", f.raw)
	}
}
