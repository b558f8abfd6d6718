package wal

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// parked polls until n goroutines wait in list (guarded by the mutex that
// lock and unlock take), with a deadline.
func parked(t *testing.T, lock, unlock func(), list *waitList, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		lock()
		got := len(list.ws)
		unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines waiting, want %d", got, n)
		}
		time.Sleep(time.Millisecond) // poll
	}
}

// result waits for the error a goroutine sends, with a deadline.
func result(t *testing.T, what string, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return", what)
		return nil
	}
}

// TestTruncateBackFailsWaiters: a WaitWritten parked behind the writer for
// a queued record, and a WaitDurable parked behind the sync leader for a
// written record, get ErrTruncated when TruncateBack drops their records;
// the WaitDurable does even with the revision written again meanwhile. The
// writer and the sync leader are faked (their flags held), so that
// TruncateBack is the goroutine each hands its lead to.
func TestTruncateBackFailsWaiters(t *testing.T) {
	l, err := Open(t.TempDir(), 1, Options{FlushInterval: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	enqueue := func() uint64 {
		t.Helper()
		rev, err := l.Enqueue([]byte("x"), nil)
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	for range 10 {
		if err := l.WaitWritten(enqueue()); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}

	t.Run("queued", func(t *testing.T) {
		l.mu.Lock()
		l.writing = true // a writer at work
		l.mu.Unlock()
		enqueue()
		rev := enqueue() // 12
		waited := make(chan error, 1)
		go func() { waited <- l.WaitWritten(rev) }()
		parked(t, l.mu.Lock, l.mu.Unlock, &l.wwait, 1)
		truncated := make(chan error, 1)
		go func() { truncated <- l.TruncateBack(10) }()
		parked(t, l.mu.Lock, l.mu.Unlock, &l.wwait, 2)
		l.mu.Lock() // the writer is done: it hands the lead on (to revision 0, TruncateBack)
		l.writing = false
		l.wwait.wakeOne()
		l.mu.Unlock()
		if err := result(t, "TruncateBack", truncated); err != nil {
			t.Fatal(err)
		}
		if err := result(t, "WaitWritten", waited); !errors.Is(err, ErrTruncated) {
			t.Fatalf("WaitWritten(%d) of a dropped queued record: %v, want ErrTruncated", rev, err)
		}
		if err := l.WaitWritten(rev); !errors.Is(err, ErrTruncated) {
			t.Fatalf("WaitWritten(%d) called after the drop: %v, want ErrTruncated", rev, err)
		}
		if e, w := l.LastEnqueued(), l.Written(); e != 10 || w != 10 {
			t.Fatalf("after TruncateBack(10): enqueued %d, written %d", e, w)
		}
	})

	t.Run("written", func(t *testing.T) {
		enqueue()
		rev := enqueue() // 12
		if err := l.WaitWritten(rev); err != nil {
			t.Fatal(err)
		}
		l.smu.Lock()
		l.syncing = true // a sync leader at work
		l.smu.Unlock()
		waited := make(chan error, 1)
		go func() { waited <- l.WaitDurable(rev) }()
		parked(t, l.smu.Lock, l.smu.Unlock, &l.swait, 1)
		truncated := make(chan error, 1)
		go func() { truncated <- l.TruncateBack(11) }()
		parked(t, l.smu.Lock, l.smu.Unlock, &l.swait, 2)
		l.smu.Lock() // the leader's fsync ended, covering nothing new
		l.syncing = false
		l.swait.wakeUpTo(l.durable) // revision 0, TruncateBack
		l.smu.Unlock()
		if err := result(t, "TruncateBack", truncated); err != nil {
			t.Fatal(err)
		}
		// Revision 12 again, written, maybe before the waiter looks: it
		// must not take that record for its own.
		if err := l.WaitWritten(enqueue()); err != nil {
			t.Fatal(err)
		}
		if err := result(t, "WaitDurable", waited); !errors.Is(err, ErrTruncated) {
			t.Fatalf("WaitDurable(%d) of a dropped written record: %v, want ErrTruncated", rev, err)
		}
		if err := l.WaitDurable(12); err != nil {
			t.Fatal(err)
		}
	})
}

// copyFiles copies the files of dir (not its subdirectories) into a new
// temporary directory: a crash image of an open log, as kill -9 leaves it.
func copyFiles(t *testing.T, dir string) string {
	t.Helper()
	img := t.TempDir()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(img, e.Name()), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// TestResetCrashImages takes a crash image of the log directory at every
// step of a Reset and opens it: before the RESET file is in place the
// image is the old log, whole; from then on it opens at the new start,
// empty, with one segment and no RESET file, and the old log is gone.
func TestResetCrashImages(t *testing.T) {
	const start = 500
	dir := t.TempDir()
	opts := Options{SegmentSize: 2000}
	l, err := Open(dir, 1, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for range 200 {
		rev, err := l.Enqueue(testPayload(l.LastEnqueued()+1), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.WaitWritten(rev); err != nil {
			t.Fatal(err)
		}
	}
	images := map[string]string{}
	var steps []string
	testHookReset = func(step string) {
		steps = append(steps, step)
		images[step] = copyFiles(t, dir)
	}
	err = l.Reset(start)
	testHookReset = nil
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"temp", "marked", "removing", "created", "done"}; !slices.Equal(steps, want) {
		t.Fatalf("Reset's steps %v, want %v", steps, want)
	}
	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			img := images[step]
			if step == "temp" {
				l, revs, err := reopen(t, img, 1, opts)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(revs, seq(1, 200)) || l.Written() != 200 {
					t.Fatalf("the image before the RESET file replays %d records, written %d; want the old log, 1..200", len(revs), l.Written())
				}
				if _, err := os.Stat(filepath.Join(img, resetFile+".TEMP")); !os.IsNotExist(err) {
					t.Fatalf("%s.TEMP left: %v", resetFile, err)
				}
				return
			}
			l, revs, err := reopen(t, img, start, opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(revs) > 0 || l.first != start || l.Written() != start-1 {
				t.Fatalf("replayed %v, first %d, written %d; want an empty log at %d", revs, l.first, l.Written(), start)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			segs, err := finishTruncation(img)
			if err != nil || len(segs) != 1 || segs[0].first != start {
				t.Fatalf("segments %v (%v), want one, at %d", segs, err, start)
			}
			if _, err := os.Stat(filepath.Join(img, resetFile)); !os.IsNotExist(err) {
				t.Fatalf("%s left: %v", resetFile, err)
			}
			if _, _, err := reopen(t, img, 1, opts); err == nil {
				t.Fatal("the image opens from revision 1: the old log is still there")
			}
		})
	}
}
