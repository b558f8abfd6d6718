package kvtest_test

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/kvtest"
)

// fakeEnv makes the test binary act as a fake kvd (see fakeKVD).
const fakeEnv = "KVTEST_FAKE_KVD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeEnv); mode != "" {
		os.Exit(fakeKVD(mode))
	}
	os.Exit(m.Run())
}

// fakeKVD stands in for kvd: it logs its arguments and the variable
// KVTEST_PROBE, then, by mode, logs kvd's listening line in the text or
// JSON format and waits for SIGTERM (exit 0), exits 1 at once, or hangs
// ignoring SIGTERM.
func fakeKVD(mode string) int {
	fmt.Fprintf(os.Stderr, "args %q probe=%q\n", os.Args[1:], os.Getenv("KVTEST_PROBE"))
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	switch mode {
	case "text":
		// The line in two writes, to check that it is seen whole.
		fmt.Fprint(os.Stderr, `time=2026-01-01T00:00:00Z level=INFO msg="kvd listening" resp=127.0.0.1:1`)
		time.Sleep(10 * time.Millisecond)
		fmt.Fprint(os.Stderr, " http=127.0.0.1:2 data_dir=x\n")
	case "json":
		fmt.Fprintln(os.Stderr, `{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"kvd listening","resp":"127.0.0.1:3","http":"127.0.0.1:4"}`)
	case "refuse":
		fmt.Fprintln(os.Stderr, "kvd: the data dir is damaged")
		return 1
	case "hang":
		signal.Ignore(syscall.SIGTERM)
		time.Sleep(time.Hour)
	}
	<-term
	fmt.Fprintln(os.Stderr, "stopped")
	return 0
}

func fakeOptions(mode string) kvtest.Options {
	return kvtest.Options{Bin: os.Args[0], Env: append(os.Environ(), fakeEnv+"="+mode, "KVTEST_PROBE=from-options"), Args: []string{"--commit-mode", "sync"}}
}

func TestStart(t *testing.T) {
	for _, tc := range []struct{ mode, resp, http string }{
		{"text", "127.0.0.1:1", "127.0.0.1:2"},
		{"json", "127.0.0.1:3", "127.0.0.1:4"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			dir := t.TempDir()
			o := fakeOptions(tc.mode)
			o.DataDir = dir
			p, err := kvtest.Start(t, o)
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			if p.RESPAddr != tc.resp || p.HTTPAddr != tc.http || p.DataDir != dir {
				t.Errorf("addresses %s %s, data dir %s; want %s %s %s", p.RESPAddr, p.HTTPAddr, p.DataDir, tc.resp, tc.http, dir)
			}
			wantArgs := fmt.Sprintf("%q", []string{"--data-dir", dir, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--commit-mode", "sync"})
			if !strings.Contains(p.Log(), "args "+wantArgs) {
				t.Errorf("log %q does not show the arguments %s", p.Log(), wantArgs)
			}
			if !strings.Contains(p.Log(), `probe="from-options"`) {
				t.Errorf("kvd did not get the environment of its Options: %q", p.Log())
			}
			if p.Exited() || p.ExitCode() != -1 || p.Err() != nil {
				t.Errorf("a running kvd: Exited %v, ExitCode %d, Err %v", p.Exited(), p.ExitCode(), p.Err())
			}
			if err := p.Stop(syscall.SIGTERM, 20*time.Second); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			if !p.Exited() || p.ExitCode() != 0 || !strings.Contains(p.Log(), "stopped") {
				t.Errorf("after Stop: Exited %v, ExitCode %d, log %q", p.Exited(), p.ExitCode(), p.Log())
			}
			// Stopping again reports the same exit and sends nothing.
			if err := p.Stop(syscall.SIGTERM, time.Second); err != nil {
				t.Errorf("second Stop: %v", err)
			}
		})
	}
}

func TestStartExitsFirst(t *testing.T) {
	p, err := kvtest.Start(t, fakeOptions("refuse"))
	var ee *kvtest.ExitError
	if p != nil || !errors.As(err, &ee) {
		t.Fatalf("Start = %v, %v; want no Proc and an *ExitError", p, err)
	}
	if ee.Code != 1 || !strings.Contains(ee.Log, "the data dir is damaged") || ee.Err == nil {
		t.Errorf("ExitError: code %d, err %v, log %q; want 1 and the message", ee.Code, ee.Err, ee.Log)
	}
}

func TestStopTimeoutKills(t *testing.T) {
	p := kvtest.Spawn(t, fakeOptions("hang"))
	if err := p.WaitListening(50 * time.Millisecond); err == nil || errors.As(err, new(*kvtest.ExitError)) {
		t.Fatalf("WaitListening on a kvd that never listens = %v, want a timeout", err)
	}
	if err := p.Wait(10 * time.Millisecond); !errors.Is(err, kvtest.ErrNotStopped) {
		t.Fatalf("Wait on a running kvd = %v, want ErrNotStopped", err)
	}
	err := p.Stop(syscall.SIGTERM, 100*time.Millisecond)
	if !errors.Is(err, kvtest.ErrNotStopped) {
		t.Fatalf("Stop of a kvd that ignores SIGTERM = %v, want ErrNotStopped", err)
	}
	if !p.Exited() || p.ExitCode() != -1 {
		t.Errorf("after Stop timed out: Exited %v, ExitCode %d; want killed", p.Exited(), p.ExitCode())
	}
	p.Kill() // idempotent
}

func TestKill(t *testing.T) {
	p, err := kvtest.Start(t, fakeOptions("json"))
	if err != nil {
		t.Fatal(err)
	}
	p.Kill()
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed after Kill")
	}
	if p.ExitCode() != -1 || p.Err() == nil {
		t.Errorf("after Kill: ExitCode %d, Err %v; want -1 and the signal", p.ExitCode(), p.Err())
	}
}

func TestListen(t *testing.T) {
	ln := kvtest.Listen(t)
	if !strings.HasPrefix(ln.Addr().String(), "127.0.0.1:") || strings.HasSuffix(ln.Addr().String(), ":0") {
		t.Fatalf("Listen address %s, want a port of 127.0.0.1", ln.Addr())
	}
}
