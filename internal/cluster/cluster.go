package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MinSecretLen is the least length of the cluster secret, in bytes.
const MinSecretLen = 32

// Defaults of Config.
const (
	DefaultLease    = 10 * time.Second
	DefaultTimeout  = time.Second
	DefaultCacheTTL = 500 * time.Millisecond
	// DefaultNegativeTTL is how long a name nobody holds is answered so
	// without asking Redis.
	DefaultNegativeTTL = time.Second
	// maxRetry is the longest wait between two attempts to reach Redis
	// while the cluster is degraded.
	maxRetry = time.Second
	// maxCached bounds the route cache (the names are a visitor's choice).
	maxCached = 4096
)

// Config configures a Cluster. Zero values mean the documented defaults.
type Config struct {
	// Redis is the URL of the Redis that holds the tables:
	// redis://[[USER]:PASSWORD@]HOST:PORT/DB, or rediss:// for TLS.
	Redis string
	// ID names this edge in the tables. Default: 16 random hex digits,
	// new at every start (an edge that restarts is a new edge).
	ID string
	// Advertise is the URL the other edges reach this edge at: http://
	// (HTTP/2 with prior knowledge) or https:// (HTTP/2 over TLS), a host
	// and port, no path.
	Advertise string
	// Secret authenticates the requests between edges (Sign, Verify); at
	// least MinSecretLen bytes, the same on every edge.
	Secret []byte
	// Lease is how long a claim lives without renewal: an edge that dies
	// loses its names, and its place in the peers table, this long after
	// its last renewal. Renewals come every Lease/3. Default 10 s.
	Lease time.Duration
	// Timeout bounds every call to Redis. Default 1 s, at most Lease/3.
	Timeout time.Duration
	// CacheTTL is how long a route looked up is used again without asking
	// Redis, and never past the leases Redis gave with it. Default 500 ms;
	// negative: no cache.
	CacheTTL time.Duration
	// NegativeTTL is how long a name that no edge holds is known as such
	// without asking Redis again (a visitor retrying a tunnel whose agent
	// is away costs one lookup per NegativeTTL per edge). A claim at any
	// edge ends it at every edge at once (its message), so a tunnel whose
	// agent connects is reached at once. Default 1 s; negative: none.
	NegativeTTL time.Duration
	// Logger receives the cluster's logs. Nil discards.
	Logger *slog.Logger
}

// Validate reports what is wrong with the configuration.
func (c *Config) Validate() error {
	if len(c.Secret) < MinSecretLen {
		return fmt.Errorf("cluster: the secret has %d bytes; at least %d are needed", len(c.Secret), MinSecretLen)
	}
	if err := validAdvertise(c.Advertise); err != nil {
		return err
	}
	if c.Lease < 0 || c.Timeout < 0 {
		return errors.New("cluster: the lease and the timeout must not be negative")
	}
	if c.ID != "" && strings.ContainsAny(c.ID, " \t\r\n") {
		return fmt.Errorf("cluster: edge id %q contains white space", c.ID)
	}
	return nil
}

