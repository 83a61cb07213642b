package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/cli"
	"github.com/sluicehq/sluice/internal/pgtest"
	"github.com/sluicehq/sluice/internal/redistest"
)

// --cluster and its companions: clear errors before anything is opened
// or listens.
func TestEdgeClusterFlagErrors(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "secret")
	short := filepath.Join(dir, "short")
	os.WriteFile(good, []byte(strings.Repeat("k", 64)+"\n"), 0o600)
	os.WriteFile(short, []byte("0123456789abcdef0123456789abcde\n"), 0o600) // 31 bytes
	pg := "postgres://nobody@127.0.0.1:1/none"                              // never reached
	cluster := []string{"--cluster", "redis://127.0.0.1:1/0"}
	for _, tc := range []struct {
		name  string
		args  []string
		want  string
		usage bool
	}{
		{"sqlite", append([]string{"--data", dir, "--advertise", "http://127.0.0.1:1", "--cluster-secret-file", good}, cluster...), "--store postgres://", true},
		{"no store", append([]string{"--token", "T", "--advertise", "http://127.0.0.1:1", "--cluster-secret-file", good}, cluster...), "--store postgres://", true},
		{"no advertise", append([]string{"--store", pg, "--cluster-secret-file", good}, cluster...), "--advertise", true},
		{"no secret", append([]string{"--store", pg, "--advertise", "http://127.0.0.1:1"}, cluster...), "--cluster-secret-file", true},
		{"short secret", append([]string{"--store", pg, "--advertise", "http://127.0.0.1:1", "--cluster-secret-file", short}, cluster...), "holds 31 bytes", false},
		{"missing secret", append([]string{"--store", pg, "--advertise", "http://127.0.0.1:1", "--cluster-secret-file", filepath.Join(dir, "none")}, cluster...), "--cluster-secret-file", false},
		{"advertise path", append([]string{"--store", pg, "--advertise", "http://127.0.0.1:1/edge", "--cluster-secret-file", good}, cluster...), "advertise URL", true},
		{"not redis", []string{"--store", pg, "--advertise", "http://127.0.0.1:1", "--cluster-secret-file", good, "--cluster", "http://127.0.0.1:6379"}, "redis://", true},
		{"advertise alone", []string{"--token", "T", "--advertise", "http://127.0.0.1:1"}, "--cluster", true},
		{"secret alone", []string{"--token", "T", "--cluster-secret-file", good}, "--cluster", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"edge", "--listen", "127.0.0.1:0"}, tc.args...)
			err := Run(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{})
			var ue *cli.UsageError
			if err == nil || !strings.Contains(err.Error(), tc.want) || errors.As(err, &ue) != tc.usage {
				t.Fatalf("err = %v, want an error naming %s (usage error: %v)", err, tc.want, tc.usage)
			}
		})
	}
}

// The interface of the contract: an edge with a PostgreSQL
// store, a Redis and a secret starts, says its cluster id, and reports
// the cluster in /healthz.
func TestEdgeClusterStarts(t *testing.T) {
	rs := redistest.Start(t)
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("0123456789abcdef0123456789abcdef\n"), 0o600)
	url, _ := startEdgeCmd(t, "--domain", "localhost", "--store", pgtest.Schema(t), "--admin-token", "an-admin-token-of-some-length",
		"--cluster", rs.URL(0), "--advertise", "http://127.0.0.1:9", "--cluster-secret-file", secret, "--cluster-lease", "3s")
	client := &http.Client{Timeout: time.Minute}
	resp, err := client.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "ok\ncluster: edge ") || !strings.Contains(string(body), "lease 3s") {
		t.Fatalf("/healthz: %d %q", resp.StatusCode, body)
	}
}
