package edge

import (
	"crypto/subtle"
	"sync"
	"time"

	"github.com/sluicehq/sluice/tunnel"
)

// registry is the table of tunnels, owned by one mutex. A name is online
// while an agent session holds it. A second agent may take an online name
// only with the same token, and then replaces the first: the old session is
// closed in the background and the new one never waits for it. Names whose
// agent left are remembered for a while, so that their URL answers "agent
// offline" rather than "no such tunnel".
type registry struct {
	mu      sync.Mutex
	tunnels map[string]*entry
}

type entry struct {
	name    string
	token   string
	session tunnel.Session // nil while offline
	proxy   *proxy         // the public handler for session
	since   time.Time      // online since, or offline since
}

func newRegistry() *registry { return &registry{tunnels: make(map[string]*entry)} }

// claim installs session for name. It returns the session it replaced (to
// be closed by the caller), and ok false when the name is online with
// another token.
func (r *registry) claim(name, token string, session tunnel.Session, p *proxy) (old tunnel.Session, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.tunnels[name]
	if e != nil && e.session != nil && subtle.ConstantTimeCompare([]byte(e.token), []byte(token)) != 1 {
		return nil, false
	}
	if e != nil {
		old = e.session
	}
	r.tunnels[name] = &entry{name: name, token: token, session: session, proxy: p, since: time.Now()}
	return old, true
}

// release marks name offline if session still holds it, and reports
// whether it did (false when another session replaced it).
func (r *registry) release(name string, session tunnel.Session) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.tunnels[name]; e != nil && e.session == session {
		e.session, e.proxy, e.since = nil, nil, time.Now()
		return true
	}
	return false
}

// lookup returns the entry for name, or nil if the name is unknown (never
// seen, or offline for longer than memory).
func (r *registry) lookup(name string, memory time.Duration) *entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.tunnels[name]
	if e == nil {
		return nil
	}
	if e.session == nil && time.Since(e.since) > memory {
		delete(r.tunnels, name)
		return nil
	}
	c := *e
	return &c
}

// sessionsWhere returns the online sessions of the tunnels for which match
// is true (given the name and the agent's credential).
// match runs without the registry's lock (it may query the store).
func (r *registry) sessionsWhere(match func(name, token string) bool) []tunnel.Session {
	r.mu.Lock()
	var online []entry
	for _, e := range r.tunnels {
		if e.session != nil {
			online = append(online, *e)
		}
	}
	r.mu.Unlock()
	var out []tunnel.Session
	for _, e := range online {
		if match(e.name, e.token) {
			out = append(out, e.session)
		}
	}
	return out
}

// online returns the sessions online now.
func (r *registry) online() []tunnel.Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []tunnel.Session
	for _, e := range r.tunnels {
		if e.session != nil {
			out = append(out, e.session)
		}
	}
	return out
}
