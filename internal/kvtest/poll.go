package kvtest

import (
	"testing"
	"time"
)

// PollInterval is how often Eventually calls its condition.
const PollInterval = 5 * time.Millisecond

// WaitFor calls cond every interval until it returns true or timeout has
// passed, and reports whether it returned true. cond is called at least
// once, and once more after the deadline has passed, so a condition that
// became true while WaitFor slept is not missed. WaitFor never fails a
// test: the caller says what was wrong, usually with the last state cond
// saw.
//
// cond runs on the calling goroutine, so it may call t.Fatal.
func WaitFor(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// Eventually polls cond every PollInterval until it returns true, and
// fails the test (t.Fatalf, naming what it waited for) if it does not
// within timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !WaitFor(timeout, PollInterval, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}
