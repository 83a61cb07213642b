package main

import (
	"context"
	"io"
	"time"

	"github.com/sluicehq/sluice/internal/benchmark"
	"github.com/sluicehq/sluice/internal/cli"
)

const grpcHelp = `Usage: go run ./bench/cmd/bench grpc [flags]

Measures gRPC through sluice against the same server reached directly, in
one run: a grpc-go server (the interop TestService of
google.golang.org/grpc/interop/grpc_testing) inside this process, on
loopback with h2c (HTTP/2 without TLS, prior knowledge), measured directly
and then through an edge and an agent ("sluice http h2c://127.0.0.1:PORT",
two child processes of the sluice binary) for each protocol, the client
reaching the edge's plain listener with h2c prior knowledge. Two phases per
target: unary calls (UnaryCall, 100 bytes each way) from --callers callers
back to back on one connection, and server streaming (StreamingOutputCall,
--messages messages of --message-size per call) from --streams calls at a
time; each phase lasts --duration after a short warm-up. The table gives
calls/s, latency, messages/s and MB/s, each with its ratio to direct. Every
answer's size is checked; a failure ends with exit status 1. The default
test suite runs the same for a fraction of a second (internal/benchmark).

  go run ./bench/cmd/bench grpc                      direct, v1, v2: about 25 s each
  go run ./bench/cmd/bench grpc --protocols v2 --message-size 64KiB

Progress goes to stderr, the table (or JSON) to stdout.
`

func runGRPC(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sc := newScenario("grpc", grpcHelp, stderr)
	fs := sc.fs
	protocols := fs.String("protocols", "v1,v2", "sluice protocols measured after direct, comma-separated: v1, v2")
	callers := fs.Int("callers", 50, "concurrent unary callers, all on one connection")
	streams := fs.Int("streams", 1, "concurrent server-streaming calls")
	msgSize := cli.Size(1 << 10)
	fs.Var(&msgSize, "message-size", "payload of each streamed message, at most 1MiB (suffixes KiB, MiB, KB, MB)")
	batch := fs.Int("messages", 1000, "messages of each server-streaming call")
	duration := fs.Duration("duration", 10*time.Second, "length of each measured phase (unary, streaming) per target")
	if err := sc.parse(args); err != nil {
		return err
	}
	if *callers <= 0 || *streams <= 0 || *batch <= 0 || *duration <= 0 {
		return cli.Usagef("grpc: --callers, --streams, --messages and --duration must be positive")
	}
	if msgSize > 1<<20 {
		return cli.Usagef("grpc: --message-size must be at most 1MiB")
	}
	cfg := benchmark.GRPCConfig{Callers: *callers, Streams: *streams, MessageSize: int(msgSize), Batch: *batch, Duration: *duration}
	var err error
	if cfg.Protocols, err = parseProtocols("grpc", *protocols); err != nil {
		return err
	}
	return sc.run(ctx, stdout, stderr, func(bin string, progress io.Writer) (report, error) {
		cfg.SluiceBin, cfg.Progress = bin, progress
		rep, err := benchmark.GRPC(ctx, cfg)
		if rep == nil {
			return nil, err
		}
		return rep, err
	})
}
