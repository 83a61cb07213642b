package e2e

// The agent's side of TLS and of the user's config: --ca for an edge with a
// private CA, the stop on a certificate error, sluice login, sluice start,
// sluice version.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tlsStoreEdge starts an edge with a self-signed certificate, a store and
// admin token A, and returns it, its https:// URL, the CA file and a
// fresh agent token.
func tlsStoreEdge(t *testing.T) (e *edgeProc, edgeURL, caFile, secret string, pool *x509.CertPool) {
	t.Helper()
	certFile, keyFile, pool := selfSigned(t)
	e = startEdge(t, "", "--tls-cert", certFile, "--tls-key", keyFile, "--data", t.TempDir(), "--admin-token", "A")
	edgeURL = "https://" + e.addr
	r := run(t, 30*time.Second, "tokens", "create", "--edge", edgeURL, "--admin-token", "A", "--ca", certFile)
	if r.code != 0 {
		t.Fatalf("tokens create --ca: exit %d, stderr %q", r.code, r.stderr)
	}
	return e, edgeURL, certFile, strings.TrimSpace(r.stdout), pool
}

// httpsClient sends every request to the edge at addr over TLS, trusting
// pool.
func httpsClient(t *testing.T, addr string, pool *x509.CertPool) *http.Client {
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// waitGet polls url until it answers 200 with want.
func waitGet(t *testing.T, c *http.Client, url, want string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		resp, body, err := tryDo(c, "GET", url, nil, nil, 10*time.Second)
		if err == nil && resp.StatusCode == 200 && string(body) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer %q (last: %v %q %v)", url, want, resp, body, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// With --ca, sluice http, sluice agent and sluice tunnels reach an edge
// whose certificate a private CA signed, over https:// and wss://; without
// it, the agents stop after a few attempts with a message that says what
// to fix, and a non-zero exit status.
func TestAgentPrivateCA(t *testing.T) {
	t.Parallel()
	e, edgeURL, caFile, secret, pool := tlsStoreEdge(t)
	up := namedUpstream(t, "private-ca")
	c := httpsClient(t, e.addr, pool)
	public := func(name string) string { return fmt.Sprintf("https://%s.localhost:%d/", name, e.port) }

	a := startProc(t, "agent ca", "http", strconv.Itoa(up.port), "--edge", edgeURL, "--token", secret, "--name", "adhoc", "--ca", caFile)
	if !a.waitOutput(a.stdout, "Forwarding "+strings.TrimSuffix(public("adhoc"), "/"), time.Minute) {
		t.Fatalf("sluice http --ca did not connect\nstderr: %s", a.stderr)
	}
	if !a.waitOutput(a.stderr, "tunnel up", time.Minute) {
		t.Fatalf("no tunnel up line: %s", a.stderr)
	}
	waitGet(t, c, public("adhoc"), "private-ca")

	r := run(t, 30*time.Second, "tunnels", "create", "managed", "--upstream", "http://127.0.0.1:"+strconv.Itoa(up.port),
		"--agent-token", secret, "--edge", edgeURL, "--admin-token", "A", "--ca", caFile)
	if r.code != 0 {
		t.Fatalf("tunnels create --ca: exit %d, stderr %q", r.code, r.stderr)
	}
	m := startProc(t, "managed agent ca", "agent", "--edge", edgeURL, "--token", secret, "--ca", caFile)
	if !m.waitOutput(m.stderr, "Forwarding "+strings.TrimSuffix(public("managed"), "/"), time.Minute) {
		t.Fatalf("sluice agent --ca did not connect\nstderr: %s", m.stderr)
	}
	waitGet(t, c, public("managed"), "private-ca")

	// Without --ca (and without the CA in SSL_CERT_FILE).
	for _, args := range [][]string{
		{"http", strconv.Itoa(up.port), "--edge", edgeURL, "--token", secret, "--name", "untrusted"},
		{"agent", "--edge", edgeURL, "--token", secret},
		{"tunnels", "list", "--edge", edgeURL, "--admin-token", "A"},
	} {
		r := run(t, 2*time.Minute, args...)
		if r.code != 1 || !strings.Contains(r.stderr, "certificate") || !strings.Contains(r.stderr, "--ca FILE") && args[0] != "tunnels" {
			t.Errorf("sluice %s without --ca: exit %d, stderr %q; want 1 and a message naming --ca FILE", args[0], r.code, r.stderr)
		}
		if args[0] == "http" {
			// CertAttempts (3) connections: two waits to reconnect.
			if n := strings.Count(r.stderr, "reconnecting in"); n != 2 {
				t.Errorf("sluice http retried %d times, want 2:\n%s", n, r.stderr)
			}
		}
	}
}

// sluice login stores the edge and the token (given in a file), and sluice
// http then needs neither: the token is in no process's arguments.
func TestLoginThenHTTP(t *testing.T) {
	t.Parallel()
	const token = "login-token-0123456789"
	e := startEdge(t, token)
	edgeURL := "http://" + e.addr
	home := t.TempDir()
	env := []string{"XDG_CONFIG_HOME=" + home, "SLUICE_TOKEN="}
	login := startProcEnv(t, "login", env, "login", "--edge", edgeURL, "--token-file", writeFile(t, "token", token))
	<-login.done
	if login.err != nil {
		t.Fatalf("login: %v\nstderr: %s", login.err, login.stderr)
	}
	path := filepath.Join(home, "sluice", "config.json")
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: %v, %v; want mode %v", p, fi, err, want)
		}
	}

	up := namedUpstream(t, "logged-in")
	a := startProcEnv(t, "agent", env, "http", strconv.Itoa(up.port), "--name", "li")
	want := fmt.Sprintf("Forwarding %s -> http://127.0.0.1:%d\n", e.publicURL("li"), up.port)
	if !a.waitOutput(a.stdout, want, time.Minute) {
		t.Fatalf("sluice http after login did not print %q\nstderr: %s", want, a.stderr)
	}
	waitGet(t, tunnelClient(t, e.addr), e.publicURL("li")+"/", "logged-in")
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", a.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(cmdline), token) || !strings.Contains(string(cmdline), "li") {
		t.Errorf("the agent's arguments %q", strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
}

// sluice start --all starts every tunnel a config file declares.
func TestStartConfig(t *testing.T) {
	t.Parallel()
	const token = "start-token-0123456789"
	e := startEdge(t, token)
	one, two := namedUpstream(t, "one"), namedUpstream(t, "two")
	cfg, _ := json.Marshal(map[string]any{
		"edge":  "http://" + e.addr,
		"token": token,
		"tunnels": map[string]any{
			"first":  map[string]any{"upstream": strconv.Itoa(one.port)},
			"second": map[string]any{"upstream": "http://127.0.0.1:" + strconv.Itoa(two.port), "basic_auth": "me:pass"},
		},
	})
	file := writeFile(t, "sluice.json", string(cfg))
	p := startProcEnv(t, "start", []string{"XDG_CONFIG_HOME=" + t.TempDir()}, "start", "--all", "--config", file)
	for _, name := range []string{"first", "second"} {
		if !p.waitOutput(p.stdout, "Forwarding "+e.publicURL(name), time.Minute) {
			t.Fatalf("sluice start did not bring up %s\nstdout: %s\nstderr: %s", name, p.stdout, p.stderr)
		}
	}
	c := tunnelClient(t, e.addr)
	waitGet(t, c, e.publicURL("first")+"/", "one")
	if resp, _ := do(t, c, "GET", e.publicURL("second")+"/", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("second without basic auth: %s, want 401", resp.Status)
	}
	resp, body := do(t, c, "GET", e.publicURL("second")+"/", nil, http.Header{"Authorization": {"Basic bWU6cGFzcw=="}})
	if resp.StatusCode != 200 || string(body) != "two" {
		t.Errorf("second with basic auth: %s %q", resp.Status, body)
	}
}

// sluice version prints the commit the binary was built from, as the go
// command recorded it.
func TestVersionCommit(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "version", "-m", sluiceBin).Output()
	if err != nil {
		t.Fatal(err)
	}
	rev := ""
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "build" && strings.HasPrefix(f[1], "vcs.revision=") {
			rev = strings.TrimPrefix(f[1], "vcs.revision=")
		}
	}
	r := run(t, 20*time.Second, "version")
	want := "commit unknown"
	if rev != "" {
		want = "commit " + rev
	}
	if r.code != 0 || !strings.HasPrefix(r.stdout, "sluice ") || !strings.Contains(r.stdout, want) {
		t.Errorf("sluice version: exit %d, %q; want %q in it (go version -m: %s)", r.code, r.stdout, want, out)
	}
}

// writeFile writes content to a file of a temporary directory (mode 0600)
// and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
