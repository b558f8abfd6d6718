package wal_test

import (
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kvdstore/kvd/wal"
)

// TestUnsyncedExposure stalls the disk on the fake clock of a synctest
// bubble (every fsync takes 500ms against a 10ms FlushInterval) and checks
// the exposure figures of Stats at chosen moments: OldestUnsynced grows
// while the records wait, MaxUnsyncedLastMinute shows it at once and keeps
// the age the records had when they became durable, for a minute;
// MaxUnsyncedSinceOpen keeps it after; and records left unsynced by a
// failed fsync go on ageing.
func TestUnsyncedExposure(t *testing.T) {
	const (
		interval = 10 * time.Millisecond
		stall    = 500 * time.Millisecond
	)
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		var fail atomic.Bool
		l, err := wal.Open(dir, 1, wal.Options{
			FlushInterval: interval,
			SyncFile: func(*os.File) error {
				if fail.Load() {
					return errors.New("injected fsync failure")
				}
				time.Sleep(stall)
				return nil
			},
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		start := time.Now()
		write := func() {
			t.Helper()
			rev, err := l.Enqueue([]byte("r"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.WaitWritten(rev); err != nil {
				t.Fatal(err)
			}
		}
		sleepUntil := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))) }
		check := func(oldest, lastMinute, sinceOpen time.Duration) {
			t.Helper()
			st := l.Stats()
			if st.OldestUnsynced != oldest || st.MaxUnsyncedLastMinute != lastMinute || st.MaxUnsyncedSinceOpen != sinceOpen {
				t.Errorf("at %v: oldest unsynced %v, max last minute %v, max since open %v; want %v, %v, %v",
					time.Since(start), st.OldestUnsynced, st.MaxUnsyncedLastMinute, st.MaxUnsyncedSinceOpen,
					oldest, lastMinute, sinceOpen)
			}
		}

		check(0, 0, 0)
		write() // at 0: the flusher claims it at 10ms, durable at 510ms
		sleepUntil(200 * time.Millisecond)
		check(200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond)
		write() // at 200ms: due at 210ms, claimed at 510ms, durable at 1010ms
		sleepUntil(300 * time.Millisecond)
		check(300*time.Millisecond, 300*time.Millisecond, 300*time.Millisecond)
		sleepUntil(600 * time.Millisecond)
		// The first record became durable 510ms old; the second is 400ms old.
		check(400*time.Millisecond, 510*time.Millisecond, 510*time.Millisecond)
		sleepUntil(1100 * time.Millisecond)
		check(0, 810*time.Millisecond, 810*time.Millisecond)

		// Observed in second 1 of the log's clock, the 810ms stays in the
		// window through second 60 and is gone in second 61.
		sleepUntil(60 * time.Second)
		check(0, 810*time.Millisecond, 810*time.Millisecond)
		sleepUntil(61*time.Second + 500*time.Millisecond)
		check(0, 0, 810*time.Millisecond)

		// A failed fsync leaves the record unsynced: its age grows on.
		fail.Store(true)
		write() // at 61.5s: claimed at 61.51s, its fsync fails
		sleepUntil(64*time.Second + 500*time.Millisecond)
		if st := l.Stats(); st.Err == nil {
			t.Fatal("the fsync failure did not fail the log")
		}
		check(3*time.Second, 3*time.Second, 3*time.Second)
	})
}
