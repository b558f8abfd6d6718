package wal

import (
	"testing"
	"time"
)

// TestFlusherParksWhenIdle: with nothing left to fsync the flusher makes no
// passes, however long the log stays quiet (a ticker would make one every
// FlushInterval), and the next write still gets fsynced without anyone
// waiting for it: the write wakes the flusher. Sync writes in between, which
// fsync themselves, leave it parked.
func TestFlusherParksWhenIdle(t *testing.T) {
	l, err := Open(t.TempDir(), 1, Options{FlushInterval: time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	waitDurable := func(rev uint64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for l.Durable() < rev {
			if time.Now().After(deadline) {
				t.Fatalf("revision %d not fsynced within 10s by the flusher (durable %d)", rev, l.Durable())
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitParked := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			l.mu.Lock()
			parked := l.flushParked
			l.mu.Unlock()
			if parked {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the flusher did not park within 10s with nothing to fsync")
			}
			time.Sleep(time.Millisecond)
		}
	}
	for round := range 5 {
		rev, err := l.Enqueue([]byte("async"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.WaitWritten(rev); err != nil {
			t.Fatal(err)
		}
		waitDurable(rev) // nobody waits for it: the flusher must wake for it
		waitParked()

		runs := l.flusherRuns.Load()
		if round%2 == 1 {
			rev, err := l.Enqueue([]byte("sync"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.WaitDurable(rev); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(50 * time.Millisecond) // 50 periods
		if n := l.flusherRuns.Load() - runs; n > 1 {
			t.Fatalf("round %d: %d flusher passes in 50 quiet periods, want at most the one a write woke", round, n)
		}
	}
}
