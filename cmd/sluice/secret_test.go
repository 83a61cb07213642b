package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// startEdgeCmd runs "sluice edge" with args in this process and returns
// its URL and the lines it wrote to stderr before it listened.
func startEdgeCmd(t *testing.T, args ...string) (url string, early []string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, append([]string{"edge", "--listen", "127.0.0.1:0"}, args...), io.Discard, pw)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("edge: %v", err)
		}
	})
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		line := sc.Text()
		if addr, ok := strings.CutPrefix(line, "sluice edge listening on "); ok {
			addr, _, _ = strings.Cut(addr, ";")
			go io.Copy(io.Discard, pr)
			return "http://" + addr, early
		}
		early = append(early, line)
	}
	t.Fatalf("the edge did not start: %q", early)
	return "", nil
}

// Finding 11 of issue 11: secrets only on the command line, where ps and
// /debug/pprof/cmdline show them, and weak ones accepted silently. The
// edge reads its admin token from a file, the admin commands from the
// environment, and a short token gets a warning (without the token).
func TestTokensFromFileAndEnvironment(t *testing.T) {
	const strong = "k3R9-vT2q-Lx8w-Pn4z"
	dir := t.TempDir()
	file := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(file, []byte(strong+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url, early := startEdgeCmd(t, "--data", filepath.Join(dir, "data"), "--admin-token-file", file)
	if strings.Contains(strings.Join(early, "\n"), "warning") {
		t.Errorf("a warning for a %d-character token: %q", len(strong), early)
	}

	t.Setenv("SLUICE_ADMIN_TOKEN", strong)
	if code, out, errOut := runCmd(t, "tokens", "list", "--edge", url); code != 0 {
		t.Fatalf("tokens list with $SLUICE_ADMIN_TOKEN: exit %d: %s %s", code, out, errOut)
	}
	if code, _, errOut := runCmd(t, "tokens", "list", "--edge", url, "--admin-token-file", file); code != 0 {
		t.Fatalf("tokens list with --admin-token-file: exit %d: %s", code, errOut)
	}
	t.Setenv("SLUICE_ADMIN_TOKEN", "wrong-but-long-enough")
	if code, _, errOut := runCmd(t, "tokens", "list", "--edge", url); code != 1 || !strings.Contains(errOut, "401") {
		t.Fatalf("tokens list with a wrong $SLUICE_ADMIN_TOKEN: exit %d: %s", code, errOut)
	}
	if code, _, errOut := runCmd(t, "tokens", "list", "--edge", url, "--admin-token", "x", "--admin-token-file", file); code != 2 {
		t.Fatalf("--admin-token and --admin-token-file together: exit %d, want 2: %s", code, errOut)
	}

	weak := filepath.Join(dir, "weak")
	os.WriteFile(weak, []byte("T\n"), 0o600)
	t.Setenv("SLUICE_ADMIN_TOKEN", "")
	_, early = startEdgeCmd(t, "--token-file", weak)
	if w := strings.Join(early, "\n"); !strings.Contains(w, "warning") || !strings.Contains(w, "--token-file") {
		t.Errorf("no warning for a 1-character token: %q", early)
	}
}

func TestSecretFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for content, want := range map[string]string{" \n": "is empty", "a\nb\n": "more than one line"} {
		p := filepath.Join(dir, "token")
		os.WriteFile(p, []byte(content), 0o600)
		if code, _, errOut := runCmd(t, "agent", "--edge", "http://127.0.0.1:1", "--token-file", p); code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("token file %q: exit %d: %s, want %q", content, code, errOut, want)
		}
	}
}
