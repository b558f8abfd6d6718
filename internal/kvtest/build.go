package kvtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// Build compiles the main packages pkgs (import paths, such as
// "github.com/kvdstore/kvd/cmd/kvd") with go build and flags (such as
// -race) into a new temporary directory, and returns it: each binary is
// named after the last element of its package's path. The caller removes
// the directory. The go command's output goes to os.Stderr.
//
// It is meant for TestMain, which has no testing.TB, so that a suite
// builds its binaries once.
func Build(flags []string, pkgs ...string) (dir string, err error) {
	dir, err = os.MkdirTemp("", "kvd-bin-")
	if err != nil {
		return "", err
	}
	args := append([]string{"build", "-o", dir + string(filepath.Separator)}, flags...)
	cmd := exec.Command(GoTool(), append(args, pkgs...)...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("kvtest: go build %v: %w", pkgs, err)
	}
	return dir, nil
}

// GoTool returns the go command: the one on PATH (go test puts the
// toolchain that runs the test first), else the one of the toolchain that
// built the test.
func GoTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}
