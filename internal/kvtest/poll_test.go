package kvtest_test

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/kvtest"
)

func TestWaitFor(t *testing.T) {
	t.Run("true at once", func(t *testing.T) {
		calls := 0
		if !kvtest.WaitFor(time.Second, time.Hour, func() bool { calls++; return true }) {
			t.Fatal("WaitFor = false for a condition that holds")
		}
		if calls != 1 {
			t.Fatalf("cond called %d times, want 1", calls)
		}
	})
	t.Run("true after a while", func(t *testing.T) {
		calls := 0
		if !kvtest.WaitFor(10*time.Second, time.Millisecond, func() bool { calls++; return calls == 5 }) {
			t.Fatal("WaitFor = false for a condition that came to hold")
		}
		if calls != 5 {
			t.Fatalf("cond called %d times, want 5", calls)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		calls := 0
		start := time.Now()
		if kvtest.WaitFor(50*time.Millisecond, 10*time.Millisecond, func() bool { calls++; return false }) {
			t.Fatal("WaitFor = true for a condition that never holds")
		}
		if d := time.Since(start); d < 50*time.Millisecond {
			t.Fatalf("WaitFor gave up after %v, before its timeout of 50ms", d)
		}
		if calls < 2 {
			t.Fatalf("cond called %d times, want it called again after sleeping", calls)
		}
	})
	t.Run("checks after the deadline", func(t *testing.T) {
		// The condition comes to hold while WaitFor sleeps past its
		// deadline: the last call must see it.
		start := time.Now()
		ok := kvtest.WaitFor(20*time.Millisecond, 100*time.Millisecond, func() bool {
			return time.Since(start) > 50*time.Millisecond
		})
		if !ok {
			t.Fatal("WaitFor = false, though the condition held when it looked last")
		}
	})
}

// fakeTB records a test's failure or skip; Fatalf and Skip end the
// goroutine as testing.T's do.
type fakeTB struct {
	testing.TB
	mu      sync.Mutex
	failed  string
	skipped string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.failed = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fakeTB) Skip(args ...any) {
	f.mu.Lock()
	f.skipped = fmt.Sprint(args...)
	f.mu.Unlock()
	runtime.Goexit()
}

// run runs fn as a test body on its own goroutine and returns the failure
// message, "" if fn passed.
func (f *fakeTB) run(fn func()) string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

func TestEventually(t *testing.T) {
	t.Run("holds", func(t *testing.T) {
		f := &fakeTB{TB: t}
		n := 0
		if msg := f.run(func() { kvtest.Eventually(f, 10*time.Second, "n to reach 3", func() bool { n++; return n >= 3 }) }); msg != "" {
			t.Fatalf("Eventually failed the test for a condition that came to hold: %s", msg)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		f := &fakeTB{TB: t}
		start := time.Now()
		msg := f.run(func() { kvtest.Eventually(f, 30*time.Millisecond, "the moon", func() bool { return false }) })
		if msg == "" {
			t.Fatal("Eventually did not fail the test for a condition that never holds")
		}
		if !strings.Contains(msg, "the moon") || !strings.Contains(msg, "30ms") {
			t.Errorf("failure %q does not say what was awaited and for how long", msg)
		}
		if d := time.Since(start); d < 30*time.Millisecond {
			t.Errorf("Eventually gave up after %v, before its timeout of 30ms", d)
		}
	})
}