// validAdvertise checks an advertise URL: http or https, a host and a
// port, nothing else.
func validAdvertise(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Port() == "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("cluster: the advertise URL %q is not http://HOST:PORT or https://HOST:PORT, the address other edges reach this edge at", s)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.ID == "" {
		b := make([]byte, 8)
		rand.Read(b)
		c.ID = hex.EncodeToString(b)
	}
	c.Advertise = strings.TrimSuffix(c.Advertise, "/")
	if c.Lease == 0 {
		c.Lease = DefaultLease
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	c.Timeout = min(c.Timeout, c.Lease/3)
	if c.CacheTTL == 0 {
		c.CacheTTL = DefaultCacheTTL
	}
	if c.NegativeTTL == 0 {
		c.NegativeTTL = DefaultNegativeTTL
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Cluster is this edge's membership in a cluster: its claims in the
// routing table, its place in the peers table, route lookups, and the
// transport and signatures of requests between edges. New does no I/O;
// Run renews the leases until its context ends; Close ends Run and closes
// the connections, releasing nothing (the leases run out, as when the edge
// dies), while Leave releases everything first. All methods are safe for
// concurrent use.
type Cluster struct {
	cfg   Config
	table table
	tr    *transport

	mu      sync.Mutex        // guards held, pending and gen
	held    map[string]string // name -> the value of this edge's claim
	pending map[string]bool   // held names whose claim is not written yet (Redis was unreachable)
	gen     uint64            // the last claim's fencing number

	degraded atomic.Bool
	cache    routeCache
	wake     chan struct{} // a renewal is wanted now (a claim failed)
	handler  Handler       // set before Run (SetHandler)

	closeOnce sync.Once
	closed    chan struct{}
}

// Route is where a tunnel is held: the edge's id and advertise URL.
type Route struct {
	Edge string
	URL  string
}

// New returns a cluster member for cfg, or the reason cfg is not usable.
func New(cfg Config) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t, err := newRedisTable(cfg.Redis, cfg.withDefaults().Timeout)
	if err != nil {
		return nil, err
	}
	return newCluster(cfg, t), nil
}

func newCluster(cfg Config, t table) *Cluster {
	cfg = cfg.withDefaults()
	return &Cluster{cfg: cfg, table: t, tr: newTransport(), held: map[string]string{}, pending: map[string]bool{},
		wake: make(chan struct{}, 1), closed: make(chan struct{}), handler: nopHandler{}}
}

// Handler is what the edge does with the cluster's news. Its methods are
// called from the cluster's goroutines (renewals, messages), possibly at
// once, and must not block for long.
type Handler interface {
	// Lost: another edge has claimed name, which this edge held until
	// then (its agent connected there): this edge must let go of its
	// session.
	Lost(name string)
	// Message is a message another edge published (Publish).
	Message(kind string, data []byte)
	// Resync: messages may have been missed (the subscription to Redis
	// broke and was made again): the edge forgets what they could have
	// changed.
	Resync()
}

type nopHandler struct{}

func (nopHandler) Lost(string)            {}
func (nopHandler) Message(string, []byte) {}
func (nopHandler) Resync()                {}

// SetHandler sets what the edge does with the cluster's news; it must be
// called before Run.
func (c *Cluster) SetHandler(h Handler) { c.handler = h }

// ID is this edge's id.
func (c *Cluster) ID() string { return c.cfg.ID }

// Advertise is this edge's advertise URL.
func (c *Cluster) Advertise() string { return c.cfg.Advertise }

// Lease is the lease of claims.
func (c *Cluster) Lease() time.Duration { return c.cfg.Lease }

// Degraded reports whether the routing table could not be reached at the
// last attempt.
func (c *Cluster) Degraded() bool { return c.degraded.Load() }

// Held is the number of names this edge holds.
func (c *Cluster) Held() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.held)
}

// Transport is the RoundTripper for requests to other edges: HTTP/2 over
// one pooled connection per peer, HTTP/1.1 for upgrades.
func (c *Cluster) Transport() http.RoundTripper { return c.tr }

// Claim is a name held by this edge, to give back to Release.
type Claim struct {
	name, value string
}

// Holder says who claims a name: the agent's credential, and whether the
// store gives the name to it.
type Holder struct {
	// Token is the agent's credential. Only a keyed digest of it is
	// written to Redis (holderOf): a claim names its holder so that
	// another edge can tell an agent with the same token (which takes the
	// name over) from one with another token (refused).
	Token string
	// Owner: the store gives the name to Token; an owner takes the name
	// from anyone.
	Owner bool
}

