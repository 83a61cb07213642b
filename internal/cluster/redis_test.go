package cluster

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/internal/testtool"
)

// The Redis table against a real redis-server.

// realMember runs a cluster member on rs until the test ends, with
// handler h if given.
func realMember(t *testing.T, rs *redistest.Server, id string, lease time.Duration, h ...Handler) *Cluster {
	t.Helper()
	return realMemberConfig(t, rs, Config{ID: id, Lease: lease, CacheTTL: -1}, h...)
}

// realMemberConfig runs a cluster member of configuration cfg (its Redis,
// advertise URL and secret filled in) on rs until the test ends.
func realMemberConfig(t *testing.T, rs *redistest.Server, cfg Config, h ...Handler) *Cluster {
	t.Helper()
	cfg.Redis, cfg.Advertise, cfg.Secret = rs.URL(0), "http://"+cfg.ID+".test:8080", testSecret
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range h {
		c.SetHandler(h)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		c.Close()
	})
	return c
}

func TestRedisTable(t *testing.T) {
	rs := redistest.Start(t)
	a := realMember(t, rs, "a", 3*time.Second)
	b := realMember(t, rs, "b", 3*time.Second)
	ctx := context.Background()
	testtool.Eventually(t, "in the peers table", func() bool { return !a.Degraded() && !b.Degraded() })

	// More names than one renewal script call takes: one pipeline.
	var claims []Claim
	for i := range 2*renewChunk + 7 {
		claims = append(claims, hold(a, "t"+strconv.Itoa(i)))
	}
	for _, n := range []string{"t0", "t" + strconv.Itoa(renewChunk), "t" + strconv.Itoa(2*renewChunk+6)} {
		r, err := b.Lookup(ctx, n)
		if err != nil || r != (Route{Edge: "a", URL: "http://a.test:8080"}) {
			t.Fatalf("Lookup(%s) = %+v, %v; want edge a", n, r, err)
		}
	}
	if _, err := b.Lookup(ctx, "nobody"); !errors.Is(err, ErrNoRoute) {
		t.Errorf("Lookup(nobody) = %v, want ErrNoRoute", err)
	}
	res, err := a.table.renew(ctx, "a", a.Advertise(), []string{"t1", "gone", "t4", "t6"}, []string{claims[1].value, "a 999", "a 1000", "a 1001"},
		[]bool{false, false, true, false}, time.Second*3)
	if err != nil || len(res) != 4 || res[0] != renewedRoute || res[1] != reclaimedRoute || res[2] != renewedRoute || res[3] != lostRoute {
		t.Fatalf("renew = %v, %v; want [renewed reclaimed renewed lost]", res, err)
	}
	if r, _ := a.table.lookup(ctx, "t4"); r.value != "a 1000" {
		t.Fatalf("a fresh claim in a renewal left the route %q, want it written", r.value)
	}

	// A claim is taken by the newest holder; the old holder's release
	// leaves it.
	hold(b, "t2")
	a.Release(claims[2])
	if r, err := a.Lookup(ctx, "t2"); err != nil || r.Edge != "b" {
		t.Fatalf("Lookup(t2) after B took it and A released = %+v, %v; want edge b", r, err)
	}
	a.Release(claims[3])
	if _, err := b.Lookup(ctx, "t3"); !errors.Is(err, ErrNoRoute) {
		t.Fatalf("Lookup(t3) after release = %v, want ErrNoRoute", err)
	}

	// Redis restarts, empty, and forgets the scripts: the next renewal
	// loads them again and writes every route back.
	rs.Restart()
	testtool.Eventually(t, "re-claimed after the restart", func() bool {
		r, err := b.Lookup(ctx, "t5")
		return err == nil && r.Edge == "a"
	})
	if _, err := b.Lookup(ctx, "t3"); !errors.Is(err, ErrNoRoute) {
		t.Errorf("a released route came back after the restart: %v", err)
	}
}

