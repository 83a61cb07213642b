// Package reqctx is the context of a request served by one of sluice's
// own servers (the edge's HTTP/1.1 server, the agent's HTTP/2 server),
// whose end the clients below them watch cheaply.
//
// Every request through the tunnel has its context watched: at the edge
// the HTTP/2 client resets the request's stream when the visitor's request
// ends; at the agent the HTTP/1.1 client closes the local server's
// connection when the stream is reset. context.AfterFunc does that at a
// cost per request: an afterFuncCtx and its stop closure, the parent's
// map of children and its Done channel, and two rounds of locks to
// register and to unregister (3-5 % of each process's CPU per small
// request under load, in profiles). A Context keeps the functions in a
// small array of its own, and its server runs them when it cancels it.
package reqctx

import (
	"context"
	"sync"
)

// Context is a request's context: context.WithCancel of its parent, and
// the functions AfterFunc registered, run when Cancel ends it.
type Context struct {
	context.Context // context.WithCancel(parent)
	cancel          context.CancelFunc
	stopParent      func() bool // the parent's AfterFunc, for a parent that can end

	mu        sync.Mutex
	cancelled bool
	funcs     []func() // by Stop's id; nil once stopped
	inline    [2]func()
}

type key struct{}

// New returns a Context derived from parent. Its servers derive requests
// from contexts that never end (values only); if parent can end, its end
// cancels the Context too, through a context.AfterFunc of its own.
func New(parent context.Context) *Context {
	c := &Context{}
	c.Context, c.cancel = context.WithCancel(parent)
	c.funcs = c.inline[:0]
	if parent.Done() != nil {
		c.stopParent = context.AfterFunc(parent, c.Cancel)
	}
	return c
}

// Value is the parent's, and the Context itself for this package's key.
func (c *Context) Value(k any) any {
	if k == (key{}) {
		return c
	}
	return c.Context.Value(k)
}

// Cancel ends the context, then starts each function registered and not
// stopped, each on a goroutine of its own (as context.AfterFunc does).
// Later calls do nothing.
func (c *Context) Cancel() {
	c.cancel()
	c.mu.Lock()
	if c.cancelled {
		c.mu.Unlock()
		return
	}
	c.cancelled = true
	funcs := c.funcs
	c.funcs = nil
	c.mu.Unlock()
	if c.stopParent != nil {
		c.stopParent()
	}
	for _, f := range funcs {
		if f != nil {
			go f()
		}
	}
}

// Stop unregisters a function AfterFunc registered. Its zero value stops
// nothing.
type Stop struct {
	c   *Context
	id  int
	std func() bool // context.AfterFunc's, for a context of no Context
}

// Stop keeps the function from running. It reports whether it did: false
// when the function has been started already or was stopped before, as
// the stop function of context.AfterFunc.
func (s Stop) Stop() bool {
	if s.c == nil {
		return s.std != nil && s.std()
	}
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cancelled || c.funcs[s.id] == nil {
		return false
	}
	c.funcs[s.id] = nil
	return true
}

// AfterFunc is context.AfterFunc(ctx, f): f runs on a goroutine of its own
// once ctx is done, unless stopped first. When ctx is a Context, or holds
// one and ends with it (values added, no cancel or deadline of its own in
// between), f is kept by the Context; otherwise context.AfterFunc keeps
// it. A Context keeps every function registered until it ends (a stopped
// one as nil), so it suits the few per request of a server's clients.
func AfterFunc(ctx context.Context, f func()) Stop {
	c, _ := ctx.Value(key{}).(*Context)
	if c == nil || ctx.Done() != c.Done() {
		return Stop{std: context.AfterFunc(ctx, f)}
	}
	c.mu.Lock()
	if c.cancelled {
		c.mu.Unlock()
		go f()
		return Stop{}
	}
	c.funcs = append(c.funcs, f)
	s := Stop{c: c, id: len(c.funcs) - 1}
	c.mu.Unlock()
	return s
}
