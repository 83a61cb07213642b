package benchmark

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/pgtest"
)

// The cluster run with tiny sizes: two edges on the CI's PostgreSQL and a
// redis-server it starts, every figure there, the forwarded download
// checked byte by byte.
func TestClusterSmoke(t *testing.T) {
	dsn := pgtest.Schema(t) // the run makes a schema of its own on this server
	bin := buildCmd(t, "sluice", "../../cmd/sluice")
	cfg := ClusterConfig{SluiceBin: bin, Postgres: dsn, Size: 3<<20 + 12345, Clients: 4, Duration: 300 * time.Millisecond, Rounds: 1, Names: 500, Workers: 4}
	var progress bytes.Buffer
	cfg.Progress = &progress
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Cluster(ctx, cfg)
	if err != nil {
		t.Fatalf("%v\nprogress:\n%s", err, progress.String())
	}
	for name, f := range map[string]ClusterFigures{"local": rep.Local, "forwarded": rep.Forwarded} {
		if !(f.DownloadMBps > 0) || !(f.SmallReqPerSec > 0) || !(f.SmallP50Ms > 0) || f.SmallP99Ms < f.SmallP50Ms {
			t.Errorf("%s: %+v", name, f)
		}
	}
	if rep.ExactBytes != cfg.Size || rep.Table.Names != 500 || !(rep.Table.LookupsPerSec > 0) || !(rep.Table.RenewedPerSec > 0) {
		t.Errorf("report: %+v", rep)
	}
	var table strings.Builder
	if err := rep.WriteTable(&table); err != nil || !strings.Contains(table.String(), "forwarded / local") || !strings.Contains(table.String(), "lookups/s") {
		t.Errorf("table: %v\n%s", err, table.String())
	}
	t.Logf("\n%s", table.String())
}
