// Package browser tests kvd's change feed and live page in a real browser:
// a headless Chromium (Debian's chromium package) runs an EventSource that
// is cut off mid-stream and resumes with Last-Event-ID, and takes a
// screenshot of the live page under a write load.
//
// Without chromium on PATH the tests skip, except under CI=true, where
// they fail. KVD_ARTIFACTS names a directory where the screenshot is kept;
// without it, it goes to the test's temporary directory.
package browser

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/kvtest"
)

// kvdBin is the kvd binary TestMain builds.
var kvdBin string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := kvtest.Build(nil, "github.com/kvdstore/kvd/cmd/kvd")
	if err != nil {
		fmt.Fprintf(os.Stderr, "building kvd: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	kvdBin = filepath.Join(dir, "kvd")
	return m.Run()
}

// browserTimeout bounds each browser's run: starting Chromium on a loaded
// 2-core machine takes seconds, so this is far above what a run needs.
const browserTimeout = 3 * time.Minute

// startKVD starts kvd on free ports with extra flags; it is stopped with
// SIGTERM at the end of the test and must then exit 0.
func startKVD(t *testing.T, extra ...string) *kvtest.Proc {
	t.Helper()
	p, err := kvtest.Start(t, kvtest.Options{Bin: kvdBin, Args: extra})
	var ee *kvtest.ExitError
	if errors.As(err, &ee) {
		t.Fatalf("%v\n%s", err, ee.Log)
	}
	t.Cleanup(func() {
		if err := p.Stop(syscall.SIGTERM, 30*time.Second); err != nil {
			t.Errorf("kvd on SIGTERM: %v\n%s", err, p.Log())
		}
	})
	return p
}

// needChromium returns the path of the chromium command, skipping the test
// without it (failing it under CI=true).
func needChromium(t *testing.T) string {
	t.Helper()
	return kvtest.NeedTool(t, "chromium", "apt-get install chromium")
}

// chromiumArgs are the flags of every run: headless, no sandbox (the
// tests may run as root, where Chromium's sandbox refuses to start), no
// GPU, a profile of its own, and none of the first-run and background
// network activity of a new profile.
func chromiumArgs(profile string) []string {
	return []string{
		"--headless=new", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + profile,
		"--no-first-run", "--no-default-browser-check", "--disable-extensions",
		"--disable-background-networking", "--disable-sync", "--disable-component-update",
		"--window-size=1280,900",
	}
}

// browser is a running Chromium: the launcher script, the browser and all
// the processes it starts share one process group, which Stop kills.
type browser struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{} // closed once the launcher has exited
}

// startBrowser runs chromium with args and extra files (descriptors 3 and
// on), in a process group of its own. It is killed when the test ends, and
// after browserTimeout in any case.
func startBrowser(t *testing.T, bin string, args []string, extra ...*os.File) *browser {
	t.Helper()
	b := &browser{out: &lockedBuffer{}, done: make(chan struct{})}
	b.cmd = exec.Command(bin, args...)
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.out
	b.cmd.ExtraFiles = extra
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Chromium's D-Bus probes have nothing to talk to here, and what it
	// writes to HOME and TMPDIR (killed, it removes none of it) goes to
	// the test's temporary directories.
	b.cmd.Env = append(os.Environ(), "DBUS_SESSION_BUS_ADDRESS=disabled:", "HOME="+t.TempDir(), "TMPDIR="+t.TempDir())
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	go func() {
		b.cmd.Wait()
		close(b.done)
	}()
	timer := time.AfterFunc(browserTimeout, b.Stop)
	t.Cleanup(func() {
		timer.Stop()
		b.Stop()
	})
	return b
}

// Stop kills the browser's process group and waits for the launcher. It
// is idempotent.
func (b *browser) Stop() {
	// The group outlives the launcher when the launcher exits first, so
	// it is killed whether or not the launcher has.
	syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	<-b.done
	// The launcher's children are reaped by init: wait until they are.
	kvtest.WaitFor(10*time.Second, 10*time.Millisecond, func() bool {
		return syscall.Kill(-b.cmd.Process.Pid, 0) == syscall.ESRCH
	})
}

// Exited returns a channel closed once the launcher has exited.
func (b *browser) Exited() <-chan struct{} { return b.done }

// Output returns what the browser wrote to stdout and stderr so far, at
// most its last 8 KiB.
func (b *browser) Output() string {
	s := b.out.String()
	if len(s) > 8<<10 {
		s = "…" + s[len(s)-8<<10:]
	}
	return s
}

// lockedBuffer is a bytes.Buffer that several goroutines may write.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// waitCtx returns a context that ends after d or with the test.
func waitCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
