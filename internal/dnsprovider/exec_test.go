package dnsprovider_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libdns/libdns"

	"github.com/sluicehq/sluice/internal/dnsprovider"
)

// hook writes an executable shell script into a temporary directory.
func hook(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hook")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestExec runs a hook as certmagic's DNS01Solver would and checks its
// arguments and environment, which it writes to a file.
func TestExec(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := filepath.Join(t.TempDir(), "log")
	p := &dnsprovider.Exec{Command: hook(t, `echo "$# $1 $2 $3 | $SLUICE_DNS_ACTION $SLUICE_DNS_FQDN $SLUICE_DNS_VALUE $SLUICE_DNS_ZONE $SLUICE_DNS_TTL" >> `+log+"\necho chatter\n")}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	got, err := p.AppendRecords(ctx, "example.com.", []libdns.Record{
		libdns.TXT{Name: "_acme-challenge", Text: "v-1_x"},
		libdns.TXT{Name: "_acme-challenge.www", Text: "v 2", TTL: 2 * time.Minute},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].RR().TTL != dnsprovider.DefaultTTL {
		t.Fatalf("appended %v", got)
	}
	if _, err := p.DeleteRecords(ctx, "example.com.", got[:1]); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	want := `3 set _acme-challenge.example.com. v-1_x | set _acme-challenge.example.com. v-1_x example.com. 60
3 set _acme-challenge.www.example.com. v 2 | set _acme-challenge.www.example.com. v 2 example.com. 120
3 clear _acme-challenge.example.com. v-1_x | clear _acme-challenge.example.com. v-1_x example.com. 60
`
	if string(b) != want {
		t.Fatalf("the hook saw\n%s\nwant\n%s", b, want)
	}
}

func TestExecErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rec := []libdns.Record{libdns.TXT{Name: "_acme-challenge", Text: "v"}}

	t.Run("exit status", func(t *testing.T) {
		p := &dnsprovider.Exec{Command: hook(t, "echo trying\necho 'API token missing: set DNS_API_TOKEN' >&2\nexit 3\n")}
		_, err := p.AppendRecords(ctx, "example.com.", rec)
		t.Log(err)
		var he *dnsprovider.HookError
		if !errors.As(err, &he) || he.ExitCode != 3 || he.TimedOut {
			t.Fatalf("err = %#v, want a *HookError with exit status 3", err)
		}
		for _, s := range []string{"set _acme-challenge.example.com.", "exit status 3", "trying\nAPI token missing: set DNS_API_TOKEN"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not say %q", err, s)
			}
		}
	})

	t.Run("silent failure", func(t *testing.T) {
		p := &dnsprovider.Exec{Command: hook(t, "exit 1\n")}
		_, err := p.DeleteRecords(ctx, "example.com.", rec)
		if err == nil || !strings.Contains(err.Error(), "clear _acme-challenge.example.com.: exit status 1") || !strings.Contains(err.Error(), "wrote nothing") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("timeout kills the hook and its children", func(t *testing.T) {
		pidFile := filepath.Join(t.TempDir(), "pid")
		// The hook's child keeps the output pipe open: only killing the
		// group (or WaitDelay) ends the run.
		p := &dnsprovider.Exec{Command: hook(t, "sleep 600 &\necho $! > "+pidFile+"\necho waiting\nwait\n"), Timeout: 300 * time.Millisecond}
		start := time.Now()
		_, err := p.AppendRecords(ctx, "example.com.", rec)
		t.Log(err)
		var he *dnsprovider.HookError
		if !errors.As(err, &he) || !he.TimedOut || !strings.Contains(err.Error(), "--dns-exec-timeout") || !strings.Contains(err.Error(), "waiting") {
			t.Fatalf("err = %v, want a timeout", err)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Fatalf("returned after %v", d)
		}
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		proc := "/proc/" + strings.TrimSpace(string(b))
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			st, err := os.ReadFile(proc + "/stat")
			if err != nil || strings.Contains(string(st), ") Z ") { // gone, or a zombie for init to reap
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the hook's child %s still runs", proc)
			}
		}
	})

	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(ctx)
		cancel()
		p := &dnsprovider.Exec{Command: hook(t, "exit 0\n")}
		if _, err := p.AppendRecords(ctx, "example.com.", rec); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("TXT only", func(t *testing.T) {
		p := &dnsprovider.Exec{Command: hook(t, "exit 0\n")}
		_, err := p.AppendRecords(ctx, "example.com.", []libdns.Record{libdns.RR{Name: "x", Type: "A", Data: "127.0.0.1"}})
		if !errors.Is(err, dnsprovider.ErrUnsupported) {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("validate", func(t *testing.T) {
		for cmd, says := range map[string]string{"": "no command", filepath.Join(t.TempDir(), "absent"): "executable"} {
			if err := (&dnsprovider.Exec{Command: cmd}).Validate(); err == nil || !strings.Contains(err.Error(), says) {
				t.Errorf("Validate(%q) = %v", cmd, err)
			}
		}
	})
}
