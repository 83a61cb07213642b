package edge_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/internal/cluster"
	"github.com/sluicehq/sluice/internal/pgtest"
	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/internal/testtool"
	"github.com/sluicehq/sluice/store"
	"github.com/sluicehq/sluice/tunnel"
	"golang.org/x/crypto/bcrypt"
)

// Several edges in this process sharing one PostgreSQL store and one real
// redis-server: an agent on edge A, requests through edge B.

var clusterSecret = []byte("a cluster secret of at least 32 bytes, for tests")

type member struct {
	*testEdge
	c     *cluster.Cluster
	clogs *logBuffer   // the cluster's logs
	store *store.Store // the edge's handle on the shared store
}

// startCluster runs n edges (ids edge-a, edge-b, ...) sharing a store and
// a Redis, each advertising its own listener.
func startCluster(t *testing.T, n int, lease time.Duration) (*redistest.Server, []member) {
	t.Helper()
	rs := redistest.Start(t)
	dsn := pgtest.Schema(t)
	var out []member
	for i := range n {
		st, err := store.Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		clogs := &logBuffer{}
		c, err := cluster.New(cluster.Config{Redis: rs.URL(0), ID: "edge-" + string(rune('a'+i)), Advertise: "http://" + ln.Addr().String(),
			Secret: clusterSecret, Lease: lease, Logger: slog.New(slog.NewTextHandler(clogs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() }) // after the edge has stopped (cleanups run last first)
		e := startEdgeOn(t, ln, func(cfg *edge.Config) { cfg.Store, cfg.Cluster, cfg.AdminTokens = st, c, []string{"A"} })
		out = append(out, member{e, c, clogs, st})
	}
	return rs, out
}

// clientFrom is an HTTP client whose connections come from the local
// address ip (such as 127.0.0.2), to tell the visitor's address from the
// edges' own.
func clientFrom(t *testing.T, ip string) *http.Client {
	tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}
}

// send sends req with client and reads the whole answer.
func send(client *http.Client, req *http.Request) result {
	resp, err := client.Do(req)
	if err != nil {
		return result{err: err}
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return result{resp: resp, body: body, err: err}
}

const bigBody = 64 << 20

// bigStream is the deterministic content of the big downloads.
func bigStream() io.Reader { return io.LimitReader(rand.NewChaCha8([32]byte{7}), bigBody) }

// clusterUpstream is the local server behind the tunnel: what it saw, an
// event stream paced by the test, a WebSocket echo, big bodies, a request
// that waits for its cancellation, and a response aborted midway.
type clusterUpstream struct {
	next     chan struct{} // lets /sse send its next event
	started  chan struct{} // /hang began
	canceled chan struct{} // /hang saw its request canceled
}

func newClusterUpstream() *clusterUpstream {
	return &clusterUpstream{next: make(chan struct{}), started: make(chan struct{}, 1), canceled: make(chan struct{}, 1)}
}

func (u *clusterUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	switch r.URL.Path {
	case "/seen":
		fmt.Fprintf(w, "host=%s xff=%s proto=%s auth=%q internal=%q", r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"),
			r.Header.Get("Authorization"), r.Header.Get(cluster.Header))
	case "/sse":
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		rc.Flush()
		for i := range 3 {
			select {
			case <-u.next:
			case <-r.Context().Done():
				return
			}
			fmt.Fprintf(w, "data: event %d\n\n", i)
			rc.Flush()
		}
	case "/upload":
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%d %s", n, hex.EncodeToString(h.Sum(nil)))
	case "/download":
		w.Header().Set("Content-Length", strconv.Itoa(bigBody))
		io.Copy(w, bigStream())
	case "/trailer":
		w.Header().Set("Trailer", "X-Checksum")
		io.WriteString(w, "bo")
		rc.Flush()
		io.WriteString(w, "dy")
		w.Header().Set("X-Checksum", "abc")
	case "/hang":
		w.WriteHeader(200)
		rc.Flush()
		u.started <- struct{}{}
		<-r.Context().Done()
		u.canceled <- struct{}{}
	case "/abort":
		w.WriteHeader(200)
		io.WriteString(w, "partial")
		rc.Flush()
		panic(http.ErrAbortHandler)
	case "/ws":
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			typ, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if err := ws.WriteMessage(typ, msg); err != nil {
				return
			}
		}
	default:
		http.NotFound(w, r)
	}
}

// An agent on edge A; every kind of request through edges B and C
// reaches it as it would through A.
func TestClusterForwards(t *testing.T) {
	_, edges := startCluster(t, 3, 0)
	a, b, c := edges[0], edges[1], edges[2]
	up := newClusterUpstream()
	a.serveAgent(t, "demo", tunnel.ProtocolV2, up)
	visitor := clientFrom(t, "127.0.0.2")

	t.Run("plain", func(t *testing.T) {
		for _, e := range []member{b, c} {
			r := send(visitor, e.newRequest(t, "GET", "demo.localhost", "/seen", nil))
			want := `host=demo.localhost xff=127.0.0.2 proto=http auth="" internal=""`
			if r.err != nil || r.resp.StatusCode != 200 || string(r.body) != want {
				t.Fatalf("through %s: %v; want 200 %q", e.c.ID(), r, want)
			}
		}
		if n := metricValue(b.metrics(t), "sluice_cluster_forwarded_total"); n < 1 {
			t.Errorf("B's sluice_cluster_forwarded_total = %v", n)
		}
		if n := metricValue(a.metrics(t), "sluice_cluster_received_total"); n < 2 {
			t.Errorf("A's sluice_cluster_received_total = %v, want 2 or more", n)
		}
		if r := b.get(t, "nope.localhost", "/"); r.err != nil || r.resp.StatusCode != 404 || r.resp.Header.Get("X-Sluice-Error") != "tunnel_not_found" {
			t.Errorf("a tunnel no edge holds, through B: %v", r)
		}
	})

	t.Run("sse", func(t *testing.T) {
		resp := awaitHead(t, b.goHead(b.newRequest(t, "GET", "demo.localhost", "/sse", nil)), 5*time.Second)
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("head: %d %v", resp.StatusCode, resp.Header)
		}
		br := bufio.NewReader(resp.Body)
		for i := range 3 {
			up.next <- struct{}{} // the upstream sends one event, and waits for the next signal
			line, err := br.ReadString('\n')
			if want := fmt.Sprintf("data: event %d\n", i); err != nil || line != want {
				t.Fatalf("event %d: %q %v; want %q while the stream is open", i, line, err, want)
			}
			br.ReadString('\n')
		}
		if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
			t.Fatalf("after the events: %q %v", rest, err)
		}
	})

	t.Run("websocket", func(t *testing.T) {
		d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, NetDial: func(network, _ string) (net.Conn, error) { return net.Dial(network, b.addr) }}
		ws, resp, err := d.Dial("ws://demo.localhost:"+b.port+"/ws", nil)
		if err != nil {
			t.Fatalf("WebSocket through B: %v (%v)", err, resp)
		}
		defer ws.Close()
		for i := range 5 {
			msg := bytes.Repeat([]byte{byte('a' + i)}, 1<<(4*i))
			ws.SetReadDeadline(time.Now().Add(patience))
			if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
				t.Fatal(err)
			}
			_, got, err := ws.ReadMessage()
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("echo %d: %d bytes, %v; want %d bytes back", i, len(got), err, len(msg))
			}
		}
	})

	t.Run("upload", func(t *testing.T) {
		want := sha256.New()
		io.Copy(want, bigStream())
		r := b.do(b.newRequest(t, "POST", "demo.localhost", "/upload", bigStream()))
		if exp := fmt.Sprintf("%d %x", bigBody, want.Sum(nil)); r.err != nil || r.resp.StatusCode != 200 || string(r.body) != exp {
			t.Fatalf("64 MiB upload through B: %v; want %q", r, exp)
		}
	})

	t.Run("download", func(t *testing.T) {
		resp, err := b.client.Do(b.newRequest(t, "GET", "demo.localhost", "/download", nil))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, want := sha256.New(), sha256.New()
		n, err := io.Copy(got, resp.Body)
		io.Copy(want, bigStream())
		if err != nil || n != bigBody || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
			t.Fatalf("64 MiB download through B: %d bytes, %v, equal %v", n, err, bytes.Equal(got.Sum(nil), want.Sum(nil)))
		}
	})

	t.Run("trailer", func(t *testing.T) {
		for _, e := range []member{a, b} {
			r := e.do(e.newRequest(t, "GET", "demo.localhost", "/trailer", nil))
			if r.err != nil || string(r.body) != "body" || r.resp.Trailer.Get("X-Checksum") != "abc" {
				t.Errorf("through %s: %v, trailer %v", e.c.ID(), r, r.resp.Trailer)
			}
		}
	})

	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		hc := b.goHead(b.newRequest(t, "GET", "demo.localhost", "/hang", nil).WithContext(ctx))
		resp := awaitHead(t, hc, 5*time.Second)
		defer resp.Body.Close()
		select {
		case <-up.started:
		case <-time.After(patience):
			t.Fatal("the upstream did not get the request")
		}
		cancel()
		select {
		case <-up.canceled:
		case <-time.After(patience):
			t.Fatal("the client's cancellation at B did not reach the upstream behind A")
		}
	})

	t.Run("abort", func(t *testing.T) {
		r := b.get(t, "demo.localhost", "/abort")
		if r.err == nil {
			t.Fatalf("an upstream abort through B ended as a complete response: %v", r)
		}
		if !errors.Is(r.err, io.ErrUnexpectedEOF) && !strings.Contains(r.err.Error(), "unexpected EOF") {
			t.Logf("abort seen as %v", r.err)
		}
	})
}

