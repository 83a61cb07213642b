package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/internal/stats"
)

// TableFigures are the routing table's costs on one Redis, as
// MeasureTable finds them (for "bench cluster" and docs/deploy.md).
type TableFigures struct {
	Names   int `json:"names"`
	Workers int `json:"workers"`
	// ClaimsPerSec: Hold (one script call each), Workers at once.
	ClaimsPerSec float64 `json:"claims_per_s"`
	// LookupsPerSec and their latency: Lookup without any cache, Workers
	// at once, each one round trip (a script reading the route and its
	// edge's URL).
	LookupsPerSec float64 `json:"lookups_per_s"`
	LookupP50Ms   float64 `json:"lookup_p50_ms"`
	LookupP99Ms   float64 `json:"lookup_p99_ms"`
	// RenewedPerSec: names whose lease one edge renews per second, whole
	// renewals (every name held, one pipeline) back to back; RenewalMs is
	// the median time of one such renewal of Names.
	RenewedPerSec float64 `json:"renewed_per_s"`
	RenewalMs     float64 `json:"renewal_ms"`
	// BytesPerRoute is Redis's used_memory growth per claimed name (key,
	// value and expiry), and RouteBytes MEMORY USAGE of one route key.
	BytesPerRoute float64 `json:"bytes_per_route"`
	RouteBytes    int64   `json:"route_bytes"`
}

// MeasureTable measures the routing table on the Redis at redisURL (use a
// database of its own: the names claimed are released at the end): names
// claims by workers goroutines at once, then lookups for d, then whole
// renewals for d, from one edge's client.
func MeasureTable(ctx context.Context, redisURL string, names, workers int, d time.Duration) (TableFigures, error) {
	f := TableFigures{Names: names, Workers: workers}
	if names <= 0 || workers <= 0 || d <= 0 {
		return f, errors.New("cluster: measure: names, workers and the duration must be positive")
	}
	c, err := New(Config{Redis: redisURL, ID: "bench-edge-0001", Advertise: "http://10.0.0.1:8080", Secret: []byte(strings.Repeat("b", MinSecretLen)),
		Lease: 10 * time.Minute, Timeout: 30 * time.Second, CacheTTL: -1, NegativeTTL: -1})
	if err != nil {
		return f, err
	}
	defer c.Close()
	rt := c.table.(*redisTable)
	mem0, err := usedMemory(ctx, rt)
	if err != nil {
		return f, err
	}
	name := func(i int) string { return "tunnel-" + strconv.Itoa(i) }
	// Claims, workers at once.
	start := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < names; i += workers {
				if _, err := c.Hold(ctx, name(i), Holder{Token: "agent-token-" + strconv.Itoa(i)}); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	f.ClaimsPerSec = float64(names) / time.Since(start).Seconds()
	select {
	case err := <-errc:
		return f, fmt.Errorf("cluster: measure: claim: %w", err)
	default:
	}
	if c.Held() != names || c.Degraded() {
		return f, fmt.Errorf("cluster: measure: %d of %d names held (degraded %v)", c.Held(), names, c.Degraded())
	}
	mem1, err := usedMemory(ctx, rt)
	if err != nil {
		return f, err
	}
	f.BytesPerRoute = float64(mem1-mem0) / float64(names)
	f.RouteBytes, _ = rt.c.MemoryUsage(ctx, routePrefix+name(0)).Result()

	// Lookups, workers at once, random names.
	lat := make([][]time.Duration, workers)
	start = time.Now()
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for time.Since(start) < d {
				t0 := time.Now()
				rt, err := c.Lookup(ctx, name(r.IntN(names)))
				if err != nil || rt.Edge != c.ID() {
					errc <- fmt.Errorf("lookup: %+v, %w", rt, err)
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	select {
	case err := <-errc:
		return f, fmt.Errorf("cluster: measure: %w", err)
	default:
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sum := stats.Summarize(all)
	f.LookupsPerSec = float64(sum.N) / secs
	f.LookupP50Ms, f.LookupP99Ms = float64(sum.P50)/1e6, float64(sum.P99)/1e6

	// Whole renewals, back to back (at least three).
	var took []time.Duration
	start = time.Now()
	for len(took) < 3 || time.Since(start) < d {
		t0 := time.Now()
		c.renew(ctx)
		took = append(took, time.Since(t0))
		if c.Degraded() || c.Held() != names {
			return f, fmt.Errorf("cluster: measure: a renewal failed (degraded %v, %d held)", c.Degraded(), c.Held())
		}
	}
	f.RenewedPerSec = float64(names*len(took)) / time.Since(start).Seconds()
	f.RenewalMs = float64(stats.Summarize(took).P50) / 1e6
	if err := c.Leave(ctx); err != nil {
		return f, err
	}
	return f, nil
}

// usedMemory is Redis's used_memory (INFO memory), in bytes.
func usedMemory(ctx context.Context, rt *redisTable) (int64, error) {
	info, err := rt.c.Info(ctx, "memory").Result()
	if err != nil {
		return 0, fmt.Errorf("cluster: measure: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("cluster: measure: no used_memory in INFO memory")
}
