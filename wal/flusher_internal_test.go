package wal

import (
	"sync"
	"testing"
	"testing/synctest"
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
	// waitUntil polls cond for up to 10s and fails the test with what if
	// it does not hold by then.
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s within 10s", what)
			}
		}
	}
	parked := func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.flushParked
	}
	for round := range 5 {
		rev, err := l.Enqueue([]byte("async"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.WaitWritten(rev); err != nil {
			t.Fatal(err)
		}
		// Nobody waits for it: the flusher must wake for it.
		waitUntil("the flusher did not fsync the write", func() bool { return l.Durable() >= rev })
		waitUntil("the flusher did not park with nothing to fsync", parked)

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

// TestFlusherPeriod checks the flusher's timing on the fake clock of a
// synctest bubble, where an fsync takes no time: whether writes come
// continuously, now and then, or after a quiet spell in which the flusher
// parked, every record that nobody waits for is fsynced at most one
// FlushInterval after it was written, and no later than the flusher's bound
// promises.
func TestFlusherPeriod(t *testing.T) {
	const period = 10 * time.Millisecond
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		var (
			mu      sync.Mutex
			l       *Log
			durable []time.Time // durable[i]: when revision i+1 became durable
		)
		opts := Options{FlushInterval: period, OnSync: func(time.Duration, int) {
			mu.Lock()
			defer mu.Unlock()
			for uint64(len(durable)) < l.Durable() {
				durable = append(durable, time.Now())
			}
		}}
		mu.Lock()
		var err error
		l, err = Open(dir, 1, opts, nil)
		mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()

		var written []time.Time // written[i]: when revision i+1 was written
		write := func() {
			t.Helper()
			rev, err := l.Enqueue([]byte("r"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.WaitWritten(rev); err != nil {
				t.Fatal(err)
			}
			written = append(written, time.Now())
		}
		// A steady stream, one write every 3ms: the flusher never parks.
		for range 40 {
			write()
			time.Sleep(3 * time.Millisecond)
		}
		// Now and then: 25ms apart, so the flusher parks between writes.
		for range 5 {
			time.Sleep(25 * time.Millisecond)
			write()
		}
		// A long quiet spell, then a burst.
		time.Sleep(time.Second)
		runs := l.flusherRuns.Load()
		time.Sleep(time.Second)
		if n := l.flusherRuns.Load() - runs; n != 0 {
			t.Errorf("%d flusher passes in a quiet second", n)
		}
		for range 5 {
			write()
			time.Sleep(time.Millisecond)
		}
		time.Sleep(2 * period)

		mu.Lock()
		defer mu.Unlock()
		if len(durable) != len(written) {
			t.Fatalf("%d of %d records durable", len(durable), len(written))
		}
		for i := range written {
			if wait := durable[i].Sub(written[i]); wait > period || wait < 0 {
				t.Errorf("revision %d: fsynced %v after it was written, want at most %v", i+1, wait, period)
			}
		}
	})
}
