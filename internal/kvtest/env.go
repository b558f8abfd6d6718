package kvtest

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Require skips the test because the machine lacks something it needs
// (reason says what), unless reason is empty. Under CI=true it fails the
// test instead: CI runs as root with every tool installed, so a skip there
// would hide a broken setup.
func Require(t testing.TB, reason string) {
	t.Helper()
	if reason == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: failing instead of skipping)", reason)
	}
	t.Skip(reason)
}

// NeedTool returns the path of the command name. If it is not on PATH, it
// skips the test, or fails it under CI=true (see Require), saying how to
// install it (install, such as "apt-get install redis-tools").
func NeedTool(t testing.TB, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Require(t, fmt.Sprintf("needs %s on PATH (%s): %v", name, install, err))
	}
	return p
}
