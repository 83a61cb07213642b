package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/benchmark"
)

// TestHeadOfLine: on one tunnel, a public client reads a 1 GiB download at
// about 100 KB/s, so that its stream fills its flow-control window and the
// upstream's writes block, while another client reads an event stream (an
// event every 20 ms) and sends a small request every 10 ms. It runs the
// head-of-line run of the bench command with short phases and checks
// correctness only: the download stalls and is held by flow control (the
// upstream writes about what the client reads, at most 64 MiB between
// them), and beside it every small request is answered and every event is
// delivered, in order, with ceilings of minutes for each wait. The latency
// figures, without and beside the stalled download, come from
// "go run ./bench/cmd/bench hol", which runs the same code.
func TestHeadOfLine(t *testing.T) {
	forProtocols(t, func(t *testing.T, proto string) {
		progress := newOutBuf()
		rep, err := benchmark.HeadOfLine(context.Background(), benchmark.HOLConfig{
			Protocols: []string{proto},
			SluiceBin: sluiceBin,
			Phase:     time.Second,
			Progress:  progress,
		})
		t.Logf("head-of-line run:\n%s", progress)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Protocols) != 1 {
			t.Fatalf("report for %d protocols, want 1: %+v", len(rep.Protocols), rep)
		}
		r := rep.Protocols[0]
		for what, ph := range map[string]benchmark.HOLPhase{"unloaded": r.Unloaded, "loaded": r.Loaded} {
			if ph.Requests == 0 || ph.Events == 0 {
				t.Errorf("%s: %d small requests and %d events went through, want some of each", what, ph.Requests, ph.Events)
			}
		}
		if r.Protocol != proto || r.Error != "" || r.BufferedKB > 64<<10 || r.WrittenKB > r.ReadKB+4<<10 {
			t.Errorf("report: %+v", r)
		}
	})
}
