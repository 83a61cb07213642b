//go:build linux

package e2e

import (
	"context"
	"testing"

	"github.com/sluicehq/sluice/internal/benchmark"
)

// TestScaleStreams holds 300 concurrent SSE streams through one tunnel, over
// each protocol, with the scale run of the bench command: every stream must
// connect, stay connected and receive an event broadcast after the last one
// connected, and the upstream's streams must all end when the clients
// leave. It checks correctness only, with ceilings of minutes for each
// wait: the figures (10,000 streams, connect time, broadcast delay, memory
// per stream) come from "go run ./bench/cmd/bench scale", which runs the
// same code.
//
// The clients and the SSE upstream are sseload processes (built from
// internal/sseload without -race): this process runs under the race
// detector, which allows 8128 goroutines.
func TestScaleStreams(t *testing.T) {
	const n = 300
	bin := buildSSELoad(t)
	forProtocols(t, func(t *testing.T, proto string) {
		progress := newOutBuf()
		rep, err := benchmark.Scale(context.Background(), benchmark.ScaleConfig{
			Streams:   n,
			Protocols: []string{proto},
			SluiceBin: sluiceBin,
			LoadCmd:   []string{bin},
			Progress:  progress,
		})
		t.Logf("scale run:\n%s", progress)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Protocols) != 1 {
			t.Fatalf("report for %d protocols, want 1: %+v", len(rep.Protocols), rep)
		}
		r := rep.Protocols[0]
		c := r.Clients
		if r.Protocol != proto || r.Error != "" || c.Streams != n || c.Connected != n || c.Failed != 0 || c.Dropped != 0 ||
			c.Fresh != n || c.MinEvents < 1 || r.UpstreamStreams != n {
			t.Errorf("report: %+v", r)
		}
		if r.Edge.HeldKB <= 0 || r.Agent.HeldKB <= 0 || r.Edge.Files < n || r.Agent.Files < n {
			t.Errorf("edge %+v, agent %+v: want each holding at least %d descriptors", r.Edge, r.Agent, n)
		}
	})
}
