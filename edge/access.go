package edge

import (
	"container/list"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/internal/errpage"
	"github.com/sluicehq/sluice/store"
	"github.com/sluicehq/sluice/tunnel"
	"github.com/sluicehq/sluice/wire"
	"golang.org/x/crypto/bcrypt"
)

// Visitor access per tunnel, from the store (or, for an ad-hoc tunnel,
// from its agent's register frame: adhocAccess): a disabled tunnel answers
// 503, an IP allowlist (CIDRs) answers 403 to other addresses, and basic
// auth answers 401 without the right credentials. The rules of a tunnel
// are cached for accessTTL (the edge drops its cache entry itself when it
// changes the tunnel through its API, and tells the other edges of its
// cluster, which drop theirs: fanout.go; edges sharing a PostgreSQL store
// without a cluster see each other's changes within the TTL).
//
// Every key here can be chosen by a visitor (a name, an address, a
// password), so every table is bounded (issue 11):
//   - the rules of at most maxAccessEntries tunnels, least recently used
//     first out;
//   - a name that is not stored costs no store query per request: the
//     edge keeps the set of stored names (one list query per accessTTL at
//     most, and only when a name it does not know is asked for);
//   - failed basic-auth attempts: authFailBurst per address and tunnel,
//     then one per authFailEvery (429 with Retry-After), in a table of at
//     most maxAuthFailKeys;
//   - bcrypt runs: at most half the CPUs at once across the edge, so that
//     guessing at one tunnel cannot take every CPU from the others; a
//     visitor's right credentials are remembered (a SHA-256 of version,
//     user and password, never the password) for maxGoodCredentials per
//     tunnel, so that they cost bcrypt once.

const (
	accessTTL        = 5 * time.Second
	maxAccessEntries = 4096

	authFailBurst   = 10
	authFailEvery   = 6 * time.Second // 10 per minute once the burst is spent
	maxAuthFailKeys = 16384

	maxGoodCredentials = 64
)

// initAccess readies the access tables of a new Server: bcrypt checks
// run at most half the CPUs (at least one) at once.
func (s *Server) initAccess() {
	s.bcrypt = make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2))
	s.access.queries = func(kind string) { s.metrics.accessQueries.WithLabelValues(kind).Inc() }
}

type accessRules struct {
	found    bool // the store has the tunnel
	enabled  bool
	nets     []*net.IPNet
	user     string
	hash     []byte
	version  int64
	loadedAt time.Time

	mu   sync.Mutex
	good map[[32]byte]bool // right credentials already checked against hash
}

// notStored are the rules of a name the store does not have.
var notStored = &accessRules{}

// accessCache is the edge's cache of visitor rules, owned by its mutex
// (refreshes of the name set are one at a time, under refreshMu).
type accessCache struct {
	mu    sync.Mutex
	lru   *list.List // of *accessEntry, most recently used first
	index map[string]*list.Element

	names      map[string]bool // the stored names, as of namesAt
	namesAt    time.Time
	namesStale bool // a name was created or deleted here since namesAt
	refreshMu  sync.Mutex

	// queries counts store queries (for the metric and tests).
	queries func(kind string)
}

type accessEntry struct {
	name  string
	rules *accessRules
}

func (c *accessCache) get(name string) *accessRules {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.index[name]; el != nil {
		c.lru.MoveToFront(el)
		return el.Value.(*accessEntry).rules
	}
	return nil
}

func (c *accessCache) put(name string, r *accessRules) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lru == nil {
		c.lru, c.index = list.New(), make(map[string]*list.Element)
	}
	if el := c.index[name]; el != nil {
		el.Value.(*accessEntry).rules = r
		c.lru.MoveToFront(el)
		return
	}
	c.index[name] = c.lru.PushFront(&accessEntry{name: name, rules: r})
	for c.lru.Len() > maxAccessEntries {
		old := c.lru.Remove(c.lru.Back()).(*accessEntry)
		delete(c.index, old.name)
	}
}

