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
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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
	dir, err := os.MkdirTemp("", "kvd-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	kvdBin = filepath.Join(dir, "kvd")
	kvctlBin = filepath.Join(dir, "kvctl")
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if os.Getenv("KVD_E2E_RACE") == "1" {
		args = append(args, "-race")
	}
	args = append(args, "github.com/kvdstore/kvd/cmd/kvd", "github.com/kvdstore/kvd/cmd/kvctl")
	build := exec.Command("go", args...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building kvd and kvctl: %v\n", err)
		return 1
	}
	// Room for the connection-limit tests (the kvd children inherit it).
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	return m.Run()
}

// needTool returns the path of an external tool, skipping the test if it is
// missing (failing it under CI=true).
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI=true (apt-get install redis-tools): %v", name, err)
		}
		t.Skipf("%s not installed (apt-get install redis-tools): %v", name, err)
	}
	return p
}

// kvdProc is a running kvd.
type kvdProc struct {
	t        *testing.T
	cmd      *exec.Cmd
	dataDir  string
	respAddr string
	httpAddr string
	exited   chan struct{}
	exitErr  error

	mu  sync.Mutex
	log strings.Builder
}

// listeningRE matches kvd's startup line (see "kvd --help") in the text
// and in the JSON log format.
var listeningRE = regexp.MustCompile(`msg="kvd listening" resp=(\S+) http=(\S+)|"msg":"kvd listening","resp":"([^"]+)","http":"([^"]+)"`)

// startKVD starts kvd on free ports with dataDir ("" for a new temporary
// one) and extra flags, and waits for its startup line. The process is
// stopped with SIGTERM at the end of the test if still running, and must
// then exit 0.
func startKVD(t *testing.T, dataDir string, extra ...string) *kvdProc {
	t.Helper()
	return startKVDEnv(t, nil, dataDir, extra...)
}

// startKVDEnv is startKVD with env added to the test's environment.
func startKVDEnv(t *testing.T, env []string, dataDir string, extra ...string) *kvdProc {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	args := append([]string{"--data-dir", dataDir, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}, extra...)
	cmd := exec.Command(kvdBin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &kvdProc{t: t, cmd: cmd, dataDir: dataDir, exited: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			if m := listeningRE.FindStringSubmatch(line); m != nil {
				ready <- [2]string{m[1] + m[3], m[2] + m[4]}
			}
		}
		io.Copy(io.Discard, stderr)
		p.exitErr = cmd.Wait()
		close(p.exited)
	}()
	select {
	case addrs := <-ready:
		p.respAddr, p.httpAddr = addrs[0], addrs[1]
	case <-p.exited:
		t.Fatalf("kvd exited before listening: %v\n%s", p.exitErr, p.logs())
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("kvd did not log its listening line\n%s", p.logs())
	}
	t.Cleanup(func() {
		select {
		case <-p.exited:
			return
		default:
		}
		if code := p.stop(syscall.SIGTERM); code != 0 {
			t.Errorf("kvd exited %d on SIGTERM\n%s", code, p.logs())
		}
	})
	return p
}

func (p *kvdProc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// stop sends sig and returns the exit status (-1 if killed by a signal).
func (p *kvdProc) stop(sig syscall.Signal) int {
	p.t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
		p.t.Fatalf("kvd did not exit within 30s of %v\n%s", sig, p.logs())
	}
	return p.cmd.ProcessState.ExitCode()
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
