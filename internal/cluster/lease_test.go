package cluster

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// The lease and renewal logic, on fake time (testing/synctest) and an
// in-memory table with Redis's semantics (keys that expire); the Redis
// table itself is tested against a real redis-server (redis_test.go).

// memTable is a table in memory. down makes every call fail, as an
// unreachable Redis; wipe empties it, as a Redis restarted without
// persistence.
type memTable struct {
	mu      sync.Mutex
	keys    map[string]memKey
	down    bool
	renews  int // renewal calls (batches)
	lookups int
}

type memKey struct {
	value   string
	expires time.Time
}

var errDown = errors.New("memTable: down")

func newMemTable() *memTable { return &memTable{keys: map[string]memKey{}} }

func (m *memTable) getLocked(k string) (memKey, bool) {
	e, ok := m.keys[k]
	if ok && !time.Now().Before(e.expires) {
		delete(m.keys, k)
		return memKey{}, false
	}
	return e, ok
}

func (m *memTable) setDown(d bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.down = d
}

func (m *memTable) wipe() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.keys)
}

// value returns name's route value, "" if none.
func (m *memTable) value(name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, _ := m.getLocked(routePrefix + name)
	return e.value
}

func (m *memTable) renewals() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.renews
}

func (m *memTable) claim(ctx context.Context, edge, url, name, value string, force bool, msg []byte, lease time.Duration) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return "", errDown
	}
	m.keys[peerPrefix+edge] = memKey{url, time.Now().Add(lease)}
	prev, _ := m.getLocked(routePrefix + name)
	if last := func(v string) string { return v[strings.LastIndex(v, " ")+1:] }; prev.value != "" && !force && last(prev.value) != last(value) {
		return prev.value, ErrTaken
	}
	m.keys[routePrefix+name] = memKey{value, time.Now().Add(lease)}
	return prev.value, nil
}

func (m *memTable) renew(ctx context.Context, edge, url string, names, values []string, fresh []bool, lease time.Duration) ([]renewResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return nil, errDown
	}
	m.renews++
	now := time.Now()
	m.keys[peerPrefix+edge] = memKey{url, now.Add(lease)}
	out := make([]renewResult, len(names))
	for i, n := range names {
		e, ok := m.getLocked(routePrefix + n)
		switch {
		case fresh[i] || ok && e.value == values[i]:
			out[i] = renewedRoute
		case !ok:
			out[i] = reclaimedRoute
		default:
			out[i] = lostRoute
			continue
		}
		m.keys[routePrefix+n] = memKey{values[i], now.Add(lease)}
	}
	return out, nil
}

func (m *memTable) release(ctx context.Context, name, value string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return errDown
	}
	if e, ok := m.getLocked(routePrefix + name); ok && e.value == value {
		delete(m.keys, routePrefix+name)
	}
	return nil
}

func (m *memTable) lookup(ctx context.Context, name string) (found, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lookups++
	if m.down {
		return found{}, errDown
	}
	e, ok := m.getLocked(routePrefix + name)
	if !ok {
		return found{}, nil
	}
	now := time.Now()
	f := found{value: e.value, ttl: e.expires.Sub(now), peerTTL: -2 * time.Millisecond}
	if p, ok := m.getLocked(peerPrefix + edgeOf(e.value)); ok {
		f.url, f.peerTTL = p.value, p.expires.Sub(now)
	}
	return f, nil
}

func (m *memTable) leave(ctx context.Context, edge, url string, names, values []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return errDown
	}
	for i, n := range names {
		if e, ok := m.getLocked(routePrefix + n); ok && e.value == values[i] {
			delete(m.keys, routePrefix+n)
		}
	}
	delete(m.keys, peerPrefix+edge)
	return nil
}

func (m *memTable) route(ctx context.Context, name string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return "", errDown
	}
	e, _ := m.getLocked(routePrefix + name)
	return e.value, nil
}

