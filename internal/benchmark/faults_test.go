package benchmark

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestFaults is the lean form of "bench faults": every fault (latency
// with jitter, bandwidth, slicer, blackhole, reset_peer) between the
// agent and the edge and between the client and the edge, for both
// protocols, with a few requests each, through toxiproxy's server; the edge,
// the agents and toxiproxy are child processes. Every response is complete and byte-exact or visibly aborted,
// the agent comes back after each fault, the processes return to their
// goroutine and descriptor counts, and a second tunnel on the same edge
// keeps serving. No timing is asserted: every wait has a ceiling of
// minutes, reached only by a stuck run.
func TestFaults(t *testing.T) {
	var progress bytes.Buffer
	cfg := FaultsConfig{
		SluiceBin:    buildCmd(t, "sluice", "../../cmd/sluice"),
		ToxiproxyBin: buildCmd(t, "toxiproxy-server", "github.com/Shopify/toxiproxy/v2/cmd/server"),
		Requests:     4,
		MaxSize:      128 << 10,
		Rate:         1024,
		Seed:         uint64(time.Now().UnixNano()),
		Progress:     &progress,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	rep, err := Faults(ctx, cfg)
	if testing.Verbose() || err != nil {
		t.Logf("seed %d\n%s", cfg.Seed, progress.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(rep.Results), len(FaultNames)*len(LinkNames)*2; got != want {
		t.Fatalf("%d results, want %d", got, want)
	}
	for _, r := range rep.Results {
		name := r.Protocol + " " + r.Link + " " + r.Fault
		if r.Requests != cfg.Requests || r.Complete+r.Aborted+r.Refused != r.Requests {
			t.Errorf("%s: %d requests: %d complete, %d aborted, %d refused", name, r.Requests, r.Complete, r.Aborted, r.Refused)
		}
		if r.BytesChecked <= 0 || r.SteadyRequests <= 0 {
			t.Errorf("%s: %d bytes checked, %d steady requests", name, r.BytesChecked, r.SteadyRequests)
		}
		// Faults that only slow a link neither fail a request nor drop
		// the agent; a blackhole or a reset of the agent's link does.
		switch {
		case !disrupts(r.Fault) && (r.Complete != r.Requests || r.Reconnects != 0):
			t.Errorf("%s: %d of %d complete, %d reconnects; want all, none", name, r.Complete, r.Requests, r.Reconnects)
		case disrupts(r.Fault) && r.Link == "agent" && r.Reconnects < 1:
			t.Errorf("%s: the agent did not reconnect", name)
		case disrupts(r.Fault) && r.Complete == r.Requests:
			t.Errorf("%s: every request completed: the fault was not felt", name)
		}
	}
	var table strings.Builder
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())
}