func TestRedisDown(t *testing.T) {
	rs := redistest.Start(t)
	a := realMember(t, rs, "a", 1500*time.Millisecond)
	ctx := context.Background()
	testtool.Eventually(t, "healthy", func() bool { return !a.Degraded() })
	hold(a, "demo")
	rs.Stop()
	testtool.Eventually(t, "degraded", a.Degraded)
	// Every wait is bounded: with Redis gone, calls fail within Timeout.
	t0 := time.Now()
	hold(a, "late")
	a.Release(hold(a, "brief"))
	if _, err := a.Lookup(ctx, "demo"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Lookup with Redis down = %v, want ErrUnavailable", err)
	}
	if d := time.Since(t0); d > 30*time.Second {
		t.Errorf("calls with Redis down took %v", d)
	}
	rs.Restart()
	testtool.Eventually(t, "healthy again", func() bool { return !a.Degraded() })
	for _, n := range []string{"demo", "late"} {
		if r, err := a.Lookup(ctx, n); err != nil || r.Edge != "a" {
			t.Errorf("Lookup(%s) after Redis restarted = %+v, %v", n, r, err)
		}
	}
}

func TestRedisLeaseRunsOut(t *testing.T) {
	rs := redistest.Start(t)
	a := realMember(t, rs, "a", time.Second)
	b := realMember(t, rs, "b", time.Second)
	ctx := context.Background()
	testtool.Eventually(t, "healthy", func() bool { return !a.Degraded() && !b.Degraded() })
	hold(a, "demo")
	testtool.Eventually(t, "routed", func() bool { // a call may outlast Timeout (Lease/3) on a loaded machine
		_, err := b.Lookup(ctx, "demo")
		return err == nil
	})
	a.Close() // dies: nothing released
	testtool.Eventually(t, "expired", func() bool {
		_, err := b.Lookup(ctx, "demo")
		return errors.Is(err, ErrNoRoute)
	})
}

func TestRedisURL(t *testing.T) {
	_, err := New(Config{Redis: "http://user:hunter2@127.0.0.1:6379/0", Advertise: "http://127.0.0.1:1", Secret: testSecret})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("New with a bad Redis URL = %v; want an error without the password", err)
	}
}

func TestSignature(t *testing.T) {
	a := newCluster(Config{ID: "a", Advertise: "http://a.test:1", Secret: testSecret}, newMemTable())
	other := newCluster(Config{ID: "x", Advertise: "http://x.test:1", Secret: []byte(strings.Repeat("o", MinSecretLen))}, newMemTable())
	signed := func(c *Cluster) *http.Request {
		r, _ := http.NewRequest("POST", "http://b.test:8080/p/a%2Fb?q=1", nil)
		r.Host = "demo.example.com"
		c.Sign(r, "203.0.113.7:4711", true)
		r.RequestURI = r.URL.RequestURI() // as the receiving server sees it
		return r
	}
	f, err := a.Verify(signed(a))
	if err != nil || f != (Forwarded{From: "a", RemoteAddr: "203.0.113.7:4711", TLS: true}) {
		t.Fatalf("Verify = %+v, %v", f, err)
	}
	for name, mut := range map[string]func(*http.Request){
		"other secret": func(r *http.Request) { r.Header = signed(other).Header },
		"other path":   func(r *http.Request) { r.RequestURI = "/admin" },
		"other host":   func(r *http.Request) { r.Host = "other.example.com" },
		"other method": func(r *http.Request) { r.Method = "GET" },
		"other visitor": func(r *http.Request) {
			r.Header.Set(Header, strings.Replace(r.Header.Get(Header), "203.0.113.7", "10.0.0.1", 1))
		},
		"stale": func(r *http.Request) {
			old := strconv.FormatInt(time.Now().Add(-2*MaxSkew).Unix(), 10)
			r.Header.Set(Header, "v1;t="+old+";e=a;a=203.0.113.7:4711;s=https;m="+a.mac(old, "a", "203.0.113.7:4711", "https", r.Method, r.Host, r.RequestURI))
		},
		"garbage": func(r *http.Request) { r.Header.Set(Header, "v1;trust-me") },
		"two":     func(r *http.Request) { r.Header.Add(Header, r.Header.Get(Header)) },
	} {
		r := signed(a)
		mut(r)
		if _, err := a.Verify(r); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: Verify = %v, want ErrBadSignature", name, err)
		}
	}
}

// The figures of "bench cluster", on a small table: each is there and
// plausible.
func TestMeasureTable(t *testing.T) {
	rs := redistest.Start(t)
	f, err := MeasureTable(context.Background(), rs.URL(1), 300, 4, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", f)
	if f.ClaimsPerSec <= 0 || f.LookupsPerSec <= 0 || f.RenewedPerSec <= 0 || f.LookupP99Ms < f.LookupP50Ms ||
		f.BytesPerRoute < 40 || f.RouteBytes < 40 || f.RouteBytes > 1000 {
		t.Errorf("implausible figures: %+v", f)
	}
}
