package edge

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/sluicehq/sluice/internal/errpage"
	"github.com/sluicehq/sluice/store"
	"github.com/sluicehq/sluice/wire"
	"golang.org/x/crypto/bcrypt"
)

// Visitor access per tunnel, from the store: a disabled tunnel answers
// 503, an IP allowlist (CIDRs) answers 403 to other addresses, and basic
// auth answers 401 without the right credentials. The rules of a tunnel
// are cached for accessTTL (the edge drops its cache entry itself when it
// changes the tunnel through its API; edges sharing a PostgreSQL store see
// each other's changes within the TTL).

const accessTTL = 5 * time.Second

type accessRules struct {
	found    bool // the store has the tunnel
	enabled  bool
	nets     []*net.IPNet
	user     string
	hash     []byte
	version  int64
	loadedAt time.Time

	mu   sync.Mutex
	good map[[32]byte]bool // credentials already checked against hash
}

type accessCache struct {
	mu    sync.Mutex
	rules map[string]*accessRules
}

func (c *accessCache) forget(name string) {
	c.mu.Lock()
	delete(c.rules, name)
	c.mu.Unlock()
}

// rules returns the access rules of tunnel name, from the cache or the
// store.
func (s *Server) rules(ctx context.Context, name string) (*accessRules, error) {
	c := &s.access
	c.mu.Lock()
	r := c.rules[name]
	c.mu.Unlock()
	if r != nil && time.Since(r.loadedAt) < accessTTL {
		return r, nil
	}
	t, err := s.cfg.Store.Tunnel(ctx, name)
	r = &accessRules{loadedAt: time.Now(), good: map[[32]byte]bool{}}
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
	c.mu.Lock()
	if c.rules == nil {
		c.rules = map[string]*accessRules{}
	}
	c.rules[name] = r
	c.mu.Unlock()
	return r, nil
}

// admit applies the tunnel's visitor rules to r; when it refuses, it has
// answered. An admitted request loses the visitor's basic-auth header,
// which was for the edge, not for the upstream.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, name string) bool {
	if s.cfg.Store == nil {
		return true
	}
	rules, err := s.rules(r.Context(), name)
	if err != nil {
		errpage.Write(w, r, http.StatusServiceUnavailable, wire.CodeStoreUnavailable, "Edge store unavailable",
			"the edge could not read the tunnel's settings; try again.")
		return false
	}
	if !rules.found {
		return true // a tunnel of an edge --token agent: no rules
	}
	if !rules.enabled {
		errpage.Write(w, r, http.StatusServiceUnavailable, wire.CodeTunnelDisabled, "Tunnel disabled",
			"the tunnel "+r.Host+" is disabled by its operator.")
		return false
	}
	if len(rules.nets) > 0 {
		host := s.clientIP(r)
		ip := net.ParseIP(host)
		allowed := false
		for _, n := range rules.nets {
			if ip != nil && n.Contains(ip) {
				allowed = true
				break
			}
		}
		if !allowed {
			errpage.Write(w, r, http.StatusForbidden, wire.CodeIPNotAllowed, "Address not allowed",
				"the tunnel "+r.Host+" admits visitors from listed networks only, and "+host+" is not in them.")
			return false
		}
	}
	if rules.user != "" {
		user, pass, ok := r.BasicAuth()
		if !ok || !rules.check(user, pass) {
			w.Header().Set("WWW-Authenticate", `Basic realm="`+name+`", charset="UTF-8"`)
			errpage.Write(w, r, http.StatusUnauthorized, wire.CodeVisitorAuth, "Authentication required",
				"the tunnel "+r.Host+" asks its visitors for a user name and password.")
			return false
		}
		r.Header.Del("Authorization")
	}
	return true
}

// check compares credentials with the tunnel's: bcrypt once per distinct
// credential and version, then from memory.
func (a *accessRules) check(user, pass string) bool {
	if subtle.ConstantTimeCompare([]byte(user), []byte(a.user)) != 1 {
		return false
	}
	key := sha256.Sum256([]byte(strconv.FormatInt(a.version, 10) + "\x00" + user + "\x00" + pass))
	a.mu.Lock()
	ok, seen := a.good[key]
	a.mu.Unlock()
	if seen {
		return ok
	}
	ok = bcrypt.CompareHashAndPassword(a.hash, []byte(pass)) == nil
	a.mu.Lock()
	if len(a.good) < 64 {
		a.good[key] = ok
	}
	a.mu.Unlock()
	return ok
}
