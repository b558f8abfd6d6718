// Package e2e holds end-to-end tests: they build the real kvd and kvctl
// binaries once, start kvd processes on free 127.0.0.1 ports with temporary
// data directories, and drive them with the Go client, kvctl, HTTP,
// redis-cli and redis-benchmark.
//
// redis-cli and redis-benchmark come from Debian's redis-tools. Without
// them their tests skip, except under CI=true, where they fail.
// KVD_E2E_RACE=1 builds the binaries with the race detector (slower).
package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/kvtest"
)

// Paths of the binaries TestMain builds.
var (
	kvdBin   string
	kvctlBin string
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	var flags []string
	if os.Getenv("KVD_E2E_RACE") == "1" {
		flags = append(flags, "-race")
	}
	dir, err := kvtest.Build(flags, "github.com/kvdstore/kvd/cmd/kvd", "github.com/kvdstore/kvd/cmd/kvctl")
	if err != nil {
		fmt.Fprintf(os.Stderr, "building kvd and kvctl: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	kvdBin = filepath.Join(dir, "kvd")
	kvctlBin = filepath.Join(dir, "kvctl")
	// Room for the connection-limit tests (the kvd children inherit it).
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	return m.Run()
}

// needTool returns the path of a tool of redis-tools, skipping the test if
// it is missing (failing it under CI=true).
func needTool(t *testing.T, name string) string {
	t.Helper()
	return kvtest.NeedTool(t, name, "apt-get install redis-tools")
}

// stopTimeout bounds how long kvd may take to exit after a signal.
const stopTimeout = 30 * time.Second

// startKVD starts kvd on free ports with dataDir ("" for a new temporary
// one) and extra flags, and waits for its startup line. The process is
// stopped with SIGTERM at the end of the test if still running, and must
// then exit 0.
func startKVD(t *testing.T, dataDir string, extra ...string) *kvtest.Proc {
	t.Helper()
	return startKVDEnv(t, nil, dataDir, extra...)
}

// startKVDEnv is startKVD with env added to the test's environment.
func startKVDEnv(t *testing.T, env []string, dataDir string, extra ...string) *kvtest.Proc {
	t.Helper()
	o := kvtest.Options{Bin: kvdBin, DataDir: dataDir, Args: extra}
	if env != nil {
		o.Env = append(os.Environ(), env...)
	}
	p, err := kvtest.Start(t, o)
	var ee *kvtest.ExitError
	if errors.As(err, &ee) {
		t.Fatalf("%v\n%s", err, ee.Log)
	}
	t.Cleanup(func() {
		if p.Exited() {
			return
		}
		if code := stop(t, p, syscall.SIGTERM); code != 0 {
			t.Errorf("kvd exited %d on SIGTERM\n%s", code, p.Log())
		}
	})
	return p
}

// stop sends sig to kvd and returns its exit status (-1 if a signal ended
// it). It fails the test if kvd does not exit within stopTimeout.
func stop(t *testing.T, p *kvtest.Proc, sig syscall.Signal) int {
	t.Helper()
	if err := p.Stop(sig, stopTimeout); errors.Is(err, kvtest.ErrNotStopped) {
		t.Fatalf("kvd did not exit within %v of %v\n%s", stopTimeout, sig, p.Log())
	}
	return p.ExitCode()
}

// port returns the port of addr.
func port(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }

// runTool runs a command with a time limit and returns its output and exit
// status.
func runTool(t *testing.T, stdin string, env []string, name string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("running %s: %v", name, err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}
