package benchmark

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// tcpSmoke runs the TCP benchmark with tiny sizes, directly and through
// "sluice tcp" (bin) with each protocol: every transfer and echo must
// succeed and every figure be positive; no figure is compared with
// another.
func tcpSmoke(t *testing.T, bin string) {
	cfg := TCPConfig{
		SluiceBin:    bin,
		Size:         2<<20 + 12345, // not a multiple of any buffer
		Conns:        4,
		MessageSize:  300,
		SetupWorkers: 2,
		Duration:     200 * time.Millisecond,
		Held:         20,
		Settle:       50 * time.Millisecond,
	}
	var progress bytes.Buffer
	cfg.Progress = &progress
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := TCP(ctx, cfg)
	if err != nil {
		t.Fatalf("%v\nprogress:\n%s", err, progress.String())
	}
	want := []string{"direct", "sluice-v1", "sluice-v2"}
	if len(rep.Targets) != len(want) {
		t.Fatalf("targets: %+v, want %v", rep.Targets, want)
	}
	for i, r := range rep.Targets {
		if r.Name != want[i] || r.Error != "" {
			t.Errorf("target %d: %s, error %q; want %s", i, r.Name, r.Error, want[i])
			continue
		}
		for what, x := range map[string]*Transfer{"download": r.Download, "upload": r.Upload} {
			if x == nil || x.Bytes != cfg.Size || !(x.MBps > 0) {
				t.Errorf("%s %s: %+v", r.Name, what, x)
			}
		}
		for what, x := range map[string]*TCPRate{"request/response": r.Echo, "setup": r.Setup} {
			if x == nil || x.Ops <= 0 || !(x.PerSec > 0) || !(x.P50Ms > 0) || x.P99Ms < x.P50Ms {
				t.Errorf("%s %s: %+v", r.Name, what, x)
			}
		}
		if r.Echo != nil && r.Echo.Workers != cfg.Conns {
			t.Errorf("%s: %d request/response connections, want %d", r.Name, r.Echo.Workers, cfg.Conns)
		}
		switch m := r.Memory; {
		case r.Name == "direct":
			if m != nil {
				t.Errorf("direct has a memory figure: %+v", m)
			}
		case m == nil || m.Streams != cfg.Held || m.Processes != 2 || m.BeforeKB <= 0 || m.AfterKB <= 0:
			t.Errorf("%s memory: %+v", r.Name, m)
		}
	}
	var table strings.Builder
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"round trips/s (4 conns)", "connections/s (2 workers)", "memory KB per held conn (20)",
		"frp: skipped", "chisel: skipped", "sluice-v2"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	if _, err := json.Marshal(rep); err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		t.Logf("\n%s\nprogress:\n%s", table.String(), progress.String())
	}
}

// A tunnel whose binary is not where --chisel says fails with its error,
// in the report and in the run's error, and direct is still measured.
func TestTCPMissingBinaryIsReported(t *testing.T) {
	cfg := TCPConfig{
		Protocols: []string{}, ChiselDir: t.TempDir(),
		Size: 1 << 20, Conns: 2, SetupWorkers: 1, Duration: 100 * time.Millisecond, Held: 1, Settle: time.Millisecond,
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := TCP(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), "chisel: starting chisel server") {
		t.Fatalf("error %v, want chisel's start failing", err)
	}
	if len(rep.Targets) != 2 || rep.Targets[0].Error != "" || rep.Targets[0].Download == nil || rep.Targets[1].Error == "" {
		t.Fatalf("targets: %+v", rep.Targets)
	}
	if _, ok := rep.Skipped["frp"]; !ok {
		t.Errorf("frp not reported skipped: %v", rep.Skipped)
	}
}