// len is how many tunnels' rules are cached.
func (c *accessCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lru == nil {
		return 0
	}
	return c.lru.Len()
}

// forget drops name's rules; the edge calls it when it changed the tunnel
// (create, update, delete), which also makes the set of names stale.
func (c *accessCache) forget(name string) {
	c.mu.Lock()
	if el := c.index[name]; el != nil {
		c.lru.Remove(el)
		delete(c.index, name)
	}
	c.namesStale = true
	c.mu.Unlock()
}

// reset drops every cached rule and makes the set of names stale (the
// changes of other edges may have been missed).
func (c *accessCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lru != nil {
		c.lru.Init()
		clear(c.index)
	}
	c.namesStale = true
}

// stored reports whether name may be a stored tunnel, from the set of
// stored names, refreshed when older than accessTTL. ok is false when the
// set could not be had (the caller then asks the store for name).
func (c *accessCache) stored(ctx context.Context, st *store.Store, name string) (maybe, ok bool) {
	fresh := func() (bool, bool) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.names == nil || c.namesStale || time.Since(c.namesAt) >= accessTTL {
			return false, false
		}
		return c.names[name], true
	}
	if maybe, ok := fresh(); ok {
		return maybe, true
	}
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	if maybe, ok := fresh(); ok { // another request refreshed it
		return maybe, true
	}
	c.mu.Lock()
	c.namesStale = false // changes from now on make the new set stale
	c.mu.Unlock()
	c.queries("list")
	ts, err := st.Tunnels(ctx, "")
	if err != nil {
		c.mu.Lock()
		c.namesStale = true
		c.mu.Unlock()
		return false, false
	}
	names := make(map[string]bool, len(ts))
	for _, t := range ts {
		names[t.Name] = true
	}
	c.mu.Lock()
	c.names, c.namesAt = names, time.Now()
	c.mu.Unlock()
	return names[name], true
}

// rules returns the access rules of tunnel name, from the cache or the
// store.
func (s *Server) rules(ctx context.Context, name string) (*accessRules, error) {
	c := &s.access
	if r := c.get(name); r != nil && time.Since(r.loadedAt) < accessTTL {
		return r, nil
	}
	if maybe, ok := c.stored(ctx, s.cfg.Store, name); ok && !maybe {
		return notStored, nil
	}
	c.queries("tunnel")
	t, err := s.cfg.Store.Tunnel(ctx, name)
	r := &accessRules{loadedAt: time.Now(), good: map[[32]byte]bool{}}
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		r.found, r.enabled, r.user, r.hash, r.version = true, t.Enabled, t.BasicAuthUser, []byte(t.BasicAuthHash), t.Version
		for _, cidr := range t.AllowCIDRs {
			if _, n, err := net.ParseCIDR(cidr); err == nil {
				r.nets = append(r.nets, n)
			}
		}
	}
	c.put(name, r)
	return r, nil
}

