package kvtest

import (
	"os/signal"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// FileLimit sets the process's file size limit (RLIMIT_FSIZE) to n bytes,
// or lifts it when n is 0, until the test ends. A write that crosses the
// limit is cut short and the next one fails with EFBIG, as a full disk cuts
// a write short and then fails with ENOSPC: tests use it to make write(2)
// fail for real. The limit is the whole process's, so a test that sets it
// must not run in parallel with others.
//
// Only a test running alone in its own process may set it: see
// InSubprocess.
func FileLimit(t testing.TB, n uint64) {
	t.Helper()
	if !inSubprocess() {
		t.Fatal("kvtest.FileLimit: the test must run in its own process (start it with kvtest.InSubprocess)")
	}
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	// The default action of the signal a write past the limit raises is
	// to end the process.
	signal.Ignore(syscall.SIGXFSZ)
	lim := unix.Rlimit{Cur: n, Max: old.Max}
	if n == 0 {
		lim.Cur = old.Max
	}
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatalf("setrlimit: %v", err)
	}
	t.Cleanup(func() {
		lim := unix.Rlimit{Cur: old.Max, Max: old.Max}
		unix.Setrlimit(unix.RLIMIT_FSIZE, &lim)
	})
}