// publish: the edges' messages are tested on a real Redis (bus_test.go).
func (m *memTable) publish(ctx context.Context, msg []byte) error { return nil }

func (m *memTable) close() error { return nil }

// hold claims name for the empty token (every test claim has the same
// holder: the newest takes the name).
func hold(c *Cluster, name string) Claim {
	cl, err := c.Hold(context.Background(), name, Holder{})
	if err != nil {
		panic(err)
	}
	return cl
}

// logCount counts log records by level and message start.
type logCount struct {
	mu sync.Mutex
	n  map[string]int
}

func (l *logCount) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCount) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == nil {
		l.n = map[string]int{}
	}
	msg, _, _ := strings.Cut(r.Message, ":")
	l.n[r.Level.String()+" "+msg]++
	return nil
}
func (l *logCount) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCount) WithGroup(string) slog.Handler      { return l }
func (l *logCount) count(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n[key]
}

// recorder is a Handler that notes what it hears.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) note(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, s)
}
func (r *recorder) Lost(name string)                 { r.note("lost " + name) }
func (r *recorder) Message(kind string, data []byte) { r.note(kind + " " + string(data)) }
func (r *recorder) Resync()                          { r.note("resync") }
func (r *recorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

var testSecret = []byte(strings.Repeat("s", MinSecretLen))

// member runs a cluster member named id on table t in the synctest
// bubble, until the test ends, with handler h if given.
func member(t *testing.T, tab table, id string, mut func(*Config), h ...Handler) (*Cluster, *logCount) {
	t.Helper()
	logs := &logCount{}
	cfg := Config{ID: id, Advertise: "http://" + id + ".test:8080", Secret: testSecret, Lease: 9 * time.Second, Logger: slog.New(logs)}
	if mut != nil {
		mut(&cfg)
	}
	c := newCluster(cfg, tab)
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
	synctest.Wait()
	return c, logs
}

func TestLeaseRenewedInBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab := newMemTable()
		a, _ := member(t, tab, "a", nil)
		for i := range 100 {
			hold(a, "t"+strconv.Itoa(i))
		}
		start := tab.renewals()
		// Ten leases: every name stays, renewed every Lease/3 in one batch
		// for all of them (not one call per name).
		time.Sleep(10 * a.Lease())
		synctest.Wait()
		for i := range 100 {
			if v := tab.value("t" + strconv.Itoa(i)); edgeOf(v) != "a" {
				t.Fatalf("t%d's route after ten leases = %q, want edge a's", i, v)
			}
		}
		if got := tab.renewals() - start; got != 30 {
			t.Errorf("%d renewal batches in ten leases, want 30 (one per Lease/3)", got)
		}
		if r, err := a.Lookup(context.Background(), "t7"); err != nil || r.Edge != "a" || r.URL != "http://a.test:8080" {
			t.Errorf("Lookup(t7) = %+v, %v", r, err)
		}
	})
}

func TestDeadEdgeLosesItsNames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab := newMemTable()
		a, _ := member(t, tab, "a", nil)
		b, _ := member(t, tab, "b", func(c *Config) { c.CacheTTL = time.Hour }) // the cache must still end with the lease
		hold(a, "demo")
		r, err := b.Lookup(context.Background(), "demo")
		if err != nil || r.Edge != "a" {
			t.Fatalf("Lookup = %+v, %v; want edge a", r, err)
		}
		// A dies: it renews no more, and releases nothing.
		time.Sleep(time.Second)
		a.Close()
		died := time.Now()
		for {
			_, err := b.Lookup(context.Background(), "demo")
			if errors.Is(err, ErrNoRoute) {
				break
			}
			if err != nil {
				t.Fatalf("Lookup: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Gone with A's lease (its last renewal was at most Lease/3
		// before it died), and not a moment later.
		if gone := time.Since(died); gone > a.Lease() || gone < a.Lease()-a.Lease()/3-time.Second {
			t.Errorf("the route went %v after A died, want within its lease of %v", gone, a.Lease())
		}
	})
}