// admit applies the tunnel's visitor rules to r; when it refuses, it has
// answered. The rules are the stored tunnel's, else those its agent sent
// at registration (e, the registry's entry for name, may be nil). An
// admitted request loses the visitor's basic-auth header, which was for
// the edge, not for the upstream.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, name string, e *entry) bool {
	rules, err := s.visitorRules(r.Context(), name, e)
	if err != nil {
		errpage.Write(w, r, http.StatusServiceUnavailable, wire.CodeStoreUnavailable, "Edge store unavailable",
			"the edge could not read the tunnel's settings; try again.")
		return false
	}
	if rules == nil {
		return true // an ad-hoc tunnel without rules
	}
	if !rules.enabled {
		errpage.Write(w, r, http.StatusServiceUnavailable, wire.CodeTunnelDisabled, "Tunnel disabled",
			"the tunnel "+r.Host+" is disabled by its operator.")
		return false
	}
	host := s.clientIP(r)
	if !rules.allows(host) {
		errpage.Write(w, r, http.StatusForbidden, wire.CodeIPNotAllowed, "Address not allowed",
			"the tunnel "+r.Host+" admits visitors from listed networks only, and "+host+" is not in them.")
		return false
	}
	if rules.user != "" {
		user, pass, ok := r.BasicAuth()
		failKey := host + "\x00" + name
		if ok {
			if wait := s.authFails.blocked(failKey); wait > 0 {
				w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
				errpage.Write(w, r, http.StatusTooManyRequests, wire.CodeAuthRateLimited, "Too many failed attempts",
					"too many wrong user names or passwords for "+r.Host+" from "+host+"; try again later.")
				return false
			}
		}
		if !ok || !s.checkCredentials(r.Context(), rules, user, pass) {
			if ok {
				s.authFails.fail(failKey)
			}
			w.Header().Set("WWW-Authenticate", `Basic realm="`+name+`", charset="UTF-8"`)
			errpage.Write(w, r, http.StatusUnauthorized, wire.CodeVisitorAuth, "Authentication required",
				"the tunnel "+r.Host+" asks its visitors for a user name and password.")
			return false
		}
		r.Header.Del("Authorization")
	}
	return true
}

// visitorRules returns the visitor rules of tunnel name: the stored
// tunnel's, else those its agent sent at registration (e, the registry's
// entry for name, may be nil), else nil (anyone is admitted).
func (s *Server) visitorRules(ctx context.Context, name string, e *entry) (*accessRules, error) {
	rules := notStored
	if s.cfg.Store != nil {
		var err error
		if rules, err = s.rules(ctx, name); err != nil {
			return nil, err
		}
	}
	if rules.found {
		return rules, nil
	}
	if e == nil || e.access == nil {
		return nil, nil
	}
	return e.access, nil
}

// allows reports whether the visitor at ip (text) may come in by the
// rules' networks (any address when there are none).
func (a *accessRules) allows(ip string) bool {
	if len(a.nets) == 0 {
		return true
	}
	addr := net.ParseIP(ip)
	for _, n := range a.nets {
		if addr != nil && n.Contains(addr) {
			return true
		}
	}
	return false
}

// Bounds on the visitor rules an agent sends for an ad-hoc tunnel: its
// bcrypt hash costs at most what the edge's own hashes cost (every check
// of a new password runs it, within the edge's shared bcrypt slots), and
// its list of networks is short (each request scans it).
const (
	maxAdhocBcryptCost = bcrypt.DefaultCost
	maxAdhocCIDRs      = 100
)

// adhocAccess checks the visitor rules an agent sent for tunnel name (nil
// if none) and returns them ready for admit. A stored tunnel (owner) has
// its own rules, which win: rules sent for it are refused rather than
// ignored, so that the agent's user does not believe them enforced.
func adhocAccess(a *tunnel.Access, owner bool, name string) (*accessRules, error) {
	if a == nil {
		return nil, nil
	}
	refuse := func(code, msg string) error { return &tunnel.RegisterError{Code: code, Message: msg} }
	if owner {
		return nil, refuse(wire.CodeAccessStored, fmt.Sprintf("tunnel %q is stored at this edge: its visitor rules are the stored ones (sluice tunnels update --basic-auth, --allow); start the agent without visitor rules", name))
	}
	r := &accessRules{found: true, enabled: true, user: a.BasicAuthUser, good: map[[32]byte]bool{}}
	if (a.BasicAuthUser == "") != (a.BasicAuthBcrypt == "") {
		return nil, refuse(wire.CodeBadAccess, "basic auth needs both basic_auth_user and basic_auth_bcrypt")
	}
	if strings.Contains(a.BasicAuthUser, ":") {
		return nil, refuse(wire.CodeBadAccess, "basic_auth_user cannot contain ':'")
	}
	if a.BasicAuthBcrypt != "" {
		r.hash = []byte(a.BasicAuthBcrypt)
		cost, err := bcrypt.Cost(r.hash)
		if err != nil {
			return nil, refuse(wire.CodeBadAccess, "basic_auth_bcrypt is not a bcrypt hash")
		}
		if cost > maxAdhocBcryptCost {
			return nil, refuse(wire.CodeBadAccess, fmt.Sprintf("basic_auth_bcrypt has cost %d; this edge accepts at most %d", cost, maxAdhocBcryptCost))
		}
	}
	if len(a.AllowCIDRs) > maxAdhocCIDRs {
		return nil, refuse(wire.CodeBadAccess, fmt.Sprintf("allow_cidrs has %d networks; this edge accepts at most %d", len(a.AllowCIDRs), maxAdhocCIDRs))
	}
	for _, c := range a.AllowCIDRs {
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			return nil, refuse(wire.CodeBadAccess, fmt.Sprintf("allow_cidrs: %q is not a CIDR such as 10.0.0.0/8", c))
		}
		r.nets = append(r.nets, n)
	}
	return r, nil
}

