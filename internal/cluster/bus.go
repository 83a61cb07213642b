package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// The channel of the edges' messages, and its envelope.
const eventsChannel = "sluice:events"

// kindClaim is the cluster's own message: an edge claimed a name.
const kindClaim = "cluster.claim"

type envelope struct {
	Edge string          `json:"e"`
	Kind string          `json:"k"`
	Data json.RawMessage `json:"d,omitempty"`
}

type claimMsg struct {
	Name string `json:"name"`
}

// envelope encodes a message of this edge.
func (c *Cluster) envelope(kind string, data any) []byte {
	d, err := json.Marshal(data)
	if err != nil {
		panic("cluster: a message that does not encode: " + err.Error()) // the edge's own types
	}
	b, _ := json.Marshal(envelope{Edge: c.cfg.ID, Kind: kind, Data: d})
	return b
}

// Publish sends a message to every other edge of the cluster (to their
// Handler.Message, with data encoded as JSON), waiting for Redis at most
// Timeout. While the cluster is degraded it fails at once with
// ErrUnavailable: the others hear Resync when Redis is back.
func (c *Cluster) Publish(ctx context.Context, kind string, data any) error {
	b := c.envelope(kind, data)
	if c.Degraded() {
		return ErrUnavailable
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	if err := c.table.publish(ctx, b); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// deliver handles one message from the channel.
func (c *Cluster) deliver(ctx context.Context, payload string) {
	var m envelope
	if err := json.Unmarshal([]byte(payload), &m); err != nil || m.Edge == "" {
		c.cfg.Logger.Debug("cluster: a message that is not an envelope, ignored", "err", err)
		return
	}
	if m.Edge == c.cfg.ID {
		return // this edge's own: applied before it was published
	}
	if m.Kind != kindClaim {
		c.handler.Message(m.Kind, m.Data)
		return
	}
	var cm claimMsg
	if json.Unmarshal(m.Data, &cm) != nil || cm.Name == "" {
		return
	}
	c.cache.drop(cm.Name)
	c.checkHeld(ctx, cm.Name)
}

// checkHeld reads the route of name, held here, after another edge
// claimed it: if that claim is the route now, this edge has lost the name.
// (The message alone cannot tell: this edge may have claimed the name
// again since.) A claim of this edge not written yet is left alone.
func (c *Cluster) checkHeld(ctx context.Context, name string) {
	c.mu.Lock()
	v, held := c.held[name]
	pending := c.pending[name]
	c.mu.Unlock()
	if !held || pending {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	cur, err := c.table.route(ctx, name)
	if err != nil || cur == "" || cur == v {
		return // the next renewal tells
	}
	c.mu.Lock()
	mine := c.held[name] == v
	if mine {
		delete(c.held, name)
	}
	c.mu.Unlock()
	if mine {
		c.cfg.Logger.Info("cluster: another edge claimed a tunnel held here", "tunnel", name, "by", edgeOf(cur))
		c.handler.Lost(name)
	}
}

// listen receives the channel's messages until ctx ends. A subscription
// that broke is made again (every second at most), and the handler then
// hears Resync. A connection silent for Lease/3 is pinged; one silent for
// two such periods is dropped and made again.
func (c *Cluster) listen(ctx context.Context, rt *redisTable) {
	missed := false // messages may have been missed since the last subscription
	for ctx.Err() == nil {
		ps := rt.c.Subscribe(ctx, eventsChannel)
		stop := context.AfterFunc(ctx, func() { ps.Close() })
		c.receive(ctx, ps, &missed)
		stop()
		ps.Close()
		missed = true
		t := time.NewTimer(maxRetry)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// receive handles ps's messages until its connection fails.
func (c *Cluster) receive(ctx context.Context, ps *redis.PubSub, missed *bool) {
	silent := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, c.cfg.Lease/3)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !silent && ctx.Err() == nil {
				silent = true
				ps.Ping(ctx)
				continue
			}
			return
		}
		silent = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if *missed {
				*missed = false
				c.cfg.Logger.Info("cluster: subscribed again to the edges' messages; forgetting what they may have changed")
				c.cache.reset()
				c.handler.Resync()
			}
		case *redis.Message:
			c.deliver(ctx, m.Payload)
		}
	}
}
