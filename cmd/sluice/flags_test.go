package main

import (
	"errors"
	"github.com/sluicehq/sluice/internal/cli"
	"io"
	"reflect"
	"testing"
)

func TestParseInterleaved(t *testing.T) {
	t.Parallel()
	cases := []struct {
		args    []string
		pos     []string
		json    bool
		headers headerFlag
	}{
		{[]string{"URL"}, []string{"URL"}, false, nil},
		{[]string{"URL", "--json"}, []string{"URL"}, true, nil},
		{[]string{"--json", "URL"}, []string{"URL"}, true, nil},
		{[]string{"-H", "A: 1", "URL", "-H", "B: 2"}, []string{"URL"}, false, headerFlag{"A: 1", "B: 2"}},
		{[]string{"URL", "--", "--json"}, []string{"URL", "--json"}, false, nil},
	}
	for _, c := range cases {
		fs := cli.NewFlagSet("t", "", io.Discard)
		j := fs.Bool("json", false, "")
		var h headerFlag
		fs.Var(&h, "H", "")
		pos, err := cli.ParseInterleaved(fs, c.args)
		if err != nil {
			t.Fatalf("%q: %v", c.args, err)
		}
		if !reflect.DeepEqual(pos, c.pos) || *j != c.json || !reflect.DeepEqual(h, c.headers) {
			t.Errorf("%q: pos=%q json=%v headers=%q", c.args, pos, *j, h)
		}
	}
}

func TestParseInterleavedErrors(t *testing.T) {
	t.Parallel()
	fs := cli.NewFlagSet("t", "", io.Discard)
	var h headerFlag
	fs.Var(&h, "H", "")
	var ue *cli.UsageError
	if _, err := cli.ParseInterleaved(fs, []string{"-H", "no colon"}); !errors.As(err, &ue) {
		t.Errorf("bad header: %v", err)
	}
	if _, err := cli.ParseInterleaved(fs, []string{"--nope"}); !errors.As(err, &ue) {
		t.Errorf("unknown flag: %v", err)
	}
	if _, err := cli.ParseInterleaved(fs, []string{"--help"}); !errors.Is(err, cli.ErrHelp) {
		t.Errorf("help: %v", err)
	}
}

func TestExitCode(t *testing.T) {
	t.Parallel()
	cases := []struct {
		err         error
		interrupted bool
		want        int
	}{
		{nil, false, 0},
		{nil, true, 130},
		{cli.ErrHelp, false, 0},
		{cli.Usagef("x"), false, 2},
		{errors.New("boom"), false, 1},
		{errors.New("boom"), true, 130}, // a client cut short by Ctrl-C
	}
	for _, c := range cases {
		if got := cli.ExitCode(c.err, c.interrupted); got != c.want {
			t.Errorf("cli.ExitCode(%v, %v) = %d, want %d", c.err, c.interrupted, got, c.want)
		}
	}
}
