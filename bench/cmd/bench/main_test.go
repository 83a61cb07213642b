package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/benchmark"
	"github.com/sluicehq/sluice/internal/cli"
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
		{[]string{"--rounds", "0"}, 2, "--rounds must be at least 1"},
		{[]string{"--base", "/nonexistent/sluice", "--targets", "v2"}, 2, "add it to --targets"},
		{[]string{"--base", "/nonexistent/sluice", "--targets", "v2,sluice-v2-base"}, 2, "--base: stat /nonexistent/sluice"},
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

// A --quick run of the command, as a user runs it, through the relays,
// sluice v2, sluice v2 from a base binary and sluice's TCP tunnel: the
// figures by process (CPU per GiB and per small request, memory per held
// stream, each for the edge and the agent) and the paced many-stream SSE
// run are there and positive, and so is each tunnel's run paired with the
// relays. The base binary (a script that notes its arguments, then runs
// sluice) ran the base target's edge and agent.
func TestQuickRun(t *testing.T) {
	dir := t.TempDir()
	bench, sluice := filepath.Join(dir, "bench"), filepath.Join(dir, "sluice")
	for pkg, out := range map[string]string{".": bench, "github.com/sluicehq/sluice/cmd/sluice": sluice} {
		if b, err := exec.Command("go", "build", "-o", out, pkg).CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", pkg, err, b)
		}
	}
	base, marks := filepath.Join(dir, "base"), filepath.Join(dir, "base-runs")
	script := "#!/bin/sh\necho \"$1\" >> '" + marks + "'\nexec '" + sluice + "' \"$@\"\n"
	if err := os.WriteFile(base, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bench, "--quick", "--json", "--targets", "relays,sluice-v2,sluice-v2-base,sluice-tcp", "--nginx", "off",
		"--sluice", sluice, "--base", base)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench --quick: %v\nstderr:\n%s", err, stderr.String())
	}
	var rep benchmark.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("%v\n%s", err, stdout.String())
	}
	quick := benchmark.QuickConfig()
	if len(rep.Targets) != 4 {
		t.Fatalf("targets: %+v", rep.Targets)
	}
	if b, err := os.ReadFile(marks); err != nil || !strings.Contains(string(b), "edge\n") || !strings.Contains(string(b), "http\n") {
		t.Errorf("the base binary ran: %q, %v", b, err)
	}
	positive := func(p *float64) bool { return p != nil && *p > 0 }
	for _, r := range rep.Targets {
		if r.Error != "" {
			t.Errorf("%s: %s", r.Name, r.Error)
			continue
		}
		if r.CPU == nil {
			t.Errorf("%s: no CPU figures", r.Name)
			continue
		}
		// 32 MiB is a few 10 ms ticks of CPU time: the bulk totals are
		// positive, their shares there.
		for what, s := range map[string]*benchmark.Split{"download": r.CPU.DownloadSPerGiB, "upload": r.CPU.UploadSPerGiB} {
			if s == nil || !(s.Total > 0) || s.Edge == nil || s.Agent == nil {
				t.Errorf("%s: CPU per GiB of the %s: %+v", r.Name, what, s)
			}
		}
		if s := r.CPU.SmallUsPerReq; s == nil || !(s.Total > 0) || !positive(s.Edge) || !positive(s.Agent) {
			t.Errorf("%s: CPU per small request: %+v", r.Name, s)
		}
		if m := r.Memory; m == nil || !(m.ByRole.Total > 0) || !positive(m.ByRole.Edge) || !positive(m.ByRole.Agent) {
			t.Errorf("%s: memory per held stream: %+v", r.Name, m)
		}
		if s := r.SSEPaced; s == nil || s.Streams != quick.SSEStreams || s.IntervalMs != 250 || s.Events <= 0 || !(s.P99Ms > 0) {
			t.Errorf("%s: paced SSE run: %+v", r.Name, s)
		}
		// The tunnel is measured again beside the relays; the relays are not.
		switch p := r.Paired; {
		case r.Name == "relays" && p != nil:
			t.Errorf("relays: a paired run: %+v", p)
		case r.Name != "relays" && (p == nil || p.Clients != quick.Clients/2 || !(p.UsPerReq > 0) || !(p.RelaysUsPerReq > 0) ||
			math.Abs(p.CPURatio-p.UsPerReq/p.RelaysUsPerReq) > 1e-9 || !(p.ReqRatio > 0)):
			t.Errorf("%s: the run paired with the relays: %+v", r.Name, p)
		}
	}
	if testing.Verbose() {
		t.Logf("stderr:\n%s", stderr.String())
	}
}
