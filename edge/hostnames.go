package edge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/api"
	"github.com/sluicehq/sluice/store"
)

// Custom hostnames: a stored tunnel may be reached, besides at
// NAME.DOMAIN, at hostnames of its own (sluice tunnels create|update
// --hostname app.example.com), which the store keeps, one tunnel each. A
// request whose Host is one goes to its tunnel exactly as NAME.DOMAIN does
// (visitor rules, limits, metrics), and the upstream sees that hostname
// (Host and X-Forwarded-Host). A hostname under DOMAIN is refused: names
// there are tunnel names.
//
// Every Host and SNI name is a visitor's choice, so unknown ones must cost
// no store query each: the edge keeps the whole map of stored hostnames
// (hostname -> tunnel), read in one query at most every accessTTL and only
// when asked, like the set of stored names of the access rules. Its size
// is the store's, which an admin sets; a visitor's names add nothing to it.
// The API makes it stale when it changes a tunnel (create, update,
// delete), at every edge of a cluster (fanout.go); edges sharing a
// PostgreSQL store without a cluster see each other's changes within
// accessTTL.

// maxHostnames bounds a tunnel's custom hostnames (each may cost a
// certificate).
const maxHostnames = 100

// hostCache is the edge's map of custom hostnames, owned by its mutex;
// refreshes are one at a time, under refreshMu.
type hostCache struct {
	mu    sync.Mutex
	hosts map[string]string // hostname -> tunnel, as of at; nil before the first read
	at    time.Time
	stale bool // a tunnel was changed here since at

	refreshMu sync.Mutex
}

// changed makes the map stale: the edge calls it when it changes a
// tunnel through its API.
func (c *hostCache) changed() {
	c.mu.Lock()
	c.stale = true
	c.mu.Unlock()
}

// lookup answers from the map if it is fresh.
func (c *hostCache) lookup(host string) (name string, found, fresh bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hosts == nil || c.stale || time.Since(c.at) >= accessTTL {
		return "", false, false
	}
	name, found = c.hosts[host]
	return name, found, true
}

// hostTunnel returns the stored tunnel whose custom hostname host is (in
// any case, with or without a trailing dot, without a port). ok is false
// for any other host, among them every name under DOMAIN; err says that
// the store could not be read.
func (s *Server) hostTunnel(ctx context.Context, host string) (name string, ok bool, err error) {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if s.cfg.Store == nil || !store.ValidHostname(host) || s.underDomain(host) {
		return "", false, nil
	}
	c := &s.hosts
	if name, found, fresh := c.lookup(host); fresh {
		return name, found, nil
	}
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	if name, found, fresh := c.lookup(host); fresh { // another request refreshed it
		return name, found, nil
	}
	c.mu.Lock()
	c.stale = false // changes from now on make the new map stale
	c.mu.Unlock()
	s.access.queries("hostnames")
	hosts, err := s.cfg.Store.Hostnames(ctx)
	if err != nil {
		c.changed()
		// The map could not be had: ask for this one host.
		s.access.queries("hostname")
		t, err := s.cfg.Store.TunnelByHostname(ctx, host)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return "", false, nil
		case err != nil:
			return "", false, err
		}
		return t.Name, true, nil
	}
	c.mu.Lock()
	c.hosts, c.at = hosts, time.Now()
	c.mu.Unlock()
	name, ok = hosts[host]
	return name, ok, nil
}

// underDomain reports whether host is the edge's domain or under it.
func (s *Server) underDomain(host string) bool {
	return host == s.cfg.Domain || strings.HasSuffix(host, "."+s.cfg.Domain)
}

// checkHostnames returns the custom hostnames asked for, normalized
// (lowercase, without a trailing dot), or what is wrong with them.
func (s *Server) checkHostnames(in []string) (out []string, code, msg string) {
	if len(in) > maxHostnames {
		return nil, api.CodeBadHostname, fmt.Sprintf("hostnames: %d given; a tunnel has at most %d", len(in), maxHostnames)
	}
	out = make([]string, 0, len(in))
	for _, h := range in {
		n := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
		switch {
		case !store.ValidHostname(n):
			return nil, api.CodeBadHostname, fmt.Sprintf("hostname %q is not a DNS name such as app.example.com (two labels or more of letters, digits and '-')", h)
		case s.underDomain(n):
			return nil, api.CodeBadHostname, fmt.Sprintf("hostname %q is under this edge's domain %s, where tunnels are reached by name (NAME.%s): name the tunnel instead", h, s.cfg.Domain, s.cfg.Domain)
		}
		out = append(out, n)
	}
	return out, "", ""
}

// publicHostKey is the context key of the custom hostname a public
// request came for (absent for NAME.DOMAIN).
type publicHostKey struct{}

// withPublicHost marks r as a request for the custom hostname host.
func withPublicHost(r *http.Request, host string) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), publicHostKey{}, host))
}

// publicHost is the host the visitor reached p's tunnel at: its custom
// hostname, or NAME.DOMAIN.
func (p *proxy) publicHost(ctx context.Context) string {
	if h, ok := ctx.Value(publicHostKey{}).(string); ok {
		return h
	}
	return p.host
}