// Hold claims name for this edge, taking it from any other edge whose
// claim is for the same token (the newest agent wins), or from anyone for
// the name's owner, and keeps renewing it until Release. Another edge's
// live claim for another token is not taken: ErrTaken. Every edge hears
// of the claim (their cached routes of name go, and the edge that held it
// lets go of its agent). Hold waits for Redis at most Timeout, and not at
// all while the cluster is degraded: a claim that could not be written is
// written by the next renewal, unconditionally.
func (c *Cluster) Hold(ctx context.Context, name string, h Holder) (Claim, error) {
	c.mu.Lock()
	c.gen++
	v := c.cfg.ID + " " + strconv.FormatUint(c.gen, 10) + " " + c.holderOf(h.Token)
	c.held[name] = v
	c.pending[name] = true
	c.mu.Unlock()
	c.cache.drop(name)
	if c.Degraded() {
		return Claim{name, v}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	prev, err := c.table.claim(ctx, c.cfg.ID, c.cfg.Advertise, name, v, h.Owner, c.envelope(kindClaim, claimMsg{Name: name}), c.cfg.Lease)
	switch {
	case errors.Is(err, ErrTaken):
		c.mu.Lock()
		if c.held[name] == v {
			delete(c.held, name)
			delete(c.pending, name)
		}
		c.mu.Unlock()
		return Claim{}, fmt.Errorf("%w (by edge %s)", ErrTaken, edgeOf(prev))
	case err != nil:
		c.cfg.Logger.Debug("cluster: claim failed; the next renewal writes it", "tunnel", name, "err", err)
		select {
		case c.wake <- struct{}{}:
		default:
		}
	default:
		c.written(name, v)
		if prev != "" && edgeOf(prev) != c.cfg.ID {
			c.cfg.Logger.Info("cluster: tunnel taken over from another edge", "tunnel", name, "from", edgeOf(prev))
		}
	}
	return Claim{name, v}, nil
}

// holderOf is the digest of an agent's credential in claims: keyed with
// the cluster secret, so that Redis holds nothing to try tokens against.
func (c *Cluster) holderOf(token string) string {
	return c.mac("holder", token)[:22]
}

// written notes that the claim value of name is in the table.
func (c *Cluster) written(name, value string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held[name] == value {
		delete(c.pending, name)
	}
}

// Release gives cl's name back, unless a newer claim of this edge holds
// it: the route is deleted only if it is still cl's (compare-and-delete).
// It waits for Redis at most Timeout; a release that fails leaves the
// route to run out with its lease.
func (c *Cluster) Release(cl Claim) {
	if cl.name == "" {
		return
	}
	c.mu.Lock()
	if c.held[cl.name] != cl.value {
		c.mu.Unlock()
		return
	}
	delete(c.held, cl.name)
	delete(c.pending, cl.name)
	c.mu.Unlock()
	if c.Degraded() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	if err := c.table.release(ctx, cl.name, cl.value); err != nil {
		c.cfg.Logger.Debug("cluster: release failed; the route runs out with its lease", "tunnel", cl.name, "err", err)
	}
}

// Lookup returns the live edge that holds name: ErrNoRoute if none does
// (never an edge whose lease ran out), ErrUnavailable if Redis cannot tell
// now. A route to this edge itself is returned as any other.
func (c *Cluster) Lookup(ctx context.Context, name string) (Route, error) {
	if e, ok := c.cache.get(name); ok {
		if e.none {
			return Route{}, ErrNoRoute
		}
		return e.r, nil
	}
	if c.Degraded() {
		return Route{}, ErrUnavailable
	}
	t0 := time.Now()
	epoch := c.cache.begin()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	got, err := c.table.lookup(ctx, name)
	switch {
	case err != nil:
		return Route{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	case got.value == "" || got.url == "" || got.ttl <= 0 || got.peerTTL <= 0:
		// Unclaimed, or its edge left the peers table.
		if c.cfg.NegativeTTL > 0 {
			c.cache.put(name, cachedRoute{none: true, until: t0.Add(c.cfg.NegativeTTL)}, epoch)
		}
		return Route{}, ErrNoRoute
	}
	r := Route{Edge: edgeOf(got.value), URL: got.url}
	if c.cfg.CacheTTL > 0 {
		c.cache.put(name, cachedRoute{r: r, until: t0.Add(min(got.ttl, got.peerTTL, c.cfg.CacheTTL))}, epoch)
	}
	return r, nil
}

// Forget drops name's cached route (a forward to it failed).
func (c *Cluster) Forget(name string) { c.cache.drop(name) }

// Run renews this edge's claims and its place in the peers table every
// Lease/3 (every second at most while degraded), and receives the other
// edges' messages, until ctx ends or the cluster is closed. It returns nil
// then.
func (c *Cluster) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	if rt, ok := c.table.(*redisTable); ok {
		wg.Go(func() { c.listen(ctx, rt) })
	}
	every := c.cfg.Lease / 3
	for {
		c.renew(ctx)
		wait := every
		if c.Degraded() {
			wait = min(every, maxRetry)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-c.closed:
			t.Stop()
			return nil
		case <-c.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// renew runs one renewal: every held name, and the peers entry, in one
// batch.
func (c *Cluster) renew(ctx context.Context) {
	c.mu.Lock()
	names := make([]string, 0, len(c.held))
	values := make([]string, 0, len(c.held))
	var fresh []bool
	for n, v := range c.held {
		names, values, fresh = append(names, n), append(values, v), append(fresh, c.pending[n])
	}
	c.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	res, err := c.table.renew(rctx, c.cfg.ID, c.cfg.Advertise, names, values, fresh, c.cfg.Lease)
	if err != nil {
		if ctx.Err() != nil {
			return // stopping: not a change of state
		}
		if !c.degraded.Swap(true) {
			c.cfg.Logger.Warn("cluster degraded: the routing table (Redis) cannot be reached; serving the tunnels held here, not the others", "err", err)
		}
		return
	}
	reclaimed := 0
	for i, r := range res {
		if fresh[i] {
			c.written(names[i], values[i])
		}
		switch r {
		case reclaimedRoute:
			reclaimed++
		case lostRoute:
			c.mu.Lock()
			mine := c.held[names[i]] == values[i]
			if mine {
				delete(c.held, names[i])
			}
			c.mu.Unlock()
			if mine {
				c.cfg.Logger.Info("cluster: another edge claimed a tunnel held here", "tunnel", names[i])
				c.handler.Lost(names[i])
			}
		}
	}
	if c.degraded.Swap(false) {
		c.cfg.Logger.Info("cluster healthy again: the routing table (Redis) answers", "reclaimed", reclaimed, "held", len(names))
	} else if reclaimed > 0 {
		c.cfg.Logger.Info("cluster: routes re-claimed (they had run out, or Redis restarted)", "reclaimed", reclaimed)
	}
}

// Leave gives back every name held here and this edge's place in the
// peers table (a graceful stop), waiting for Redis at most Timeout.
func (c *Cluster) Leave(ctx context.Context) error {
	c.mu.Lock()
	names := make([]string, 0, len(c.held))
	values := make([]string, 0, len(c.held))
	for n, v := range c.held {
		names, values = append(names, n), append(values, v)
	}
	clear(c.held)
	clear(c.pending)
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	if err := c.table.leave(ctx, c.cfg.ID, c.cfg.Advertise, names, values); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	return nil
}

// Close ends Run and closes the connections to Redis and to the other
// edges. The claims are not released: they run out with their leases.
// It is idempotent.
func (c *Cluster) Close() error {
	var err error
	c.closeOnce.Do(func() {
		close(c.closed)
		c.tr.close()
		err = c.table.close()
	})
	return err
}

// edgeOf is the edge id of a claim's value "EDGEID GEN HOLDER".
func edgeOf(value string) string {
	id, _, _ := strings.Cut(value, " ")
	return id
}

// routeCache keeps looked-up routes, and names no edge holds, until their
// deadline; one mutex owns it. It holds at most maxCached names: when
// full, the expired ones go, and if none has, all of them. An answer read
// from Redis is cached only if no entry was dropped since the lookup
// began (epoch): a claim heard meanwhile may have made it stale.
type routeCache struct {
	mu    sync.Mutex
	m     map[string]cachedRoute
	epoch uint64 // drops so far
}

type cachedRoute struct {
	r     Route
	none  bool // no edge holds the name
	until time.Time
}

func (rc *routeCache) get(name string) (cachedRoute, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	e, ok := rc.m[name]
	if !ok {
		return cachedRoute{}, false
	}
	if !time.Now().Before(e.until) {
		delete(rc.m, name)
		return cachedRoute{}, false
	}
	return e, true
}

// begin returns the epoch to give to put after a lookup.
func (rc *routeCache) begin() uint64 {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.epoch
}

func (rc *routeCache) put(name string, e cachedRoute, epoch uint64) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if epoch != rc.epoch {
		return
	}
	if rc.m == nil {
		rc.m = map[string]cachedRoute{}
	}
	if len(rc.m) >= maxCached {
		now := time.Now()
		for n, e := range rc.m {
			if !now.Before(e.until) {
				delete(rc.m, n)
			}
		}
		if len(rc.m) >= maxCached {
			clear(rc.m)
		}
	}
	rc.m[name] = e
}

func (rc *routeCache) drop(name string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	delete(rc.m, name)
	rc.epoch++
}

// reset drops every entry (claims may have been missed).
func (rc *routeCache) reset() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	clear(rc.m)
	rc.epoch++
}

// len is the number of entries, expired or not.
func (rc *routeCache) len() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.m)
}