// The owning edge applies the tunnel's visitor rules (here sent by its
// agent, unknown to the other edges) with the visitor's address that the
// forwarding edge signed; a request with a forged signature is refused.
func TestClusterVisitorRulesAndForgery(t *testing.T) {
	_, edges := startCluster(t, 2, 0)
	a, b := edges[0], edges[1]
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	a.serveAgentConfig(t, tunnel.DialConfig{TunnelID: "guarded", Token: "T", Protocol: tunnel.ProtocolV2,
		Access: &tunnel.Access{BasicAuthUser: "u", BasicAuthBcrypt: string(hash), AllowCIDRs: []string{"127.0.0.2/32"}}}, newClusterUpstream())
	req := func(e member, auth bool) *http.Request {
		r := e.newRequest(t, "GET", "guarded.localhost", "/seen", nil)
		if auth {
			r.SetBasicAuth("u", "pw")
		}
		return r
	}
	allowed, other := clientFrom(t, "127.0.0.2"), clientFrom(t, "127.0.0.1")

	if r := send(allowed, req(b, true)); r.err != nil || r.resp.StatusCode != 200 || !strings.Contains(string(r.body), "xff=127.0.0.2 ") || strings.Contains(string(r.body), `auth="Basic`) {
		t.Errorf("allowed visitor with credentials through B: %v", r)
	}
	if r := send(allowed, req(b, false)); r.err != nil || r.resp.StatusCode != 401 {
		t.Errorf("allowed visitor without credentials through B: %v; want 401 from A", r)
	}
	if r := send(other, req(b, true)); r.err != nil || r.resp.StatusCode != 403 || r.resp.Header.Get("X-Sluice-Error") != "ip_not_allowed" {
		t.Errorf("a visitor from 127.0.0.1 through B (itself at 127.0.0.1): %v; want 403 ip_not_allowed", r)
	}

	// Forgeries, straight to A: a made-up signature, and one made with
	// another secret, both claiming the allowed address.
	stranger, err := cluster.New(cluster.Config{Redis: "redis://127.0.0.1:1/0", ID: "edge-b", Advertise: "http://127.0.0.1:1",
		Secret: []byte(strings.Repeat("x", cluster.MinSecretLen))})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	refused := metricValue(a.metrics(t), "sluice_cluster_refused_total")
	for name, sign := range map[string]func(*http.Request){
		"made up": func(r *http.Request) {
			r.Header.Set(cluster.Header, "v1;t="+strconv.FormatInt(time.Now().Unix(), 10)+";e=edge-b;a=127.0.0.2:1234;s=http;m=AAAA")
		},
		"other secret": func(r *http.Request) { stranger.Sign(r, "127.0.0.2:1234", false) },
	} {
		r := req(a, true)
		sign(r)
		if res := send(other, r); res.err != nil || res.resp.StatusCode != 403 || res.resp.Header.Get("X-Sluice-Error") != "bad_cluster_auth" {
			t.Errorf("%s signature: %v; want 403 bad_cluster_auth", name, res)
		}
		// B refuses it too rather than forward it.
		r = req(b, true)
		sign(r)
		if res := send(other, r); res.err != nil || res.resp.StatusCode != 403 || res.resp.Header.Get("X-Sluice-Error") != "bad_cluster_auth" {
			t.Errorf("%s signature, through B: %v; want 403 bad_cluster_auth", name, res)
		}
	}
	if n := metricValue(a.metrics(t), "sluice_cluster_refused_total"); n != refused+2 {
		t.Errorf("A's sluice_cluster_refused_total went from %v to %v, want +2", refused, n)
	}
}

