package benchmark

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMedianResult: each figure is its own median over the rounds, a split
// (total, edge, agent) is one round's whole, counts stay whole and process
// IDs are the first round's.
func TestMedianResult(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	round := func(rps float64, reqs int64, edge, agent, mem float64, pid int) TargetResult {
		return TargetResult{
			Name:   "sluice-v2",
			Small:  &SmallResult{Clients: 50, Requests: reqs, ReqPerSec: rps},
			CPU:    &CPUResult{SmallUsPerReq: &Split{Edge: f(edge), Agent: f(agent), Total: edge + agent}},
			Memory: &MemoryResult{PerStreamKB: mem, ByRole: Split{Total: mem}, ByProcess: []ProcessMemory{{Name: "edge", PID: pid, PerStreamKB: mem}}},
		}
	}
	for _, tc := range []struct {
		name   string
		rounds []TargetResult
		rps    float64
		reqs   int64
		edge   float64
		agent  float64
		mem    float64
	}{
		{"three", []TargetResult{round(300, 3, 4, 6, 40, 7), round(100, 1, 20, 10, 42, 8), round(200, 2, 5, 15, 41, 9)}, 200, 2, 5, 15, 41},
		{"two: the lower", []TargetResult{round(300, 4, 30, 30, 50, 7), round(100, 1, 1, 2, 45, 8)}, 100, 1, 1, 2, 45},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := medianResult(tc.rounds)
			if err != nil {
				t.Fatal(err)
			}
			s := m.CPU.SmallUsPerReq
			if m.Name != "sluice-v2" || m.Small.ReqPerSec != tc.rps || m.Small.Requests != tc.reqs || m.Small.Clients != 50 ||
				*s.Edge != tc.edge || *s.Agent != tc.agent || s.Total != tc.edge+tc.agent ||
				m.Memory.PerStreamKB != tc.mem || m.Memory.ByRole.Total != tc.mem || m.Memory.ByProcess[0].PID != 7 || m.Memory.ByProcess[0].PerStreamKB != tc.mem {
				t.Fatalf("medians: %+v, small %+v, CPU %+v (edge %v, agent %v), memory %+v", m, m.Small, s, *s.Edge, *s.Agent, m.Memory)
			}
			if tc.rounds[0].Small.ReqPerSec != 300 {
				t.Fatal("the rounds were changed")
			}
		})
	}
}

// TestRounds: with Rounds, every target is measured once per round, the
// report keeps each round and holds the medians; a failure ends the run
// after its round.
func TestRounds(t *testing.T) {
	cfg := Config{
		Size: 1 << 20, Clients: 2, Duration: 100 * time.Millisecond,
		SSEStreams: 2, SSEDuration: 100 * time.Millisecond, SSEInterval: 20 * time.Millisecond,
		MemStreams: 2, Targets: []string{"direct"}, Rounds: 3,
	}
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rounds) != 3 || len(rep.Targets) != 1 || rep.Config.Rounds != 3 {
		t.Fatalf("rounds %d, targets %+v, config %+v", len(rep.Rounds), rep.Targets, rep.Config)
	}
	var rps []float64
	for _, r := range rep.Rounds {
		if len(r) != 1 || r[0].Small == nil {
			t.Fatalf("a round: %+v", r)
		}
		rps = append(rps, r[0].Small.ReqPerSec)
	}
	slices.Sort(rps)
	if got := rep.Targets[0].Small.ReqPerSec; got != rps[1] {
		t.Fatalf("req/s %v, want the median of %v", got, rps)
	}
	var table strings.Builder
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "each figure the median of 3 rounds") {
		t.Fatalf("table:\n%s", table.String())
	}

	cfg.Targets = []string{"sluice-v1", "direct"}
	cfg.SluiceBin = filepath.Join(t.TempDir(), "no-such-sluice")
	rep, err = Run(context.Background(), cfg)
	if err == nil || len(rep.Rounds) != 1 || len(rep.Targets) != 2 || rep.Targets[0].Error == "" || rep.Targets[1].Error != "" {
		t.Fatalf("a failing target: %v, %d rounds, targets %+v", err, len(rep.Rounds), rep.Targets)
	}
}
