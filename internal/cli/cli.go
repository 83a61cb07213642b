// Package cli holds what the repository's commands (sluice, and the
// benchmark command) share about command lines: usage errors and exit
// codes, and flag sets whose errors are returned rather than fatal.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// UsageError is a mistake in the command line; it exits with 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a *UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{fmt.Sprintf(format, args...)}
}

// ErrHelp ends a command that printed its help on request.
var ErrHelp = errors.New("help requested")

// ExitConvention is the exit status convention of the repository's
// commands, as "sluice help" and the README give it.
const ExitConvention = `Exit status (every command):
  0        done: the command did its work; a server (edge, http, agent,
           demo) stopped by SIGINT or SIGTERM after draining is done too
  1        an error, reported on stderr
  2        a mistake in the command line
  130/143  cut short by SIGINT/SIGTERM (128 + the signal's number): a
           client command (events, tokens, tunnels) interrupted, or any
           command that a second signal made exit before it had drained
`

// ExitStatus maps a command's result to its exit status (ExitConvention):
// err is what the command returned, sig the signal that stopped it (nil if
// none), server whether stopping on a signal is the command's normal end.
func ExitStatus(err error, sig os.Signal, server bool) int {
	var ue *UsageError
	switch {
	case errors.Is(err, ErrHelp):
		return 0
	case errors.As(err, &ue):
		return 2
	case sig != nil && !server:
		return SignalCode(sig)
	case err != nil:
		return 1
	default:
		return 0
	}
}

// ExitCode is ExitStatus for a client command, interrupted meaning cut
// short by SIGINT: 0 for success or help, 2 for a usage error, 130 after
// an interrupt, 1 for any other error.
func ExitCode(err error, interrupted bool) int {
	var sig os.Signal
	if interrupted {
		sig = os.Interrupt
	}
	return ExitStatus(err, sig, false)
}

// NewFlagSet returns a flag set whose errors are returned, not fatal, and
// whose help text is the command's own.
func NewFlagSet(name, help string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), help)
		fmt.Fprintln(fs.Output(), "\nFlags:")
		fs.PrintDefaults()
	}
	return fs
}

// Parse parses args and returns the positional arguments: ErrHelp for
// -h/--help, a *UsageError for a bad flag.
func Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, ErrHelp
		}
		return nil, Usagef("%v", err)
	}
	return fs.Args(), nil
}

// ParseInterleaved is Parse for flags that may come before, between or
// after the positional arguments ("sluice events URL --json" as well as
// "sluice events --json URL").
func ParseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		rest, err := Parse(fs, args)
		if err != nil {
			return nil, err
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}
