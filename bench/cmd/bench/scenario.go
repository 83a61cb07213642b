package main

import (
	"context"
	"flag"
	"io"

	"github.com/sluicehq/sluice/internal/cli"
)

// scenario is what every scenario command (scale, hol, budget, faults,
// limits, grpc, tcp) shares: the flags --sluice, --json and --quiet, no positional
// argument, the sluice binary built unless given, progress on stderr, and
// the report as a table or JSON.
type scenario struct {
	verb  string
	fs    *flag.FlagSet
	bin   *string
	json  *bool
	quiet *bool
}

// newScenario returns a scenario command's flag set, with the shared flags;
// the command adds its own.
func newScenario(verb, help string, stderr io.Writer) *scenario {
	fs := cli.NewFlagSet(verb, help, stderr)
	return &scenario{
		verb:  verb,
		fs:    fs,
		bin:   fs.String("sluice", "", "sluice binary run as edge and agents (default: built from this module with go build)"),
		json:  fs.Bool("json", false, "print one JSON object instead of the table"),
		quiet: fs.Bool("quiet", false, "print no progress on stderr"),
	}
}

// parse parses args, which must hold flags only.
func (sc *scenario) parse(args []string) error {
	pos, err := cli.Parse(sc.fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return cli.Usagef("%s: unexpected argument %q", sc.verb, pos[0])
	}
	return nil
}

// report is a scenario's result.
type report interface{ WriteTable(io.Writer) error }

// run runs a scenario with the sluice binary and the progress writer (nil
// with --quiet), and prints its report; rep is nil when there is nothing
// to print.
func (sc *scenario) run(ctx context.Context, stdout, stderr io.Writer, f func(bin string, progress io.Writer) (rep report, err error)) error {
	bin, cleanup, err := sluiceBinary(ctx, *sc.bin, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	var progress io.Writer
	if !*sc.quiet {
		progress = stderr
	}
	rep, runErr := f(bin, progress)
	if rep == nil {
		return runErr
	}
	return printReport(ctx, rep, runErr, *sc.json, *sc.quiet, stdout, stderr)
}