// An edge that stops renewing (killed: it releases nothing) loses its
// names with its lease: then the others answer for the tunnel themselves,
// and forward nothing more to it, though it still serves the tunnel.
func TestClusterLeaseRunsOut(t *testing.T) {
	const lease = 1500 * time.Millisecond
	_, edges := startCluster(t, 2, lease)
	a, b := edges[0], edges[1]
	a.serveAgent(t, "demo", tunnel.ProtocolV2, newClusterUpstream())
	if r := b.get(t, "demo.localhost", "/seen"); r.err != nil || r.resp.StatusCode != 200 {
		t.Fatalf("through B: %v", r)
	}
	a.c.Close() // A's cluster dies; A itself and its agent stay
	stopped := time.Now()
	for {
		r := b.get(t, "demo.localhost", "/seen")
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.resp.StatusCode == 404 && r.resp.Header.Get("X-Sluice-Error") == "tunnel_not_found" {
			break
		}
		if r.resp.StatusCode != 200 || time.Since(stopped) > patience {
			t.Fatalf("through B, %v after A stopped renewing: %v; want 200 (its lease) then 404", time.Since(stopped), r)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(stopped)
	t.Logf("B stopped forwarding %v after A stopped renewing (lease %v)", took.Round(time.Millisecond), lease)
	if took > lease+patience/2 {
		t.Errorf("B forwarded for %v after A's last renewal, past its lease of %v", took, lease)
	}
	forwarded := metricValue(b.metrics(t), "sluice_cluster_forwarded_total")
	for range 5 {
		if r := b.get(t, "demo.localhost", "/seen"); r.err != nil || r.resp.StatusCode != 404 {
			t.Fatalf("through B after A's lease: %v; want 404", r)
		}
	}
	if n := metricValue(b.metrics(t), "sluice_cluster_forwarded_total"); n != forwarded {
		t.Errorf("B forwarded %v requests after A's lease ran out", n-forwarded)
	}
	if r := a.get(t, "demo.localhost", "/seen"); r.err != nil || r.resp.StatusCode != 200 {
		t.Errorf("straight to A: %v; want 200 (A still holds the agent)", r)
	}
}

// Redis stops mid-test: the tunnels held keep serving (a stream forwarded
// before goes on), /healthz and /metrics say degraded; Redis restarts
// (empty, same port): the routing table is rebuilt and forwarding works
// again.
func TestClusterRedisDown(t *testing.T) {
	const lease = 1500 * time.Millisecond
	rs, edges := startCluster(t, 2, lease)
	a, b := edges[0], edges[1]
	up := newClusterUpstream()
	a.serveAgent(t, "demo", tunnel.ProtocolV2, up)
	stream := awaitHead(t, b.goHead(b.newRequest(t, "GET", "demo.localhost", "/sse", nil)), 5*time.Second)
	defer stream.Body.Close()
	events := bufio.NewReader(stream.Body)
	nextEvent := func(i int) {
		t.Helper()
		up.next <- struct{}{}
		if line, err := events.ReadString('\n'); err != nil || line != fmt.Sprintf("data: event %d\n", i) {
			t.Fatalf("event %d: %q %v", i, line, err)
		}
		events.ReadString('\n')
	}
	nextEvent(0)

	rs.Stop()
	for _, e := range []member{a, b} {
		e.waitMetric(t, "sluice_cluster_degraded", 1, 10*time.Second)
		if r := e.get(t, "localhost", "/healthz"); r.err != nil || r.resp.StatusCode != 200 || !strings.HasPrefix(string(r.body), "degraded") {
			t.Errorf("%s's /healthz with Redis down: %v; want 200 degraded", e.c.ID(), r)
		}
	}
	nextEvent(1) // the stream forwarded before goes on
	for range 5 {
		if r := a.get(t, "demo.localhost", "/seen"); r.err != nil || r.resp.StatusCode != 200 {
			t.Fatalf("straight to A with Redis down: %v; want 200", r)
		}
	}
	// B forwards on its cached route until it runs out (CacheTTL from its
	// last lookup, which a quick run reaches sooner), then answers 503;
	// never on a route older than that (10 s: a ceiling for a busy machine).
	since := time.Now()
	testtool.Eventually(t, "B's 503 with Redis down", func() bool {
		r := b.get(t, "demo.localhost", "/seen")
		if r.err != nil || r.resp.StatusCode != 200 && r.resp.StatusCode != 503 ||
			r.resp.StatusCode == 200 && time.Since(since) > cluster.DefaultCacheTTL+10*time.Second {
			t.Fatalf("through B with Redis down: %v; want 503 cluster_unavailable once its cached route ran out", r)
		}
		return r.resp.StatusCode == 503 && r.resp.Header.Get("X-Sluice-Error") == "cluster_unavailable"
	})
	if n := strings.Count(a.clogs.String(), "cluster degraded"); n != 1 {
		t.Errorf("A logged %d degraded lines, want 1", n)
	}

	rs.Restart()
	for _, e := range []member{a, b} {
		e.waitMetric(t, "sluice_cluster_degraded", 0, 10*time.Second)
		if r := e.get(t, "localhost", "/healthz"); r.err != nil || !strings.HasPrefix(string(r.body), "ok\n") {
			t.Errorf("%s's /healthz with Redis back: %v", e.c.ID(), r)
		}
	}
	deadline := time.Now().Add(patience)
	for {
		r := b.get(t, "demo.localhost", "/seen")
		if r.err == nil && r.resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("through B after Redis came back: %v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
	nextEvent(2)
	if n := strings.Count(a.clogs.String(), "cluster healthy again"); n != 1 {
		t.Errorf("A logged %d healthy-again lines, want 1", n)
	}
}
