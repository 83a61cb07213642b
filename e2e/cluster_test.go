package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluicehq/sluice/internal/pgtest"
	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/internal/testtool"
)

// Issue 16: three "sluice edge" processes sharing the CI's PostgreSQL and
// one redis-server, behind HAProxy (round-robin, for the visitors and for
// the agents' WebSockets), as an operator would run them.

// clusterLease is the edges' --cluster-lease here: short, so that the
// SIGKILL part waits little for the dead edge's names to run out.
const clusterLease = 4 * time.Second

// haproxyConfig is the load balancer of docs/deploy.md, on loopback:
// round-robin over the edges, which it health-checks at /healthz, and a
// request refused by a dead edge is sent to another.
func haproxyConfig(port int, edges []*edgeProc) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
  maxconn 4000

defaults
  mode http
  timeout connect 2s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h
  option redispatch
  retries 3

frontend public
  bind 127.0.0.1:%d
  default_backend edges

backend edges
  balance roundrobin
  option httpchk GET /healthz
  default-server check inter 300ms fall 2 rise 2
`, port)
	for i, e := range edges {
		fmt.Fprintf(&b, "  server edge%d %s\n", i, e.addr)
	}
	return b.String()
}

// startHAProxy runs haproxy in front of edges on port and returns once
// it answers.
func startHAProxy(t *testing.T, port int, edges []*edgeProc) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(haproxyConfig(port, edges)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testtool.Need(t, "haproxy", "haproxy"), "-f", cfg, "-db")
	var out bytes.Buffer
	var mu sync.Mutex
	cmd.Stdout, cmd.Stderr = &lockedWriter{&mu, &out}, &lockedWriter{&mu, &out}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			mu.Lock()
			t.Logf("haproxy's output:\n%s", out.String())
			mu.Unlock()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, body, err := tryDo(http.DefaultClient, "GET", "http://127.0.0.1:"+strconv.Itoa(port)+"/healthz", nil, nil, 2*time.Second)
		if err == nil && resp.StatusCode == 200 && strings.HasPrefix(string(body), "ok") {
			return
		}
		select {
		case <-done:
			t.Fatalf("haproxy exited: %v", cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy on %d did not answer /healthz: %v %v", port, resp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// startClusterEdge starts one edge of the cluster with the contract's
// flags, advertising its own listener.
func startClusterEdge(t *testing.T, dsn, redisURL, secretFile string, publicPort int) *edgeProc {
	t.Helper()
	for attempt := 0; ; attempt++ {
		port := freePort(t)
		e, err := startEdgeAt(t, port, "T", "--store", dsn, "--admin-token", "A",
			"--cluster", redisURL, "--advertise", "http://127.0.0.1:"+strconv.Itoa(port), "--cluster-secret-file", secretFile,
			"--cluster-lease", clusterLease.String(), "--public-port", strconv.Itoa(publicPort))
		if err == nil {
			return e
		}
		if attempt == 4 {
			t.Fatalf("no free port for an edge: %v", err)
		}
	}
}

// edgeMetric reads series from the edge's /metrics (-1 if absent or the
// edge does not answer).
func edgeMetric(e *edgeProc, series string) float64 {
	resp, body, err := tryDo(http.DefaultClient, "GET", "http://"+e.addr+"/metrics", nil, nil, 5*time.Second)
	if err != nil || resp.StatusCode != 200 {
		return -1
	}
	return metricValue(string(body), series)
}

// clusterUpstream is the local server of every tunnel: its name at /,
// numbered events every 50 ms at /sse until the client leaves, a
// WebSocket echo at /ws, the pattern at /download?n=BYTES, and the
// CRC-32C and length of an upload at /upload.
func clusterUpstream(t *testing.T, name string) *testUpstream {
	u := newTestUpstream(t)
	u.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })
	u.mux.HandleFunc("/sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		rc := http.NewResponseController(w)
		rc.Flush()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			fmt.Fprintf(w, "id: %d\ndata: %s %d\n\n", i, name, i)
			if rc.Flush() != nil {
				return
			}
			select {
			case <-tick.C:
			case <-r.Context().Done():
				return
			case <-u.stop:
				return
			}
		}
	})
	u.mux.HandleFunc("/ws", wsEcho(make(chan int, 64)))
	u.mux.HandleFunc("/download", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		io.CopyN(w, &pattern{}, n)
	})
	u.mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		h := crc32.New(crcTable)
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "%d %08x", n, h.Sum32())
	})
	return u
}

// sseEvents reads a stream's data lines into a channel (closed at its
// end).
func sseEvents(body io.Reader) <-chan string {
	c := make(chan string, 1024)
	go func() {
		defer close(c)
		sc := bufio.NewScanner(body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				c <- d
			}
		}
	}()
	return c
}

// The whole issue-16 acceptance run, in order: routing through every
// edge, streams and transfers through a forwarded hop, a managed agent
// served from another edge's API call, an edge killed, Redis restarted.
func TestClusterBehindHAProxy(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	dsn := pgtest.Schema(t)
	secretFile := writeFile(t, "cluster-secret", strings.Repeat("0123456789abcdef", 4)+"\n")
	lbPort := freePort(t) // the edges' public port: their URLs name HAProxy
	var edges []*edgeProc
	for range 3 { // one at a time: the first migrates the store
		edges = append(edges, startClusterEdge(t, dsn, rs.URL(0), secretFile, lbPort))
	}
	// HAProxy on the port the edges' public URLs name.
	lb := &edgeProc{port: lbPort, addr: "127.0.0.1:" + strconv.Itoa(lbPort)}
	startHAProxy(t, lbPort, edges)
	c := tunnelClient(t, lb.addr)
	const tunnels = 6
	names := make([]string, tunnels)
	agents := make([]*proc, tunnels)
	for i := range tunnels {
		names[i] = "t" + strconv.Itoa(i)
		agents[i] = startAgent(t, lb, protocols[i%2], names[i], "T", clusterUpstream(t, names[i]).port)
	}
	held := func() []float64 {
		var out []float64
		for _, e := range edges {
			out = append(out, edgeMetric(e, "sluice_cluster_tunnels_held"))
		}
		return out
	}
	t.Logf("tunnels held per edge: %v", held())

	t.Run("every edge reaches every tunnel", func(t *testing.T) {
		var before []float64
		for _, e := range edges {
			before = append(before, edgeMetric(e, "sluice_cluster_forwarded_total"))
		}
		for i := range 300 {
			name := names[(i/3)%tunnels] // each tunnel three times in a row: to each edge
			resp, body, err := tryDo(c, "GET", lb.publicURL(name)+"/", nil, nil, 20*time.Second)
			if err != nil || resp.StatusCode != 200 || string(body) != name {
				t.Fatalf("request %d to %s through HAProxy: %v %q %v", i, name, resp, body, err)
			}
		}
		for i, e := range edges {
			n := edgeMetric(e, "sluice_cluster_forwarded_total") - before[i]
			t.Logf("edge %d forwarded %v of the 300 requests", i, n)
			if n < 1 {
				t.Errorf("edge %d forwarded none of the 300 requests (it holds %v tunnels of %d)", i, held()[i], tunnels)
			}
		}
	})

	// Three of each stream in a row through HAProxy: round-robin gives them
	// to the three edges, so at least two cross a forwarded hop (checked
	// with the edges' counters).
	forwarded := func() float64 {
		n := 0.0
		for _, e := range edges {
			n += edgeMetric(e, "sluice_cluster_forwarded_total")
		}
		return n
	}
	atLeastTwoForwarded := func(t *testing.T, what string, run func(t *testing.T)) {
		t.Helper()
		f0 := forwarded()
		for range 3 {
			run(t)
		}
		if n := forwarded() - f0; n < 2 {
			t.Errorf("%s: %v of 3 forwarded between edges, want 2 or more", what, n)
		}
	}

	t.Run("sse through a forwarded hop", func(t *testing.T) {
		atLeastTwoForwarded(t, "sse", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", lb.publicURL("t1")+"/sse", nil)
			resp, err := c.Do(req)
			if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("sse: %v %v", resp, err)
			}
			defer resp.Body.Close()
			events := sseEvents(resp.Body)
			for i := range 10 {
				if got, want := <-events, fmt.Sprintf("t1 %d", i); got != want {
					t.Fatalf("event %d: %q, want %q", i, got, want)
				}
			}
		})
	})

	t.Run("websocket through a forwarded hop", func(t *testing.T) {
		d := websocket.Dialer{
			NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, lb.addr)
			},
			HandshakeTimeout: 20 * time.Second,
		}
		atLeastTwoForwarded(t, "websocket", func(t *testing.T) {
			ws, _, err := d.Dial(fmt.Sprintf("ws://t2.localhost:%d/ws", lbPort), nil)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer ws.Close()
			ws.SetReadDeadline(time.Now().Add(time.Minute))
			for i := range 4 {
				msg := bytes.Repeat([]byte{byte('a' + i)}, 1<<(5*i)) // up to 32 KiB
				typ := websocket.BinaryMessage
				if i%2 == 0 {
					typ = websocket.TextMessage
				}
				if err := ws.WriteMessage(typ, msg); err != nil {
					t.Fatal(err)
				}
				gt, got, err := ws.ReadMessage()
				if err != nil || gt != typ || !bytes.Equal(got, msg) {
					t.Fatalf("echo %d: type %d, %d bytes, %v", i, gt, len(got), err)
				}
			}
		})
	})

	// 64 MiB each way here; the gibibyte through a forwarded hop is in
	// "go run ./bench/cmd/bench cluster" (it would double this test's time).
	const size = 64 << 20
	t.Run("download through a forwarded hop", func(t *testing.T) {
		want := patternSum(size)
		atLeastTwoForwarded(t, "download", func(t *testing.T) {
			resp, err := c.Get(lb.publicURL("t3") + "/download?n=" + strconv.Itoa(size))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			h := crc32.New(crcTable)
			n, err := io.Copy(h, resp.Body)
			if err != nil || n != size || h.Sum32() != want {
				t.Fatalf("download: %d bytes, crc %08x (want %08x), %v", n, h.Sum32(), want, err)
			}
		})
	})
	t.Run("upload through a forwarded hop", func(t *testing.T) {
		want := fmt.Sprintf("%d %08x", size, patternSum(size))
		atLeastTwoForwarded(t, "upload", func(t *testing.T) {
			req, _ := http.NewRequest("POST", lb.publicURL("t4")+"/upload", io.LimitReader(&pattern{}, size))
			req.ContentLength = size
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || string(body) != want {
				t.Fatalf("upload: %d %q %v; want %q", resp.StatusCode, body, err, want)
			}
		})
	})

	t.Run("managed agent served from another edge's API", func(t *testing.T) {
		admin := func(e *edgeProc) []string { return []string{"--edge", "http://" + e.addr, "--admin-token", "A"} }
		r := run(t, 20*time.Second, append([]string{"tokens", "create"}, admin(edges[0])...)...)
		secret := strings.TrimSpace(r.stdout)
		if r.code != 0 || secret == "" {
			t.Fatalf("tokens create: %d %q", r.code, r.stderr)
		}
		managed := startProc(t, "managed agent", "agent", "--edge", "http://"+lb.addr, "--token", secret)
		// Which edge HAProxy gave its push channel to: C; the tunnel is
		// created through the API of another edge, A.
		var cIdx = -1
		deadline := time.Now().Add(time.Minute)
		for cIdx < 0 {
			for i, e := range edges {
				if edgeMetric(e, "sluice_push_connections") == 1 {
					cIdx = i
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("the managed agent's push channel reached no edge\nagent: %s", managed.stderr)
			}
			time.Sleep(20 * time.Millisecond)
		}
		a := edges[(cIdx+1)%3]
		up := clusterUpstream(t, "managed")
		start := time.Now()
		r = run(t, 20*time.Second, append([]string{"tunnels", "create", "made", "--upstream", "http://127.0.0.1:" + strconv.Itoa(up.port), "--agent-token", secret}, admin(a)...)...)
		if r.code != 0 {
			t.Fatalf("tunnels create through edge %s: %d %q", a.addr, r.code, r.stderr)
		}
		for {
			resp, body, err := tryDo(c, "GET", lb.publicURL("made")+"/", nil, nil, 5*time.Second)
			if err == nil && resp.StatusCode == 200 && string(body) == "managed" {
				break
			}
			if time.Since(start) > time.Minute {
				t.Fatalf("made not served a minute after its creation: %v %q %v\nagent: %s", resp, body, err, managed.stderr)
			}
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(start)
		t.Logf("a tunnel created through edge %d's API was served by the managed agent pushed at edge %d %v later (the issue asks for 1 s; this includes the sluice tunnels process)", (cIdx+1)%3, cIdx, took.Round(time.Millisecond))
		if took > 15*time.Second {
			t.Errorf("the managed agent served the new tunnel %v after its creation", took)
		}
	})

	t.Run("edge killed", func(t *testing.T) {
		// The edge that holds the most tunnels dies with SIGKILL.
		h := held()
		dead := 0
		for i := range edges {
			if h[i] > h[dead] {
				dead = i
			}
		}
		if h[dead] < 1 {
			t.Fatalf("no edge holds a tunnel: %v", h)
		}
		edges[dead].kill()
		killed := time.Now()
		// Its agents reconnect through HAProxy to the others, and every
		// tunnel serves again.
		for _, name := range names {
			for {
				resp, body, err := tryDo(c, "GET", lb.publicURL(name)+"/", nil, nil, 5*time.Second)
				if err == nil && resp.StatusCode == 200 && string(body) == name {
					break
				}
				if time.Since(killed) > 2*time.Minute {
					t.Fatalf("%s does not serve %v after edge %d was killed: %v %q %v", name, time.Since(killed), dead, resp, body, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		t.Logf("edge %d (holding %v tunnels) killed: every tunnel served again through HAProxy after %v (lease %v)", dead, h[dead], time.Since(killed).Round(time.Millisecond), clusterLease)
		// Past its lease, nothing goes to the dead edge: every request
		// succeeds, and the others' forward errors stay put.
		time.Sleep(time.Until(killed.Add(clusterLease + time.Second)))
		live := []*edgeProc{}
		for i, e := range edges {
			if i != dead {
				live = append(live, e)
			}
		}
		errs := func() float64 {
			n := 0.0
			for _, e := range live {
				n += edgeMetric(e, "sluice_cluster_forward_errors_total")
			}
			return n
		}
		e0 := errs()
		for i := range 120 {
			name := names[i%tunnels]
			resp, body, err := tryDo(c, "GET", lb.publicURL(name)+"/", nil, nil, 20*time.Second)
			if err != nil || resp.StatusCode != 200 || string(body) != name {
				t.Fatalf("request %d to %s after the dead edge's lease: %v %q %v", i, name, resp, body, err)
			}
		}
		if n := errs() - e0; n != 0 {
			t.Errorf("%v requests forwarded to the dead edge after its lease", n)
		}
		edges = live
	})

	t.Run("redis restarted", func(t *testing.T) {
		// A stream through HAProxy, running through the restart.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", lb.publicURL("t5")+"/sse", nil)
		resp, err := c.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("sse: %v %v", resp, err)
		}
		defer resp.Body.Close()
		events := sseEvents(resp.Body)
		want := 0
		expect := func(n int) {
			t.Helper()
			for range n {
				select {
				case got, ok := <-events:
					if !ok || got != fmt.Sprintf("t5 %d", want) {
						t.Fatalf("stream: %q (open %v), want event %d", got, ok, want)
					}
					want++
				case <-time.After(20 * time.Second):
					t.Fatalf("stream: no event %d within 20 s", want)
				}
			}
		}
		expect(5)
		// Straight to one edge, bypassing HAProxy.
		probe := func(e *edgeProc, name string) (int, string) {
			resp, body, err := tryDo(tunnelClient(t, e.addr), "GET", lb.publicURL(name)+"/", nil, nil, 10*time.Second)
			if err != nil {
				return 0, err.Error()
			}
			return resp.StatusCode, resp.Header.Get("X-Sluice-Error") + " " + string(body)
		}
		rs.Stop()
		for _, e := range edges {
			testtool.Eventually(t, "edge "+e.addr+" degraded after Redis stopped", func() bool { return edgeMetric(e, "sluice_cluster_degraded") == 1 })
		}
		// Each tunnel is served by the edge that holds its agent; the
		// others say the routing table is unavailable (once the routes
		// they cached, for at most 500 ms, have run out).
		time.Sleep(2 * time.Second)
		holder := map[string]*edgeProc{}
		for _, name := range names {
			for _, e := range edges {
				code, what := probe(e, name)
				switch {
				case code == 200 && strings.HasSuffix(what, " "+name):
					if holder[name] == nil {
						holder[name] = e
					}
				case code == 503 && strings.HasPrefix(what, "cluster_unavailable"):
				default:
					t.Errorf("%s at edge %s with Redis down: %d %q", name, e.addr, code, what)
				}
			}
			if holder[name] == nil {
				t.Errorf("no edge serves %s with Redis down", name)
			}
		}
		expect(20) // a second of events while Redis is down
		for round := range 3 {
			for name, e := range holder {
				if code, what := probe(e, name); code != 200 {
					t.Errorf("round %d: %s at its holder %s with Redis down: %d %q", round, name, e.addr, code, what)
				}
			}
		}
		rs.Restart()
		for _, e := range edges {
			testtool.Eventually(t, "edge "+e.addr+" healthy after Redis came back", func() bool { return edgeMetric(e, "sluice_cluster_degraded") == 0 })
		}
		for name, e := range holder {
			if code, what := probe(e, name); code != 200 {
				t.Errorf("%s at its holder %s after Redis came back: %d %q", name, e.addr, code, what)
			}
		}
		expect(20) // the stream went on through it all
		// And through HAProxy every tunnel serves again from every edge
		// (the routing table rebuilt by the renewals).
		deadline := time.Now().Add(time.Minute)
		for _, name := range names {
			for _, e := range edges {
				for {
					code, what := probe(e, name)
					if code == 200 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("%s at edge %s a minute after Redis came back: %d %q", name, e.addr, code, what)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}
	})
}
