// Package buildinfo tells the version of the running kvd or kvctl binary
// from what the Go toolchain records in it (runtime/debug.ReadBuildInfo).
package buildinfo

import (
	"runtime/debug"
	"strings"
)

// Version returns the binary's version: override if not empty (a release
// build sets it with -ldflags "-X main.version=..."), else the main
// module's version ("devel" when the toolchain knows none: a build outside
// a tagged module), followed by the VCS revision, commit time and whether
// the work tree had changes, when the build recorded them. go build in a
// clone records a pseudo-version and the revision:
//
//	v0.0.0-20261203212636-a213a3503a90 (revision a213a3503a90, 2026-12-03T21:26:36Z)
//
// Built in a git worktree (Go looks for a .git directory) or with
// -buildvcs=false it is "devel" alone.
func Version(override string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = &debug.BuildInfo{}
	}
	return format(override, bi)
}

func format(override string, bi *debug.BuildInfo) string {
	v := override
	if v == "" {
		v = bi.Main.Version
	}
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	var rev, at string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return v
	}
	parts := []string{"revision " + rev[:min(len(rev), 12)]}
	if at != "" {
		parts = append(parts, at)
	}
	if modified {
		parts = append(parts, "modified")
	}
	return v + " (" + strings.Join(parts, ", ") + ")"
}
