package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/logging"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// QuietRedis turns off go-redis's own log, which is process-wide (it
// has no logger per client) and writes a line for every failed dial:
// while Redis is down, one per request. The cluster reports Redis's state
// itself, once per change. A program calls it once, at start.
func QuietRedis() { logging.Disable() }

// The keys: a route per tunnel name, a peers entry per edge id.
const (
	routePrefix = "sluice:route:"
	peerPrefix  = "sluice:edge:"
)

// renewChunk bounds the names of one renewal script call, so that no call
// holds Redis for long; the calls of one renewal go in one pipeline.
const renewChunk = 500

// Scripts, each one atomic in Redis.
var (
	// KEYS[1] a route; ARGV[1] the claim's value. Deletes the route if it
	// is that claim's.
	releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

	// KEYS[1] a route, KEYS[2] the claiming edge's peers entry; ARGV[1]
	// the claim's value "EDGEID GEN HOLDER", ARGV[2] the lease in ms,
	// ARGV[3] "1" to take the name from any holder, ARGV[4] the edge's
	// URL, ARGV[5] the channel, ARGV[6] the message to publish once
	// written. Returns {1, the value replaced or ""}, or {0, the route}
	// when another holder has it.
	claimScript = redis.NewScript(`
redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[2])
local v = redis.call('GET', KEYS[1])
if v and ARGV[3] ~= '1' and string.match(v, '(%S+)$') ~= string.match(ARGV[1], '(%S+)$') then
  return {0, v}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return {1, v or ''}`)

	// KEYS routes; ARGV[1] the lease in ms, ARGV[1+i] the value of KEYS[i].
	// For each: 0 renewed, 1 written again (it had gone), 2 held by another
	// claim.
	renewScript = redis.NewScript(`
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v == ARGV[i+1] then
    redis.call('PEXPIRE', k, ARGV[1])
    out[i] = 0
  elseif not v then
    redis.call('SET', k, ARGV[i+1], 'PX', ARGV[1])
    out[i] = 1
  else
    out[i] = 2
  end
end
return out`)

	// KEYS[1] a route; ARGV[1] the peers prefix. Returns nothing if the
	// route is absent, else {value, its PTTL, the edge's URL or "", the
	// URL's PTTL}.
	lookupScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return nil end
local pk = ARGV[1] .. string.match(v, '^(%S+)')
local url = redis.call('GET', pk)
return {v, redis.call('PTTL', KEYS[1]), url or '', redis.call('PTTL', pk)}`)
)

// redisTable is the tables in Redis, through go-redis.
type redisTable struct {
	c *redis.Client
}

// newRedisTable returns the tables at rawURL; no I/O. timeout bounds each
// command and each dial.
func newRedisTable(rawURL string, timeout time.Duration) (*redisTable, error) {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("cluster: the Redis URL %q: %w", redactURL(rawURL), err)
	}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = timeout, timeout, timeout
	opt.PoolTimeout = timeout
	opt.ContextTimeoutEnabled = true
	opt.MaxRetries = 1    // a pooled connection that died with a restarted Redis is retried once, on a new one
	opt.DialerRetries = 1 // a refused dial fails at once: the cluster is degraded, not slow
	opt.DisableIdentity = true
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return &redisTable{c: redis.NewClient(opt)}, nil
}

// redactURL hides a password in a Redis URL, for messages.
func redactURL(s string) string {
	at := strings.LastIndex(s, "@")
	scheme := strings.Index(s, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return s
	}
	return s[:scheme+3] + "***" + s[at:]
}

func (t *redisTable) claim(ctx context.Context, edge, url, name, value string, force bool, msg []byte, lease time.Duration) (string, error) {
	f := "0"
	if force {
		f = "1"
	}
	res, err := claimScript.Run(ctx, t.c, []string{routePrefix + name, peerPrefix + edge},
		value, lease.Milliseconds(), f, url, eventsChannel, msg).Slice()
	if err != nil {
		return "", err
	}
	if len(res) != 2 {
		return "", fmt.Errorf("cluster: claim answered %v", res)
	}
	ok, _ := res[0].(int64)
	prev, _ := res[1].(string)
	if ok != 1 {
		return prev, ErrTaken
	}
	return prev, nil
}

func (t *redisTable) route(ctx context.Context, name string) (string, error) {
	v, err := t.c.Get(ctx, routePrefix+name).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, err
}

func (t *redisTable) publish(ctx context.Context, msg []byte) error {
	return t.c.Publish(ctx, eventsChannel, msg).Err()
}

func (t *redisTable) renew(ctx context.Context, edge, url string, names, values []string, fresh []bool, lease time.Duration) ([]renewResult, error) {
	ms := strconv.FormatInt(lease.Milliseconds(), 10)
	var old []int // the indexes of the names to renew (not fresh)
	for i := range names {
		if !fresh[i] {
			old = append(old, i)
		}
	}
	run := func() ([]*redis.Cmd, error) {
		pipe := t.c.Pipeline()
		pipe.Set(ctx, peerPrefix+edge, url, lease)
		for i, n := range names {
			if fresh[i] {
				pipe.Set(ctx, routePrefix+n, values[i], lease)
			}
		}
		var cmds []*redis.Cmd
		for i := 0; i < len(old); i += renewChunk {
			j := min(i+renewChunk, len(old))
			keys := make([]string, 0, j-i)
			args := make([]any, 0, j-i+1)
			args = append(args, ms)
			for _, k := range old[i:j] {
				keys = append(keys, routePrefix+names[k])
				args = append(args, values[k])
			}
			cmds = append(cmds, renewScript.EvalSha(ctx, pipe, keys, args...))
		}
		_, err := pipe.Exec(ctx)
		return cmds, err
	}
	cmds, err := run()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// A restarted Redis has forgotten the script: load it, once.
		if err = renewScript.Load(ctx, t.c).Err(); err == nil {
			cmds, err = run()
		}
	}
	if err != nil {
		return nil, err
	}
	var codes []int64
	for _, cmd := range cmds {
		c, err := cmd.Int64Slice()
		if err != nil {
			return nil, err
		}
		codes = append(codes, c...)
	}
	if len(codes) != len(old) {
		return nil, fmt.Errorf("cluster: renewal answered %d results for %d names", len(codes), len(old))
	}
	out := make([]renewResult, len(names)) // renewedRoute for the fresh ones
	for j, i := range old {
		out[i] = renewResult(codes[j])
	}
	return out, nil
}

func (t *redisTable) release(ctx context.Context, name, value string) error {
	return releaseScript.Run(ctx, t.c, []string{routePrefix + name}, value).Err()
}

func (t *redisTable) lookup(ctx context.Context, name string) (found, error) {
	res, err := lookupScript.Run(ctx, t.c, []string{routePrefix + name}, peerPrefix).Slice()
	switch {
	case errors.Is(err, redis.Nil):
		return found{}, nil
	case err != nil:
		return found{}, err
	case len(res) != 4:
		return found{}, fmt.Errorf("cluster: lookup answered %d fields", len(res))
	}
	f := found{}
	var ok [4]bool
	f.value, ok[0] = res[0].(string)
	ttl, ok1 := res[1].(int64)
	f.url, ok[2] = res[2].(string)
	peerTTL, ok3 := res[3].(int64)
	ok[1], ok[3] = ok1, ok3
	if ok != [4]bool{true, true, true, true} {
		return found{}, fmt.Errorf("cluster: lookup answered %v", res)
	}
	f.ttl, f.peerTTL = time.Duration(ttl)*time.Millisecond, time.Duration(peerTTL)*time.Millisecond
	return f, nil
}

func (t *redisTable) leave(ctx context.Context, edge, url string, names, values []string) error {
	pipe := t.c.Pipeline()
	for i, n := range names {
		releaseScript.Eval(ctx, pipe, []string{routePrefix + n}, values[i])
	}
	releaseScript.Eval(ctx, pipe, []string{peerPrefix + edge}, url)
	_, err := pipe.Exec(ctx)
	return err
}

func (t *redisTable) close() error { return t.c.Close() }
