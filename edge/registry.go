package edge

import (
	"crypto/subtle"
	"sync"
	"time"

	"github.com/sluicehq/sluice/tunnel"
)

// registry is the table of tunnels, owned by one mutex.
//
// A name is online while an agent session holds it, and belongs to the
// token of that session. When the agent leaves, the name stays reserved for
// its token for the offline-memory period: its URL answers "agent offline"
// rather than "no such tunnel", and no other token may take it (so that an
// agent that drops for a moment finds its name again). The same token takes
// an online or reserved name at once and replaces the session holding it
// (the old session is closed in the background; the new one never waits
// for it). The stored owner of a name (its tunnel in the store) takes it
// from anyone.
//
// An admin's decision (a tunnel created, re-owned, deleted or disabled, a
// token revoked) ends the sessions it concerns at once (end): they are
// detached from their names, which keep the reason (their URL answers it)
// and no reservation.
type registry struct {
	mu        sync.Mutex
	tunnels   map[string]*entry
	memory    time.Duration // how long an offline name is remembered
	decisions uint64        // admin decisions so far (see end)
}

type entry struct {
	name    string
	token   string         // the holder's credential; "" when an admin ended it
	session tunnel.Session // nil while offline
	proxy   *proxy         // the public handler for session
	since   time.Time      // online since, or offline since
	ended   string         // the wire code of the admin's decision that ended it, or ""
	access  *accessRules   // the visitor rules the agent sent (an ad-hoc tunnel), or nil; kept while offline
}

func newRegistry(memory time.Duration) *registry {
	return &registry{tunnels: make(map[string]*entry), memory: memory}
}

// claimResult is the registry's answer to a claim.
type claimResult int

const (
	claimed       claimResult = iota
	claimTaken                // the name is online with another token
	claimReserved             // the name is offline, reserved for another token
	claimDecided              // an admin decided something since the claimant was authorized: authorize again
)

// decision returns a mark to give to claim: a claim made after an admin's
// decision (which the claimant's authorization may not have seen) is
// refused with claimDecided.
func (r *registry) decision() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.decisions
}

// claim installs session for name, for token. owner says that the store
// gives the name to token: an owner takes the name from anyone. access is
// the visitor rules the agent sent, or nil. It returns the session it
// replaced (to be retired by the caller).
func (r *registry) claim(name, token string, owner bool, mark uint64, session tunnel.Session, p *proxy, access *accessRules) (old tunnel.Session, res claimResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !owner && mark != r.decisions {
		return nil, claimDecided
	}
	e := r.tunnels[name]
	if e != nil && !owner && !r.freeLocked(e, token) {
		if e.session == nil {
			return nil, claimReserved
		}
		return nil, claimTaken
	}
	if e != nil {
		old = e.session
	}
	r.tunnels[name] = &entry{name: name, token: token, session: session, proxy: p, since: time.Now(), access: access}
	return old, claimed
}

// mayClaim reports whether a claim of name for token (owner: see claim)
// would be granted now.
func (r *registry) mayClaim(name, token string, owner bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.tunnels[name]
	return e == nil || owner || r.freeLocked(e, token)
}

// freeLocked reports whether token may take e's name: e is held or
// reserved by the same token, or ended by an admin, or forgotten.
func (r *registry) freeLocked(e *entry, token string) bool {
	switch {
	case e.token == "":
		return true
	case subtle.ConstantTimeCompare([]byte(e.token), []byte(token)) == 1:
		return true
	case e.session == nil && time.Since(e.since) > r.memory:
		return true
	}
	return false
}

// release marks name offline if session still holds it, and reports
// whether it did (false when another session replaced it, or an admin
// ended it).
func (r *registry) release(name string, session tunnel.Session) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.tunnels[name]; e != nil && e.session == session {
		e.session, e.proxy, e.since = nil, nil, time.Now()
		return true
	}
	return false
}

// drop detaches the session holding name, if any, and returns it (to be
// retired by the caller): the name's agent connected to another edge of
// the cluster. The name stays reserved for its token as when its agent
// leaves.
func (r *registry) drop(name string) tunnel.Session {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.tunnels[name]
	if e == nil || e.session == nil {
		return nil
	}
	old := e.session
	e.session, e.proxy, e.since = nil, nil, time.Now()
	return old
}

// lookup returns a copy of the entry for name, or nil if the name is
// unknown (never seen, or offline for longer than memory).
func (r *registry) lookup(name string) *entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.tunnels[name]
	if e == nil {
		return nil
	}
	if e.session == nil && time.Since(e.since) > r.memory {
		delete(r.tunnels, name)
		return nil
	}
	c := *e
	return &c
}

// end applies an admin's decision: every entry, online or offline, for
// which match is true (given the name and the holder's credential) is
// detached from its session, loses its reservation and keeps code as the
// reason. It returns the sessions detached, for the caller to retire.
// match runs without the registry's lock (it may query the store).
func (r *registry) end(match func(name, token string) bool, code string) []tunnel.Session {
	r.mu.Lock()
	r.decisions++
	var all []*entry
	var creds []entry
	for _, e := range r.tunnels {
		if e.token != "" {
			all = append(all, e)
			creds = append(creds, entry{name: e.name, token: e.token})
		}
	}
	r.mu.Unlock()
	var hit []*entry
	for i, c := range creds {
		if match(c.name, c.token) {
			hit = append(hit, all[i])
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []tunnel.Session
	for _, e := range hit {
		if r.tunnels[e.name] != e {
			continue // replaced meanwhile by a new claim, made after the decision
		}
		if e.session != nil {
			out = append(out, e.session)
		}
		e.session, e.proxy, e.token, e.ended, e.since = nil, nil, "", code, time.Now()
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
