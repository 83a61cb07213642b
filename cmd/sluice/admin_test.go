package main

import (
	"bytes"
	"context"
	"errors"
	"github.com/sluicehq/sluice/internal/cli"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/edge"
	"github.com/sluicehq/sluice/store"
)

// run runs the command line args and returns its exit code and output.
func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := Run(context.Background(), args, &out, &errOut)
	return cli.ExitCode(err, false), out.String(), errOut.String()
}

// A flag that a verb does not take is a usage error with that verb's
// usage, before anything is sent.
func TestAdminVerbRejectsOthersFlags(t *testing.T) {
	t.Parallel()
	admin := []string{"--edge", "http://127.0.0.1:1", "--admin-token", "A"}
	cases := []struct {
		args []string
		flag string
	}{
		{[]string{"tunnels", "list", "--upstream", "x"}, "upstream"},
		{[]string{"tunnels", "list", "--disabled"}, "disabled"},
		{[]string{"tunnels", "get", "web", "--host-header", "h"}, "host-header"},
		{[]string{"tunnels", "delete", "web", "--allow", "10.0.0.0/8"}, "allow"},
		{[]string{"tunnels", "create", "web", "--upstream", "http://x", "--agent-token", "T", "--kind", "admin"}, "kind"},
		{[]string{"tunnels", "update", "web", "--name", "x"}, "name"},
		{[]string{"tokens", "list", "--name", "x"}, "name"},
		{[]string{"tokens", "revoke", "ID", "--kind", "admin"}, "kind"},
		{[]string{"tokens", "create", "--upstream", "http://x"}, "upstream"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args[:2], "_")+"_"+c.flag, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runCmd(t, append(c.args, admin...)...)
			if code != 2 || stdout != "" {
				t.Fatalf("%q: exit %d, stdout %q", c.args, code, stdout)
			}
			if !strings.Contains(stderr, "flag provided but not defined: -"+c.flag) {
				t.Errorf("%q: stderr does not name the flag:\n%s", c.args, stderr)
			}
			if usage := "Usage: sluice " + c.args[0] + " " + c.args[1] + " "; !strings.Contains(stderr, usage) {
				t.Errorf("%q: stderr without %q:\n%s", c.args, usage, stderr)
			}
		})
	}
}

// The help of the commands and of each verb explains each flag.
func TestAdminHelp(t *testing.T) {
	t.Parallel()
	tunnelFlags := []string{"-type", "-upstream", "-remote-port", "-agent-token", "-host-header", "-basic-auth", "-allow", "-disabled", "-hostname", "-edge", "-admin-token"}
	cases := []struct {
		args  []string
		usage string
		flags []string
	}{
		{[]string{"tunnels", "--help"}, "Usage: sluice tunnels create|list|get|update|delete", tunnelFlags},
		{[]string{"tunnels", "-h"}, "Usage: sluice tunnels create|list|get|update|delete", tunnelFlags},
		{[]string{"tunnels", "create", "--help"}, "Usage: sluice tunnels create NAME", tunnelFlags},
		{[]string{"tunnels", "update", "web", "-h"}, "Usage: sluice tunnels update NAME", tunnelFlags},
		{[]string{"tunnels", "list", "--help"}, "Usage: sluice tunnels list", []string{"-edge", "-admin-token"}},
		{[]string{"tokens", "--help"}, "Usage: sluice tokens create|list|revoke", []string{"-name", "-kind", "-edge", "-admin-token"}},
		{[]string{"tokens", "create", "--help"}, "Usage: sluice tokens create", []string{"-name", "-kind", "-edge", "-admin-token"}},
	}
	for _, c := range cases {
		code, stdout, stderr := runCmd(t, c.args...)
		if code != 0 || stdout != "" || !strings.Contains(stderr, c.usage) {
			t.Errorf("%q: exit %d, stdout %q, stderr:\n%s", c.args, code, stdout, stderr)
			continue
		}
		for _, f := range c.flags {
			// Each flag is listed with its explanation on the next line.
			i := strings.Index(stderr, "  "+f+" ")
			if i < 0 {
				i = strings.Index(stderr, "  "+f+"\n")
			}
			if i < 0 {
				t.Errorf("%q: no flag %s in:\n%s", c.args, f, stderr)
				continue
			}
			rest := stderr[i:]
			if nl := strings.Index(rest, "\n"); nl < 0 || !strings.HasPrefix(rest[nl+1:], "    \t") || len(strings.TrimSpace(strings.SplitN(rest[nl+1:], "\n", 2)[0])) < 10 {
				t.Errorf("%q: flag %s without an explanation", c.args, f)
			}
		}
	}
	// With no verb: the help, and a usage error.
	if code, _, stderr := runCmd(t, "tunnels"); code != 2 || !strings.Contains(stderr, "Flags of create and update:") {
		t.Errorf("tunnels alone: exit %d, stderr:\n%s", code, stderr)
	}
	if code, _, stderr := runCmd(t, "tokens", "rotate"); code != 2 || !strings.Contains(stderr, `unknown subcommand "rotate"`) {
		t.Errorf("tokens rotate: exit %d, stderr:\n%s", code, stderr)
	}
}

