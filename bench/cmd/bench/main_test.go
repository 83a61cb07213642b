package main

import (
	"bytes"
	"context"
	"errors"
	"github.com/sluicehq/sluice/internal/cli"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Mistakes in the command line are usage errors (exit status 2) that say
// what was wrong; --help is not an error.
func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string // in stderr
	}{
		{[]string{"--targets", "caddy"}, 2, `unknown target "caddy"`},
		{[]string{"--size", "lots"}, 2, `"lots" is not a size`},
		{[]string{"extra"}, 2, `unknown command "extra"`},
		{[]string{"--quick", "--no-such-flag"}, 2, "no-such-flag"},
		{[]string{"relay", "127.0.0.1:0"}, 2, "want LISTEN and TARGET"},
		{[]string{"scale", "--protocols", "v3"}, 2, `unknown protocol "v3"`},
		{[]string{"hol", "--protocols", ""}, 2, "none given"},
		{[]string{"scale", "--streams", "0"}, 2, "must be positive"},
		{[]string{"faults", "--faults", "latency,fire"}, 2, `unknown fault "fire"`},
		{[]string{"faults", "--links", ""}, 2, "no link given"},
		{[]string{"faults", "--requests", "0"}, 2, "must be positive"},
		{[]string{"faults", "--max-size", "1"}, 2, "--max-size"},
		{[]string{"limits", "--names", "0", "--uploads", "0"}, 2, "nothing to run"},
		{[]string{"limits", "--workers", "0"}, 2, "must be positive"},
		{[]string{"grpc", "--protocols", "v3"}, 2, `unknown protocol "v3"`},
		{[]string{"inspect", "--protocol", "v3"}, 2, `unknown protocol "v3"`},
		{[]string{"inspect", "--rounds", "0"}, 2, "must be positive"},
		{[]string{"cluster", "--postgres", ""}, 2, "--postgres URL is needed"},
		{[]string{"cluster", "--postgres", "postgres://x", "--names", "0"}, 2, "must be positive"},
		{[]string{"cluster", "--postgres", "postgres://x", "--protocol", "v3"}, 2, `unknown protocol "v3"`},
		{[]string{"cluster", "--help"}, 0, "Usage: go run ./bench/cmd/bench cluster"},
		{[]string{"grpc", "--callers", "0"}, 2, "must be positive"},
		{[]string{"grpc", "--message-size", "2MiB"}, 2, "at most 1MiB"},
		{[]string{"grpc", "--message-size", "big"}, 2, "not a size"},
		{[]string{"grpc", "--help"}, 0, "Usage: go run ./bench/cmd/bench grpc"},
		{[]string{"tcp", "--protocols", "v3"}, 2, `unknown protocol "v3"`},
		{[]string{"tcp", "--held", "0"}, 2, "must be positive"},
		{[]string{"tcp", "--message-size", "1MiB"}, 2, "at most 64KiB"},
		{[]string{"tcp", "--size", "lots"}, 2, "not a size"},
		{[]string{"tcp", "--help"}, 0, "Usage: go run ./bench/cmd/bench tcp"},
		{[]string{"sseload", "nope"}, 1, `unknown mode "nope"`},
		{[]string{"--help"}, 0, "Usage: go run ./bench/cmd/bench"},
		{[]string{"relay", "--help"}, 0, "Usage: bench relay LISTEN TARGET"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := Run(context.Background(), tc.args, &stdout, &stderr)
			if code := cli.ExitCode(err, false); code != tc.code {
				t.Errorf("exit code %d (%v), want %d", code, err, tc.code)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tc.want)
			}
		})
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]int64{"1GiB": 1 << 30, "64MiB": 64 << 20, "500KB": 500e3, "1e6": 1e6, "1048576": 1 << 20, " 2 MB ": 2e6} {
		if got, err := cli.ParseSize(in); err != nil || got != want {
			t.Errorf("cli.ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1MiB", "0", "x", "1TB"} {
		if _, err := cli.ParseSize(in); err == nil {
			t.Errorf("cli.ParseSize(%q) accepted", in)
		}
	}
}

func TestExitCode(t *testing.T) {
	if c := cli.ExitCode(nil, true); c != 130 {
		t.Errorf("interrupted: %d", c)
	}
	if c := cli.ExitCode(errors.New("x"), false); c != 1 {
		t.Errorf("error: %d", c)
	}
}