// table is the store of the routing and peers tables: Redis (redis.go),
// or an in-memory one in the tests of the timing logic.
type table interface {
	// claim sets name's route to value for lease and returns the value it
	// replaced ("" if none), unless the route is another holder's and not
	// force: then it returns that route's value and ErrTaken. It sets the
	// peers entry of edge to url (so that the route leads somewhere before
	// the first renewal), and publishes msg (an envelope) once the route
	// is written.
	claim(ctx context.Context, edge, url, name, value string, force bool, msg []byte, lease time.Duration) (prev string, err error)
	// route reads name's route ("" if none).
	route(ctx context.Context, name string) (string, error)
	// renew extends each name's lease if its route is still values[i],
	// writes it again if it has none, and reports lostRoute if another
	// claim holds it; a fresh[i] claim (never written) is written whatever
	// the route is, as claim does. It sets the peers entry of edge to url,
	// for lease.
	renew(ctx context.Context, edge, url string, names, values []string, fresh []bool, lease time.Duration) ([]renewResult, error)
	// release deletes name's route if it is value.
	release(ctx context.Context, name, value string) error
	// publish sends an envelope to the edges' channel.
	publish(ctx context.Context, msg []byte) error
	// lookup reads name's route and its edge's URL, with what remains of
	// both leases.
	lookup(ctx context.Context, name string) (found, error)
	// leave releases names (as release) and deletes edge's peers entry if
	// it is url.
	leave(ctx context.Context, edge, url string, names, values []string) error
	close() error
}

type renewResult int

const (
	renewedRoute   renewResult = iota // the lease was extended
	reclaimedRoute                    // the route had gone, and was written again
	lostRoute                         // another claim holds the name
)

// found is a route read from the table: value "" when there is none; url
// "" when its edge has no peers entry.
type found struct {
	value   string
	ttl     time.Duration
	url     string
	peerTTL time.Duration
}
