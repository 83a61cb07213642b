package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/cli"
)

func TestVersionLine(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		info *debug.BuildInfo
		want string
	}{
		{"no build info", nil, "sluice v1.2.3 (commit unknown, "},
		{"clean", &debug.BuildInfo{Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.modified", Value: "false"}}}, "sluice v1.2.3 (commit 0123abcd, "},
		{"modified", &debug.BuildInfo{Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.modified", Value: "true"}}}, "sluice v1.2.3 (commit 0123abcd+modified, "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := versionLine("v1.2.3", tc.info); !strings.HasPrefix(got, tc.want) {
				t.Errorf("versionLine = %q, want it to start with %q", got, tc.want)
			}
		})
	}
}

// The config file is written with mode 0600 in a directory with mode
// 0700, and read back as written; unknown fields are errors.
func TestConfigFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cfg", "sluice", "config.json")
	c := &userConfig{Edge: "https://edge.example:8443", Token: "secret-token-0123456789", Tunnels: map[string]tunnelConfig{"web": {Upstream: "3000"}}}
	if err := c.save(path); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, %v; want %v", p, fi.Mode().Perm(), err, want)
		}
	}
	got, err := loadConfig(path, true)
	if err != nil || got.Edge != c.Edge || got.Token != c.Token || got.Tunnels["web"].Upstream != "3000" {
		t.Fatalf("loadConfig = %+v, %v", got, err)
	}
	if _, err := loadConfig(filepath.Join(t.TempDir(), "none.json"), false); err != nil {
		t.Errorf("a missing default file: %v", err)
	}
	if _, err := loadConfig(filepath.Join(t.TempDir(), "none.json"), true); err == nil {
		t.Error("a missing --config file was accepted")
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad, []byte(`{"edge":"https://x","tokn":"typo"}`), 0o600)
	if _, err := loadConfig(bad, true); err == nil || !strings.Contains(err.Error(), "tokn") {
		t.Errorf("unknown field: %v", err)
	}
}

// Flags win over the file; the stored token and CA go only to the stored
// edge.
func TestEdgeDefaults(t *testing.T) {
	t.Parallel()
	c := &userConfig{Edge: "https://edge.example", Token: "stored", CA: "/ca.pem"}
	cases := []struct {
		name string
		in   edgeDefaults
		want edgeDefaults
	}{
		{"nothing given", edgeDefaults{}, edgeDefaults{edge: "https://edge.example", token: "stored", ca: "/ca.pem"}},
		{"same edge given", edgeDefaults{edge: "https://EDGE.example/", edgeGiven: true}, edgeDefaults{edge: "https://EDGE.example/", token: "stored", ca: "/ca.pem", edgeGiven: true}},
		{"token given", edgeDefaults{token: "flag"}, edgeDefaults{edge: "https://edge.example", token: "flag", ca: "/ca.pem"}},
		{"another edge", edgeDefaults{edge: "https://other.example", edgeGiven: true}, edgeDefaults{edge: "https://other.example", edgeGiven: true}},
		{"another port", edgeDefaults{edge: "https://edge.example:8443", edgeGiven: true}, edgeDefaults{edge: "https://edge.example:8443", edgeGiven: true}},
		{"plain http", edgeDefaults{edge: "http://edge.example", edgeGiven: true}, edgeDefaults{edge: "http://edge.example", edgeGiven: true}},
		{"embedded forced", edgeDefaults{edgeGiven: true}, edgeDefaults{edgeGiven: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.in
			d.resolve(c)
			if d != tc.want {
				t.Errorf("resolve = %+v, want %+v", d, tc.want)
			}
		})
	}
}

// sluice login checks the edge, then stores it and the token (from a
// file) in the config file; a refused token stores nothing.
func TestLogin(t *testing.T) {
	t.Parallel()
	edgeURL, _ := startEdgeCmd(t, "--data", t.TempDir(), "--admin-token", "admin-token-0123456789")
	dir := t.TempDir()
	path := filepath.Join(dir, "sluice", "config.json")
	admin := filepath.Join(dir, "admin")
	os.WriteFile(admin, []byte("admin-token-0123456789\n"), 0o600)
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"tokens", "create", "--edge", edgeURL, "--admin-token-file", admin}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, out.Bytes(), 0o600)

	var stderr bytes.Buffer
	if err := Run(context.Background(), []string{"login", "--edge", edgeURL, "--token-file", tokenFile, "--config", path}, &bytes.Buffer{}, &stderr); err != nil {
		t.Fatalf("login: %v; stderr %s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "the edge accepts the token") {
		t.Errorf("login did not check the token: %s", stderr.String())
	}
	var stored userConfig
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &stored); err != nil || stored.Edge != edgeURL || stored.Token != strings.TrimSpace(out.String()) {
		t.Fatalf("stored %s (%v)", b, err)
	}

	os.WriteFile(tokenFile, []byte("wrong-token-0123456789"), 0o600)
	other := filepath.Join(dir, "other.json")
	err := Run(context.Background(), []string{"login", "--edge", edgeURL, "--token-file", tokenFile, "--config", other}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "refused the token") {
		t.Errorf("login with a wrong token: %v", err)
	}
	if _, err := os.Stat(other); err == nil {
		t.Error("a refused token was stored")
	}
	var ue *cli.UsageError
	if err := Run(context.Background(), []string{"login", "--edge", edgeURL, "--config", other}, &bytes.Buffer{}, &bytes.Buffer{}); !errors.As(err, &ue) {
		t.Errorf("login without a token: %v, want a usage error", err)
	}
}