func TestReleaseIsCompareAndDelete(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab := newMemTable()
		a, _ := member(t, tab, "a", nil)
		b, _ := member(t, tab, "b", nil)
		old := hold(a, "demo")
		cur := hold(a, "demo") // the agent reconnected here
		a.Release(old)         // the old session ended late
		if edgeOf(tab.value("demo")) != "a" {
			t.Fatalf("an old claim's release deleted the newer claim's route: %q", tab.value("demo"))
		}
		hold(b, "demo") // the agent moved to B
		a.Release(cur)  // A's session ends after that
		if edgeOf(tab.value("demo")) != "b" {
			t.Fatalf("A's release deleted B's claim: route %q", tab.value("demo"))
		}
		own := hold(b, "mine")
		b.Release(own)
		if v := tab.value("mine"); v != "" {
			t.Fatalf("route after release = %q, want none", v)
		}
		time.Sleep(2 * b.Lease())
		synctest.Wait()
		if v := tab.value("mine"); v != "" {
			t.Fatalf("a released route came back with a renewal: %q", v)
		}
	})
}

func TestLostToAnotherEdge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab := newMemTable()
		h := &recorder{}
		a, _ := member(t, tab, "a", nil, h)
		b, _ := member(t, tab, "b", nil)
		hold(a, "demo")
		hold(a, "other")
		hold(b, "demo")
		time.Sleep(a.Lease() / 3)
		synctest.Wait()
		if lost := h.get(); len(lost) != 1 || lost[0] != "lost demo" {
			t.Errorf("the handler got %q, want [lost demo]", lost)
		}
		if a.Held() != 1 || edgeOf(tab.value("demo")) != "b" || edgeOf(tab.value("other")) != "a" {
			t.Errorf("after the renewal: A holds %d names, demo -> %q, other -> %q", a.Held(), tab.value("demo"), tab.value("other"))
		}
	})
}

func TestDegradedAndReconciled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab := newMemTable()
		a, logs := member(t, tab, "a", nil)
		b, _ := member(t, tab, "b", func(c *Config) { c.CacheTTL = -1 })
		hold(a, "demo")
		if _, err := b.Lookup(context.Background(), "demo"); err != nil {
			t.Fatal(err)
		}

		tab.setDown(true)
		time.Sleep(a.Lease() / 3)
		synctest.Wait()
		if !a.Degraded() || !b.Degraded() {
			t.Fatalf("Redis down for a renewal period: degraded a=%v b=%v, want both", a.Degraded(), b.Degraded())
		}
		if _, err := b.Lookup(context.Background(), "demo"); !errors.Is(err, ErrUnavailable) {
			t.Errorf("Lookup while degraded: %v, want ErrUnavailable", err)
		}
		hold(a, "late") // an agent arrives meanwhile: no wait
		// Down for many retries: said once.
		time.Sleep(3 * a.Lease())
		synctest.Wait()
		if n := logs.count("WARN cluster degraded"); n != 1 {
			t.Errorf("%d degraded warnings, want 1 (once per change of state)", n)
		}

		// Redis restarts, empty: the next attempt (within a second while
		// degraded) re-claims every name held.
		tab.wipe()
		tab.setDown(false)
		time.Sleep(maxRetry)
		synctest.Wait()
		if a.Degraded() || b.Degraded() {
			t.Fatalf("Redis back: degraded a=%v b=%v", a.Degraded(), b.Degraded())
		}
		for _, n := range []string{"demo", "late"} {
			if r, err := b.Lookup(context.Background(), n); err != nil || r.Edge != "a" {
				t.Errorf("Lookup(%s) after Redis came back = %+v, %v; want edge a", n, r, err)
			}
		}
		if n := logs.count("INFO cluster healthy again"); n != 1 {
			t.Errorf("%d healthy-again lines, want 1", n)
		}
	})
}

