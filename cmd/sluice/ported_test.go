package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/cli"
	"github.com/sluicehq/sluice/tunnel"
	"github.com/sluicehq/sluice/wire"
)

// sluice udp --idle-timeout: the agent's session idle timeout, a positive
// duration (default tunnel.DefaultUDPIdleTimeout), in the agent's
// configuration; sluice tcp has no such flag.
func TestUDPIdleTimeoutFlag(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want time.Duration
	}{
		{[]string{"53"}, tunnel.DefaultUDPIdleTimeout},
		{[]string{"53", "--idle-timeout", "5s"}, 5 * time.Second},
		{[]string{"--idle-timeout=2m30s", "127.0.0.1:5353"}, 150 * time.Second},
	} {
		p, err := parsePorted("udp", udpHelp, c.args, io.Discard)
		if err != nil {
			t.Fatalf("%q: %v", c.args, err)
		}
		if p.o.udpIdle != c.want {
			t.Errorf("%q: idle timeout %v, want %v", c.args, p.o.udpIdle, c.want)
		}
		cfg := p.o.agentConfig("http://127.0.0.1:1", "T", nil, slog.New(slog.DiscardHandler), io.Discard, io.Discard, false)
		if cfg.Type != wire.TunnelUDP || cfg.UDPIdleTimeout != c.want {
			t.Errorf("%q: agent config type %q, UDP idle timeout %v; want udp, %v", c.args, cfg.Type, cfg.UDPIdleTimeout, c.want)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"udp", "53", "--idle-timeout", "0s"}, "--idle-timeout 0s is not a positive duration"},
		{[]string{"udp", "53", "--idle-timeout", "-1s"}, "--idle-timeout -1s is not a positive duration"},
		{[]string{"udp", "53", "--idle-timeout", "soon"}, `invalid value "soon" for flag -idle-timeout`},
		{[]string{"tcp", "5432", "--idle-timeout", "5s"}, "flag provided but not defined: -idle-timeout"},
	} {
		var stdout, stderr bytes.Buffer
		err := Run(context.Background(), c.args, &stdout, &stderr)
		if code := cli.ExitCode(err, false); code != 2 || stdout.Len() != 0 || !strings.Contains(fmt.Sprint(err), c.want) {
			t.Errorf("%q: exit %d, %v, stdout %q, stderr %q; want a usage error saying %q", c.args, code, err, &stdout, &stderr, c.want)
		}
	}
	code, _, stderr := runCmd(t, "udp", "--help")
	if code != 0 || !strings.Contains(stderr, "-idle-timeout duration") || !strings.Contains(stderr, "without a datagram either way") ||
		!strings.Contains(stderr, "(default 1m0s)") {
		t.Errorf("udp --help: exit %d, no --idle-timeout with what it does and its default:\n%s", code, stderr)
	}
	if _, _, stderr := runCmd(t, "tcp", "--help"); strings.Contains(stderr, "-idle-timeout") {
		t.Errorf("tcp --help shows --idle-timeout:\n%s", stderr)
	}
}
