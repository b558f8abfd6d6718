package wal

import (
	"fmt"
	"math/rand/v2"
	"os"
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
		opts := Options{FlushInterval: period, onSync: func(time.Duration, int) {
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

// TestFlusherSchedule runs the flusher against a slow disk on the fake clock
// of a synctest bubble: every fsync takes F, shorter than FlushInterval in
// one case and longer in the other. Nobody waits for durability, so every
// fsync is the flusher's. Records are written at pseudo-random times (fixed
// seeds) and, for some fsyncs, at the instant the fsync claimed its records,
// which leaves the new record the longest wait. It checks two things:
//
//   - the schedule: each fsync starts when the oldest record it covers
//     becomes FlushInterval old, or when the previous fsync ends if that is
//     later; never earlier, never later;
//   - the bound that follows from it: a record is durable at most
//     max(FlushInterval, F) + F after it was written. The first term is the
//     later of its due time and the end of the fsync in progress when it
//     was written (one fsync at a time: a record written just after an
//     fsync claimed its records waits for that fsync to end, F, before the
//     fsync that covers it starts), the second term is that fsync.
func TestFlusherSchedule(t *testing.T) {
	const interval = 10 * time.Millisecond
	for _, fsync := range []time.Duration{4 * time.Millisecond, 25 * time.Millisecond} {
		for _, seed := range []uint64{1, 2, 3} {
			t.Run(fmt.Sprintf("fsync=%v/seed=%d", fsync, seed), func(t *testing.T) {
				testFlusherSchedule(t, interval, fsync, seed)
			})
		}
	}
}

func testFlusherSchedule(t *testing.T, interval, fsync time.Duration, seed uint64) {
	type span struct {
		start, end  time.Time
		first, last uint64 // the revisions the fsync made durable
	}
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(seed, 0))
		var (
			mu      sync.Mutex
			l       *Log
			written []time.Time // written[i]: when revision i+1 was written
			spans   []span
			done    bool // stop writing from SyncFile
		)
		write := func() {
			t.Helper()
			rev, err := l.Enqueue([]byte("r"), nil)
			if err != nil {
				t.Error(err)
				return
			}
			if err := l.WaitWritten(rev); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for uint64(len(written)) < rev {
				written = append(written, time.Time{})
			}
			written[rev-1] = time.Now()
		}
		opts := Options{
			FlushInterval: interval,
			SyncFile: func(*os.File) error {
				mu.Lock()
				atClaim := !done && rng.IntN(3) == 0
				mu.Unlock()
				if atClaim {
					// The fsync has claimed every record written so far:
					// this one waits for the next.
					write()
				}
				time.Sleep(fsync)
				return nil
			},
			onSync: func(d time.Duration, records int) {
				mu.Lock()
				defer mu.Unlock()
				end, last := time.Now(), l.Durable()
				spans = append(spans, span{end.Add(-d), end, last - uint64(records) + 1, last})
			},
		}
		mu.Lock()
		var err error
		l, err = Open(dir, 1, opts, nil)
		mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()

		for range 200 {
			mu.Lock()
			pause := time.Duration(rng.Int64N(int64(3 * interval)))
			if rng.IntN(4) == 0 {
				pause = 0 // a burst
			}
			mu.Unlock()
			time.Sleep(pause)
			write()
		}
		mu.Lock()
		done = true
		mu.Unlock()
		time.Sleep(10 * (interval + fsync))

		mu.Lock()
		defer mu.Unlock()
		if len(spans) == 0 || spans[len(spans)-1].last != uint64(len(written)) {
			t.Fatalf("%d records written, fsyncs made %d durable", len(written), len(spans))
		}
		bound := max(interval, fsync) + fsync
		var worst time.Duration
		for i, s := range spans {
			due := written[s.first-1].Add(interval)
			if i > 0 && spans[i-1].end.After(due) {
				due = spans[i-1].end
			}
			if !s.start.Equal(due) {
				t.Errorf("fsync %d of revisions %d..%d started at %v, want %v (oldest written at %v, previous fsync ended at %v)",
					i+1, s.first, s.last, s.start.Sub(written[0]), due.Sub(written[0]),
					written[s.first-1].Sub(written[0]), spans[max(i-1, 0)].end.Sub(written[0]))
			}
			for rev := s.first; rev <= s.last; rev++ {
				wait := s.end.Sub(written[rev-1])
				worst = max(worst, wait)
				if wait > bound {
					t.Errorf("revision %d: durable %v after it was written, want at most %v", rev, wait, bound)
				}
			}
		}
		t.Logf("%d records, %d fsyncs, longest wait %v (bound %v)", len(written), len(spans), worst, bound)
	})
}

// TestFlusherParksAfterFlaggedBatch: a flagged batch (EnqueueSync) fsyncs
// the records written before it too, which the flusher was due to fsync; it
// must then find nothing due and park, not make pass after empty pass.
func TestFlusherParksAfterFlaggedBatch(t *testing.T) {
	l, err := Open(t.TempDir(), 1, Options{FlushInterval: time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for range 3 {
		rev, err := l.Enqueue([]byte("async"), nil)
		if err != nil || l.WaitWritten(rev) != nil {
			t.Fatal(err)
		}
		rev, err = l.EnqueueSync([]byte("sync"), nil)
		if err != nil || l.WaitWritten(rev) != nil {
			t.Fatal(err)
		}
		if d := l.Durable(); d < rev {
			t.Fatalf("a flagged record counts as written before it is durable: durable %d, record %d", d, rev)
		}
		runs := l.flusherRuns.Load()
		time.Sleep(50 * time.Millisecond) // 50 periods
		if n := l.flusherRuns.Load() - runs; n > 2 {
			t.Fatalf("%d flusher passes in 50 periods with nothing to fsync", n)
		}
	}
}
