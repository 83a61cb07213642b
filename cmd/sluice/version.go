package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

// currentVersion is version, or the module version the binary was built
// at when version was not set.
func currentVersion() string {
	if version == "dev" {
		if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
			return info.Main.Version
		}
	}
	return version
}

// buildCommit returns the VCS revision the binary was built from and
// whether the work tree had changes, from the build settings the go
// command records (vcs.revision, vcs.modified); "" when it recorded none
// (go install of a module version, or -buildvcs=false).
func buildCommit(info *debug.BuildInfo) (revision string, modified bool) {
	if info == nil {
		return "", false
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	return revision, modified
}

// versionLine is what "sluice version" prints: the version, the commit
// (with "+modified" when the work tree had changes), the Go version and
// the platform.
func versionLine(v string, info *debug.BuildInfo) string {
	commit := "commit unknown"
	if rev, modified := buildCommit(info); rev != "" {
		commit = "commit " + rev
		if modified {
			commit += "+modified"
		}
	}
	return fmt.Sprintf("sluice %s (%s, %s, %s/%s)\n", v, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func runVersion(stdout io.Writer) error {
	info, _ := debug.ReadBuildInfo()
	_, err := io.WriteString(stdout, versionLine(currentVersion(), info))
	return err
}
