package benchmark

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestWriteProtocolTable(t *testing.T) {
	type res struct{ proto, err, v string }
	var b strings.Builder
	writeProtocolTable(&b, []res{{"v1", "", "1.5"}, {"v2", "edge died\nmore", ""}},
		func(r *res) (string, string) { return r.proto, r.err },
		[]protocolRow[res]{{"value", func(r *res) string { return r.v }}}, 10)
	want := strings.Repeat(" ", 42) + "sluice v1 sluice v2 \n" +
		"value" + strings.Repeat(" ", 37) + "1.5       -         \n" +
		"\nsluice v2 FAILED: edge died\n"
	if b.String() != want {
		t.Fatalf("table:\n%q\nwant\n%q", b.String(), want)
	}
}

func TestWriteRatioTable(t *testing.T) {
	type res struct {
		name string
		v    float64
		has  bool
	}
	results := []res{{"direct", 200, true}, {"a", 50, true}, {"b", 0, false}}
	var b strings.Builder
	writeRatioTable(&b, results, func(r *res) string { return r.name }, &results[0],
		[]ratioRow[res]{{"rate", func(r *res) (float64, bool) { return r.v, r.has }, func(v float64) string { return fmt.Sprintf("%.0f", v) }}},
		func(r *res, label string) string { return "none:" + label })
	want := "       direct   a            b\n" +
		"rate   200      50 (0.25×)   none:rate\n"
	if b.String() != want {
		t.Fatalf("table:\n%q\nwant\n%q", b.String(), want)
	}
}

// A run shorter than a call still measures one call per worker.
func TestClosedLoopSlowCalls(t *testing.T) {
	var calls atomic.Int64
	lat, secs, err := closedLoop(context.Background(), 3, time.Millisecond, func() func(context.Context) error {
		return func(context.Context) error {
			calls.Add(1)
			time.Sleep(20 * time.Millisecond)
			return nil
		}
	})
	if err != nil || len(lat) < 3 || !(secs > 0) {
		t.Fatalf("%d latencies, %v s, %v (%d calls)", len(lat), secs, err, calls.Load())
	}
	boom := errors.New("boom")
	if _, _, err := closedLoop(context.Background(), 2, time.Second, func() func(context.Context) error {
		return func(context.Context) error { return boom }
	}); !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
}
