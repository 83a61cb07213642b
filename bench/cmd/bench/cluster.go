package main

import (
	"context"
	"io"
	"os"
	"time"

	"github.com/sluicehq/sluice/internal/benchmark"
	"github.com/sluicehq/sluice/internal/cli"
)

const clusterHelp = `Usage: go run ./bench/cmd/bench cluster [flags]

Measures several edges (issue 16): two "sluice edge --cluster" processes
sharing a PostgreSQL schema (created in --postgres for the run, dropped at
the end) and a redis-server started for the run, and one "sluice http"
connected to edge A. The local path is a request to A; the forwarded path
the same request to B, which forwards it to A over HTTP/2. Per round and
path, alternating: the download of one --size body (MB/s) and --clients
keep-alive clients' small requests for --duration (requests/s, p50, p99);
then one --size download through B checked byte by byte. Then the routing
table's rates on that Redis: --names claims, lookups without cache and
whole renewals for --duration each, from --workers goroutines.

  go run ./bench/cmd/bench cluster --postgres postgres://sluice:sluice@127.0.0.1:5432/postgres
  go run ./bench/cmd/bench cluster --size 256MiB --duration 2s --rounds 1

Progress goes to stderr, the table (or JSON) to stdout.
`

func runCluster(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sc := newScenario("cluster", clusterHelp, stderr)
	fs := sc.fs
	postgres := fs.String("postgres", os.Getenv("SLUICE_TEST_POSTGRES"), "PostgreSQL server URL the edges share (default $SLUICE_TEST_POSTGRES)")
	redisServer := fs.String("redis-server", "", "redis-server binary (default: from PATH)")
	protocol := fs.String("protocol", "v2", "the tunnel's protocol: v1 or v2")
	size := cli.Size(1 << 30)
	fs.Var(&size, "size", "bytes of each download (suffixes KiB, MiB, GiB, KB, MB, GB)")
	clients := fs.Int("clients", 50, "concurrent keep-alive clients of the small-request run")
	duration := fs.Duration("duration", 5*time.Second, "length of the small-request run per round, and of each routing-table phase")
	rounds := fs.Int("rounds", 3, "rounds per path")
	names := fs.Int("names", 50000, "tunnel names claimed in the routing-table run")
	workers := fs.Int("workers", 16, "concurrent callers of the routing-table run")
	if err := sc.parse(args); err != nil {
		return err
	}
	if *postgres == "" {
		return cli.Usagef("cluster: --postgres URL is needed (or $SLUICE_TEST_POSTGRES)")
	}
	if *clients <= 0 || *duration <= 0 || *rounds <= 0 || *names <= 0 || *workers <= 0 {
		return cli.Usagef("cluster: --clients, --duration, --rounds, --names and --workers must be positive")
	}
	protos, err := parseProtocols("cluster", *protocol)
	if err != nil {
		return err
	}
	if len(protos) != 1 {
		return cli.Usagef("cluster: --protocol takes one protocol")
	}
	cfg := benchmark.ClusterConfig{Postgres: *postgres, RedisServer: *redisServer, Protocol: protos[0], Size: int64(size),
		Clients: *clients, Duration: *duration, Rounds: *rounds, Names: *names, Workers: *workers}
	return sc.run(ctx, stdout, stderr, func(bin string, progress io.Writer) (report, error) {
		cfg.SluiceBin, cfg.Progress = bin, progress
		rep, err := benchmark.Cluster(ctx, cfg)
		if rep == nil {
			return nil, err
		}
		return rep, err
	})
}