// startAPIEdge runs an edge with a SQLite store and the admin token "A",
// and returns its URL.
func startAPIEdge(t *testing.T) string {
	t.Helper()
	st, err := store.Open(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := edge.New(edge.Config{Store: st, AdminTokens: []string{"A"}, Domain: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		hs.Close()
		srv.Close()
		st.Close()
	})
	return hs.URL
}

// Every verb against a real edge, with the flags as they work today
// (interleaved with the arguments, cleared with "").
func TestAdminVerbs(t *testing.T) {
	t.Parallel()
	url := startAPIEdge(t)
	admin := []string{"--edge", url, "--admin-token", "A"}
	ok := func(args ...string) (stdout, stderr string) {
		t.Helper()
		code, stdout, stderr := runCmd(t, append(args, admin...)...)
		if code != 0 {
			t.Fatalf("%q: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
		return stdout, stderr
	}
	out, errOut := ok("tokens", "create", "--name", "laptop")
	secret := strings.TrimSpace(out)
	if !strings.HasPrefix(errOut, "created agent token ") || !strings.Contains(errOut, `("laptop")`) || secret == "" {
		t.Fatalf("tokens create: stdout %q, stderr %q", out, errOut)
	}
	id := strings.Fields(errOut)[3]
	id = strings.TrimSuffix(id, ";")

	out, _ = ok("tunnels", "create", "--edge", url, "web", "--upstream", "http://127.0.0.1:3000", "--agent-token", secret,
		"--basic-auth", "u:p", "--allow", "10.0.0.0/8, 192.168.0.0/16", "--host-header", "rewrite", "--disabled")
	want := "web -> http://127.0.0.1:3000 (agent token " + id + ", enabled false, version 1)\n  basic auth: user \"u\"\n  allowed: 10.0.0.0/8, 192.168.0.0/16\n"
	if out != want {
		t.Fatalf("tunnels create: %q, want %q", out, want)
	}
	out, _ = ok("tunnels", "update", "web", "--disabled=false", "--basic-auth", "", "--allow", "", "--upstream", "http://127.0.0.1:4000")
	if want := "web -> http://127.0.0.1:4000 (agent token " + id + ", enabled true, version 2)\n"; out != want {
		t.Fatalf("tunnels update: %q, want %q", out, want)
	}
	if out, _ = ok("tunnels", "get", "web"); !strings.HasPrefix(out, "web -> http://127.0.0.1:4000 ") {
		t.Fatalf("tunnels get: %q", out)
	}
	if out, _ = ok("tunnels", "list"); !strings.Contains(out, "NAME") || !strings.Contains(out, "web  ") {
		t.Fatalf("tunnels list: %q", out)
	}
	if code, _, stderr := runCmd(t, append([]string{"tunnels", "update", "web"}, admin...)...); code != 2 || !strings.Contains(stderr, "nothing to change") {
		t.Fatalf("update with nothing: exit %d, %q", code, stderr)
	}
	if code, _, stderr := runCmd(t, append([]string{"tunnels", "create", "x", "--upstream", "http://x"}, admin...)...); code != 2 || !strings.Contains(stderr, "--agent-token are required") {
		t.Fatalf("create without --agent-token: exit %d, %q", code, stderr)
	}
	if code, _, stderr := runCmd(t, append([]string{"tunnels", "create", "x", "--upstream", "ftp://x", "--agent-token", secret}, admin...)...); code != 1 ||
		!strings.Contains(stderr, `sluice: tunnels create x: upstream "ftp://x" is not an http://, https:// or h2c:// URL (HTTP 400, bad_upstream)`) {
		t.Fatalf("create with a bad upstream: exit %d, %q", code, stderr)
	}
	if out, _ = ok("tunnels", "delete", "web"); out != "deleted web\n" {
		t.Fatalf("tunnels delete: %q", out)
	}
	if out, _ = ok("tokens", "list"); !strings.Contains(out, id) || !strings.Contains(out, "laptop") {
		t.Fatalf("tokens list: %q", out)
	}
	if out, _ = ok("tokens", "revoke", id); out != "revoked "+id+"\n" {
		t.Fatalf("tokens revoke: %q", out)
	}
	code, _, stderr := runCmd(t, "tunnels", "list", "--edge", url, "--admin-token", "wrong")
	if code != 1 || !strings.Contains(stderr, "sluice: tunnels list: wrong admin token (HTTP 401, unauthorized)") {
		t.Fatalf("wrong admin token: exit %d, stderr %q", code, stderr)
	}
	if code, _, stderr := runCmd(t, "tunnels", "list", "--edge", "127.0.0.1:1", "--admin-token", "A"); code != 2 || !strings.Contains(stderr, "--edge must be") {
		t.Fatalf("edge without scheme: exit %d, stderr %q", code, stderr)
	}
}

// --hostname: repeatable with create, replaces the list with update,
// clears it with ""; shown by create, get, update and list; the edge's
// refusals (taken, invalid, under its domain) are clear errors.
func TestAdminHostnames(t *testing.T) {
	t.Parallel()
	url := startAPIEdge(t)
	admin := []string{"--edge", url, "--admin-token", "A"}
	run := func(args ...string) (int, string, string) {
		t.Helper()
		return runCmd(t, append(args, admin...)...)
	}
	ok := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := run(args...)
		if code != 0 {
			t.Fatalf("%q: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
		return stdout
	}
	secret := strings.TrimSpace(ok("tokens", "create"))
	out := ok("tunnels", "create", "web", "--upstream", "http://127.0.0.1:3000", "--agent-token", secret,
		"--hostname", "www.example.com", "--hostname", "App.Example.com.")
	if !strings.HasSuffix(out, ", version 1)\n  hostnames: app.example.com, www.example.com\n") {
		t.Fatalf("create with hostnames: %q", out)
	}
	if out := ok("tunnels", "get", "web"); !strings.Contains(out, "\n  hostnames: app.example.com, www.example.com\n") {
		t.Fatalf("get: %q", out)
	}
	out = ok("tunnels", "list")
	if lines := strings.Split(out, "\n"); !slices.Equal(strings.Fields(lines[0])[6:], []string{"HOSTNAMES", "TYPE"}) || !slices.Equal(strings.Fields(lines[1])[5:], []string{"app.example.com,www.example.com", "http"}) {
		t.Fatalf("list: %q", out)
	}
	code, _, stderr := run("tunnels", "create", "api", "--upstream", "http://127.0.0.1:3001", "--agent-token", secret, "--hostname", "app.example.com")
	if code != 1 || !strings.Contains(stderr, "sluice: tunnels create api: hostname app.example.com belongs to tunnel web") || !strings.Contains(stderr, "(HTTP 409, hostname_taken)") {
		t.Fatalf("a taken hostname: exit %d, %q", code, stderr)
	}
	code, _, stderr = run("tunnels", "update", "web", "--hostname", "app_example.com")
	if code != 1 || !strings.Contains(stderr, `hostname "app_example.com" is not a DNS name`) || !strings.Contains(stderr, "bad_hostname") {
		t.Fatalf("an invalid hostname: exit %d, %q", code, stderr)
	}
	code, _, stderr = run("tunnels", "update", "web", "--hostname", "web.localhost")
	if code != 1 || !strings.Contains(stderr, "under this edge's domain localhost") || !strings.Contains(stderr, "name the tunnel instead") {
		t.Fatalf("a hostname under the domain: exit %d, %q", code, stderr)
	}
	if out := ok("tunnels", "update", "web", "--hostname", "www.example.com"); !strings.HasSuffix(out, ", version 2)\n  hostnames: www.example.com\n") {
		t.Fatalf("replace: %q", out)
	}
	if out := ok("tunnels", "update", "web", "--upstream", "http://127.0.0.1:4000"); !strings.HasSuffix(out, "\n  hostnames: www.example.com\n") {
		t.Fatalf("an update without --hostname changed them: %q", out)
	}
	if out := ok("tunnels", "update", "web", "--hostname", ""); strings.Contains(out, "hostnames") {
		t.Fatalf("clear: %q", out)
	}
	if out := ok("tunnels", "list"); !slices.Equal(strings.Fields(strings.Split(out, "\n")[1])[5:], []string{"-", "http"}) {
		t.Fatalf("list without hostnames: %q", out)
	}
}

// --edge and --admin-token default to $SLUICE_EDGE and $SLUICE_ADMIN_TOKEN;
// the flags win.
func TestAdminEnvironment(t *testing.T) {
	url := startAPIEdge(t)
	t.Setenv("SLUICE_EDGE", url)
	t.Setenv("SLUICE_ADMIN_TOKEN", "A")
	if code, out, stderr := runCmd(t, "tokens", "list"); code != 0 || !strings.HasPrefix(out, "ID") {
		t.Fatalf("from the environment: exit %d, %q %q", code, out, stderr)
	}
	if code, _, stderr := runCmd(t, "tokens", "list", "--admin-token", "wrong"); code != 1 || !strings.Contains(stderr, "wrong admin token") {
		t.Fatalf("--admin-token over the environment: exit %d, %q", code, stderr)
	}
	t.Setenv("SLUICE_ADMIN_TOKEN", "")
	if code, _, stderr := runCmd(t, "tokens", "list"); code != 2 || !strings.Contains(stderr, "--admin-token is required") {
		t.Fatalf("no token: exit %d, %q", code, stderr)
	}
	var ue *cli.UsageError
	if err := Run(context.Background(), []string{"tokens", "list", "--edge", "ftp://x"}, &bytes.Buffer{}, &bytes.Buffer{}); !errors.As(err, &ue) {
		t.Fatalf("ftp edge: %v", err)
	}
}

// Tunnels of type tcp and udp: created with --type, a tcp:// (udp://) upstream and
// --remote-port, shown by get and in list's TYPE column; what does not go
// with the type is refused with the API's message.
func TestAdminTCPTunnels(t *testing.T) {
	t.Parallel()
	url := startAPIEdge(t)
	admin := []string{"--edge", url, "--admin-token", "A"}
	run := func(args ...string) (int, string, string) {
		t.Helper()
		return runCmd(t, append(args, admin...)...)
	}
	ok := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := run(args...)
		if code != 0 {
			t.Fatalf("%q: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
		return stdout
	}
	secret := strings.TrimSpace(ok("tokens", "create"))
	out := ok("tunnels", "create", "db", "--type", "tcp", "--upstream", "tcp://127.0.0.1:5432", "--remote-port", "20001", "--agent-token", secret)
	if !strings.HasPrefix(out, "db -> tcp://127.0.0.1:5432 (agent token ") || !strings.HasSuffix(out, ", version 1)\n  type: tcp, remote port 20001\n") {
		t.Fatalf("create: %q", out)
	}
	if out := ok("tunnels", "get", "db"); !strings.Contains(out, "\n  type: tcp, remote port 20001\n") {
		t.Fatalf("get: %q", out)
	}
	// TCP and UDP ports are apart: dns may have db's port number.
	out = ok("tunnels", "create", "dns", "--type", "udp", "--upstream", "udp://127.0.0.1:53", "--remote-port", "20001", "--agent-token", secret)
	if !strings.HasPrefix(out, "dns -> udp://127.0.0.1:53 (agent token ") || !strings.HasSuffix(out, ", version 1)\n  type: udp, remote port 20001\n") {
		t.Fatalf("create a udp tunnel: %q", out)
	}
	ok("tunnels", "create", "web", "--upstream", "http://127.0.0.1:3000", "--agent-token", secret)
	if out := ok("tunnels", "get", "web"); strings.Contains(out, "type:") {
		t.Fatalf("get of an http tunnel: %q", out)
	}
	lines := strings.Split(strings.TrimSpace(ok("tunnels", "list")), "\n")
	if len(lines) != 4 || !strings.HasSuffix(lines[0], "  TYPE") {
		t.Fatalf("list: %q", lines)
	}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if want := map[string]string{"db": "tcp", "dns": "udp", "web": "http"}[f[0]]; f[len(f)-1] != want {
			t.Errorf("list line %q: TYPE %q, want %q", l, f[len(f)-1], want)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"tunnels", "create", "x", "--type", "tcp", "--upstream", "http://127.0.0.1:1", "--agent-token", secret}, `upstream "http://127.0.0.1:1" is not a tcp://HOST:PORT URL`},
		{[]string{"tunnels", "create", "x", "--upstream", "tcp://127.0.0.1:1", "--agent-token", secret}, "tcp:// upstreams are for tunnels of type tcp"},
		{[]string{"tunnels", "create", "x", "--upstream", "http://127.0.0.1:1", "--remote-port", "20002", "--agent-token", secret}, "remote_port is for tunnels of type tcp"},
		{[]string{"tunnels", "create", "x", "--type", "tcp", "--upstream", "tcp://127.0.0.1:1", "--hostname", "db.example.com", "--agent-token", secret}, "has no hostnames"},
		{[]string{"tunnels", "create", "x", "--type", "tcp", "--upstream", "tcp://127.0.0.1:1", "--basic-auth", "u:p", "--agent-token", secret}, "basic auth does not apply"},
		{[]string{"tunnels", "create", "x", "--type", "sctp", "--upstream", "tcp://127.0.0.1:1", "--agent-token", secret}, "(HTTP 400, bad_type)"},
		{[]string{"tunnels", "create", "x", "--type", "udp", "--upstream", "tcp://127.0.0.1:1", "--agent-token", secret}, `upstream "tcp://127.0.0.1:1" is not a udp://HOST:PORT URL`},
		{[]string{"tunnels", "create", "x", "--type", "udp", "--upstream", "udp://127.0.0.1:53", "--remote-port", "20001", "--agent-token", secret}, "(HTTP 409, port_taken)"},
	} {
		if code, _, stderr := run(c.args...); code != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("%q: exit %d, stderr %q, want it to say %q", c.args, code, stderr, c.want)
		}
	}
	if out := ok("tunnels", "update", "db", "--remote-port", "0"); !strings.HasSuffix(out, "\n  type: tcp, remote port any of the edge's range\n") {
		t.Fatalf("update --remote-port 0: %q", out)
	}
}