// A name nobody holds is answered from the cache for NegativeTTL (one
// Redis lookup per period, however many visitors ask), in a bounded
// cache; this edge's own claim ends it at once.
func TestNegativeCache(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab := newMemTable()
		b, _ := member(t, tab, "b", nil)
		lookups := func() int {
			tab.mu.Lock()
			defer tab.mu.Unlock()
			return tab.lookups
		}
		for range 10 {
			if _, err := b.Lookup(context.Background(), "away"); !errors.Is(err, ErrNoRoute) {
				t.Fatalf("Lookup(away) = %v, want ErrNoRoute", err)
			}
		}
		if n := lookups(); n != 1 {
			t.Errorf("%d table lookups for 10 of a name nobody holds, want 1", n)
		}
		time.Sleep(DefaultNegativeTTL)
		b.Lookup(context.Background(), "away")
		if n := lookups(); n != 2 {
			t.Errorf("%d table lookups after NegativeTTL, want 2", n)
		}
		hold(b, "away") // the agent connected here
		if r, err := b.Lookup(context.Background(), "away"); err != nil || r.Edge != "b" {
			t.Errorf("Lookup(away) right after this edge's claim = %+v, %v", r, err)
		}
		// Names are a visitor's choice: the cache stays bounded.
		for i := range 3 * maxCached {
			b.Lookup(context.Background(), "n"+strconv.Itoa(i))
		}
		if n := b.cache.len(); n > maxCached {
			t.Errorf("%d names cached, want at most %d", n, maxCached)
		}
	})
}

func TestLeave(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab := newMemTable()
		a, _ := member(t, tab, "a", nil)
		b, _ := member(t, tab, "b", nil)
		hold(a, "demo")
		if err := a.Leave(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Lookup(context.Background(), "demo"); !errors.Is(err, ErrNoRoute) {
			t.Errorf("Lookup after A left: %v, want ErrNoRoute", err)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"short secret", Config{Secret: []byte("short"), Advertise: "http://127.0.0.1:1"}, "at least 32"},
		{"no advertise", Config{Secret: testSecret}, "advertise URL"},
		{"advertise path", Config{Secret: testSecret, Advertise: "http://127.0.0.1:1/x"}, "advertise URL"},
		{"advertise no port", Config{Secret: testSecret, Advertise: "http://edge-a"}, "advertise URL"},
		{"advertise scheme", Config{Secret: testSecret, Advertise: "ws://127.0.0.1:1"}, "advertise URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want an error with %q", err, tc.want)
			}
		})
	}
	ok := Config{Secret: testSecret, Advertise: "https://10.0.0.5:8443/"}
	if err := ok.Validate(); err != nil {
		t.Errorf("Validate(%+v) = %v", ok, err)
	}
}

// A claim made while Redis was unreachable is written by the first
// renewal that reaches it, over a stale claim of a dead edge: the agent is
// here now.
func TestPendingClaimWinsOverStaleRoute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tab := newMemTable()
		x, _ := member(t, tab, "x", nil)
		a, _ := member(t, tab, "a", nil)
		hold(x, "demo")
		x.Close() // x dies holding demo; its lease runs on
		tab.setDown(true)
		time.Sleep(a.Lease() / 3)
		synctest.Wait()
		hold(a, "demo") // the agent reconnected to a, which cannot write it
		tab.setDown(false)
		time.Sleep(maxRetry)
		synctest.Wait()
		if a.Degraded() || a.Held() != 1 || edgeOf(tab.value("demo")) != "a" {
			t.Fatalf("after Redis came back: degraded %v, a holds %d, route %q; want a's", a.Degraded(), a.Held(), tab.value("demo"))
		}
		time.Sleep(a.Lease())
		synctest.Wait()
		if edgeOf(tab.value("demo")) != "a" || a.Held() != 1 {
			t.Fatalf("a lease later: route %q, a holds %d", tab.value("demo"), a.Held())
		}
	})
}