// checkCredentials compares credentials with the tunnel's, with the same
// work for a wrong user name as for a wrong password (no timing oracle):
// credentials seen right before are answered from memory, any others cost
// one bcrypt run, at most cap(s.bcrypt) at once across the edge.
func (s *Server) checkCredentials(ctx context.Context, a *accessRules, user, pass string) bool {
	key := sha256.Sum256([]byte(strconv.FormatInt(a.version, 10) + "\x00" + user + "\x00" + pass))
	a.mu.Lock()
	good := a.good[key]
	a.mu.Unlock()
	if good {
		return true
	}
	select {
	case s.bcrypt <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	passOK := bcrypt.CompareHashAndPassword(a.hash, []byte(pass)) == nil
	<-s.bcrypt
	s.metrics.bcryptRuns.Inc()
	userOK := subtle.ConstantTimeCompare([]byte(user), []byte(a.user)) == 1
	if !passOK || !userOK {
		return false
	}
	a.mu.Lock()
	if len(a.good) >= maxGoodCredentials {
		clear(a.good)
	}
	a.good[key] = true
	a.mu.Unlock()
	return true
}

// authFailures limits failed basic-auth attempts per key (address and
// tunnel): a token bucket of authFailBurst, refilled one per
// authFailEvery, in an LRU of at most maxAuthFailKeys keys. One mutex owns
// it.
type authFailures struct {
	mu    sync.Mutex
	lru   *list.List // of *failBucket, most recently failed first
	index map[string]*list.Element
}

type failBucket struct {
	key    string
	tokens float64
	at     time.Time
}

// refill brings b's tokens up to now.
func (b *failBucket) refill(now time.Time) {
	b.tokens = min(authFailBurst, b.tokens+float64(now.Sub(b.at))/float64(authFailEvery))
	b.at = now
}

// blocked returns how long key must wait before its next attempt, or 0.
func (f *authFailures) blocked(key string) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	el := f.index[key]
	if el == nil {
		return 0
	}
	b := el.Value.(*failBucket)
	b.refill(time.Now())
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - b.tokens) * float64(authFailEvery))
}

// fail takes one token from key's bucket.
func (f *authFailures) fail(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lru == nil {
		f.lru, f.index = list.New(), make(map[string]*list.Element)
	}
	now := time.Now()
	el := f.index[key]
	if el == nil {
		el = f.lru.PushFront(&failBucket{key: key, tokens: authFailBurst, at: now})
		f.index[key] = el
		for f.lru.Len() > maxAuthFailKeys {
			old := f.lru.Remove(f.lru.Back()).(*failBucket)
			delete(f.index, old.key)
		}
	}
	f.lru.MoveToFront(el)
	b := el.Value.(*failBucket)
	b.refill(now)
	b.tokens = max(0, b.tokens-1)
}
