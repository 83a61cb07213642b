// Package testtool finds the programs that tests run as real parts
// (redis-server, named, haproxy, sshd, dnsmasq, ...), by one rule: in
// $PATH, else in /usr/sbin (not on a non-root PATH); missing, the test is
// skipped (visibly, naming the apt package), except under CI (CI set),
// where it fails: bash .ci/run installs every one of them.
package testtool

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Need returns the path of the program name, from the apt package pkg.
func Need(tb testing.TB, name, pkg string) string {
	tb.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if p := filepath.Join("/usr/sbin", name); isFile(p) {
		return p
	}
	if os.Getenv("CI") != "" {
		tb.Fatalf("%s is not installed: CI must install it (apt-get install %s; bash .ci/run does)", name, pkg)
	}
	tb.Skipf("%s is not installed: apt-get install %s (bash .ci/run does)", name, pkg)
	return ""
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}
