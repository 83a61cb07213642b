package benchmark

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestLimits runs the limits scenarios small: 2,000 random names (the
// edge's heap and its store queries), and 40 slow uploads from one address
// against --max-streams-per-ip 16 (16 held, 24 refused, another address
// served). No timing is asserted: every wait has a ceiling of a minute or
// more, reached only by a stuck run.
func TestLimits(t *testing.T) {
	var progress bytes.Buffer
	cfg := LimitsConfig{
		SluiceBin:     buildCmd(t, "sluice", "../../cmd/sluice"),
		Names:         2000,
		NamesWorkers:  4,
		Uploads:       40,
		PerIP:         16,
		Interval:      200 * time.Millisecond,
		OtherRequests: 5,
		Progress:      &progress,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Limits(ctx, cfg)
	if testing.Verbose() || err != nil {
		t.Logf("progress:\n%s", progress.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	n, u := rep.Names, rep.Uploads
	if n == nil || n.NotFound != cfg.Names || n.TunnelQueries != 0 || n.ListQueries < 1 || !(n.HeapInuseBeforeMiB > 0) {
		t.Errorf("names: %+v", n)
	}
	if u == nil || u.Held != 16 || u.Refused != 24 || u.Other != 0 || u.OpenStreams != 16 || u.Ticks != 1 ||
		u.OtherRequests != 10 || u.OtherOK != 10 {
		t.Errorf("uploads: %+v", u)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil || !bytes.Contains(table.Bytes(), []byte("refused with 429")) {
		t.Errorf("table (%v):\n%s", err, table.String())
	}
}
