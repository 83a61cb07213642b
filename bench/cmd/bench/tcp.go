package main

import (
	"context"
	"io"
	"os"
	"time"

	"github.com/sluicehq/sluice/internal/benchmark"
	"github.com/sluicehq/sluice/internal/cli"
)

const tcpHelp = `Usage: go run ./bench/cmd/bench tcp [flags]

Measures TCP tunnels against the same server reached directly, in one run:
a TCP server inside this process, on loopback, measured directly, through
"sluice tcp" (an edge with --tcp-ports and an agent, two child processes of
the sluice binary) for each protocol, and through frp's TCP mode (frps and
frpc on a generated TOML configuration) and chisel ("chisel server
--reverse", "chisel client R:...") when their binaries are given. Per
target: a download and an upload of --size over one connection each,
round trips of --message-size bytes on --conns connections for --duration,
connections set up per second (connect, one round trip, close) by
--setup-workers workers for --duration, and the resident memory of the
tunnel's two processes per connection with --held idle connections held.
The table gives each figure with its ratio to direct. Every byte count and
echo is checked; a failure ends with exit status 1.

  go run ./bench/cmd/bench tcp                                   direct, v1, v2
  go run ./bench/cmd/bench tcp --frp ~/frp/bin --chisel ~/chisel  and frp and chisel
  go run ./bench/cmd/bench tcp --size 64MiB --duration 1s --held 100

frp and chisel are never fetched: --frp names a directory holding frps and
frpc (default $SLUICE_BENCH_FRP), --chisel one holding chisel (default
$SLUICE_BENCH_CHISEL). Progress goes to stderr, the table (or JSON) to
stdout.
`

func runTCP(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sc := newScenario("tcp", tcpHelp, stderr)
	fs := sc.fs
	protocols := fs.String("protocols", "v1,v2", "sluice protocols measured after direct, comma-separated: v1, v2")
	size := cli.Size(1 << 30)
	fs.Var(&size, "size", "bytes of the download and of the upload (suffixes KiB, MiB, GiB, KB, MB, GB)")
	conns := fs.Int("conns", 50, "connections of the request/response run")
	msgSize := cli.Size(100)
	fs.Var(&msgSize, "message-size", "bytes of each request and of its echo, at most 64KiB")
	setupWorkers := fs.Int("setup-workers", 8, "workers of the connection setup run")
	duration := fs.Duration("duration", 5*time.Second, "length of the request/response run and of the setup run, per target")
	held := fs.Int("held", 1000, "idle connections held for the memory measurement")
	settle := fs.Duration("settle", 2*time.Second, "how long the idle connections are held before memory is read")
	frp := fs.String("frp", os.Getenv("SLUICE_BENCH_FRP"), "directory holding frps and frpc (default $SLUICE_BENCH_FRP; none: frp is skipped)")
	chisel := fs.String("chisel", os.Getenv("SLUICE_BENCH_CHISEL"), "directory holding chisel (default $SLUICE_BENCH_CHISEL; none: chisel is skipped)")
	if err := sc.parse(args); err != nil {
		return err
	}
	if *conns <= 0 || *setupWorkers <= 0 || *duration <= 0 || *held <= 0 || *settle <= 0 {
		return cli.Usagef("tcp: --conns, --setup-workers, --duration, --held and --settle must be positive")
	}
	if msgSize > 64<<10 {
		return cli.Usagef("tcp: --message-size must be at most 64KiB")
	}
	cfg := benchmark.TCPConfig{
		Size: int64(size), Conns: *conns, MessageSize: int(msgSize), SetupWorkers: *setupWorkers,
		Duration: *duration, Held: *held, Settle: *settle, FrpDir: *frp, ChiselDir: *chisel,
	}
	var err error
	if cfg.Protocols, err = parseProtocols("tcp", *protocols); err != nil {
		return err
	}
	return sc.run(ctx, stdout, stderr, func(bin string, progress io.Writer) (report, error) {
		cfg.SluiceBin, cfg.Progress = bin, progress
		rep, err := benchmark.TCP(ctx, cfg)
		if rep == nil {
			return nil, err
		}
		return rep, err
	})
}
