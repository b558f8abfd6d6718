package wal_test

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvdstore/kvd/wal"
)

// testSeed returns the seed of a randomized test, from KVD_WAL_SEED if set,
// and logs it.
func testSeed(t testing.TB) uint64 {
	t.Helper()
	seed := rand.Uint64()
	if s := os.Getenv("KVD_WAL_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("KVD_WAL_SEED: %v", err)
		}
	}
	t.Logf("seed %d (set KVD_WAL_SEED to repeat)", seed)
	return seed
}

// history records the payload of every revision as the log writes it,
// through Options.OnWritten (which runs before the revision counts as
// written): a revision that Read may return is always in it.
type history struct {
	mu sync.Mutex
	m  map[uint64][]byte
}

func newHistory() *history { return &history{m: make(map[uint64][]byte)} }

func (h *history) onWritten(first uint64, vs []any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, v := range vs {
		h.m[first+uint64(i)] = v.([]byte)
	}
}

func (h *history) get(rev uint64) ([]byte, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, ok := h.m[rev]
	return p, ok
}

// write enqueues payload (flagged for fsync if sync) and waits until it is
// written.
func write(t testing.TB, l *wal.Log, p []byte, sync bool) uint64 {
	t.Helper()
	enqueue := l.Enqueue
	if sync {
		enqueue = l.EnqueueSync
	}
	rev, err := enqueue(p, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.WaitWritten(rev); err != nil {
		t.Fatal(err)
	}
	return rev
}

// checkRead fails unless Read(rev) returns want.
func checkRead(t testing.TB, l *wal.Log, rev uint64, want []byte) {
	t.Helper()
	got, err := l.Read(rev)
	if err != nil {
		t.Fatalf("Read(%d): %v", rev, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Read(%d) = %q, want %q", rev, got, want)
	}
}

// checkReadErr fails unless Read(rev) fails with target.
func checkReadErr(t testing.TB, l *wal.Log, rev uint64, target error) {
	t.Helper()
	if p, err := l.Read(rev); !errors.Is(err, target) {
		t.Fatalf("Read(%d) = %q, %v; want %v", rev, p, err, target)
	}
}

// TestReadConcurrent reads random revisions while appenders write records
// (some flagged for fsync) into small segments, the flusher fsyncs, and
// TruncateFront drops old segments: every read of a revision in
// [FirstIndex, WrittenIndex] returns what was written at that revision,
// unless a truncation dropped it meanwhile (ErrCompacted, and the revision
// is then below FirstIndex). Run it under -race: tidwall/wal's own Read
// races its segment cache here.
func TestReadConcurrent(t *testing.T) {
	seed := testSeed(t)
	dir := t.TempDir()
	h := newHistory()
	opts := wal.Options{SegmentSize: 4 << 10, FlushInterval: time.Millisecond, OnWritten: h.onWritten}
	l, err := wal.Open(dir, 1, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	const appenders, perAppender, readers, minReads = 3, 1200, 2, 3000
	var (
		wg        sync.WaitGroup
		appending sync.WaitGroup
		done      atomic.Bool
		truncate  = make(chan uint64, 1)
		reads     [readers]int
		compacted atomic.Int64
	)
	for a := range appenders {
		appending.Add(1)
		go func() {
			defer appending.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(a)))
			for i := range perAppender {
				p := make([]byte, rng.IntN(300))
				for j := range p {
					p[j] = byte(rng.Uint32())
				}
				enqueue := l.Enqueue
				if rng.IntN(8) == 0 {
					enqueue = l.EnqueueSync
				}
				rev, err := enqueue(p, p)
				if err != nil {
					t.Error(err)
					return
				}
				if rng.IntN(4) > 0 { // else a later WaitWritten writes it
					if err := l.WaitWritten(rev); err != nil {
						t.Error(err)
						return
					}
				}
				if a == 0 && i%100 == 99 {
					select {
					case truncate <- rev - 150:
					default:
					}
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // the truncator: keeps the last ~150 revisions
		defer wg.Done()
		for keep := range truncate {
			if err := l.TruncateFront(keep); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(appenders+r)))
			for !done.Load() || reads[r] < minReads {
				first, written := l.FirstIndex(), l.WrittenIndex()
				var rev uint64
				switch n := rng.IntN(20); {
				case n == 0:
					rev = written + 1 + rng.Uint64N(3)
				case n == 1 && first > 1:
					rev = first - 1 - rng.Uint64N(first-1)
				case written < first:
					continue
				case n < 10: // near the tail
					rev = written - min(rng.Uint64N(20), written-first)
				default:
					rev = first + rng.Uint64N(written-first+1)
				}
				reads[r]++
				got, err := l.Read(rev)
				switch {
				case rev > written && errors.Is(err, wal.ErrNotFound):
					continue
				case rev < first:
					if errors.Is(err, wal.ErrCompacted) {
						continue
					}
				case errors.Is(err, wal.ErrCompacted):
					if rev < l.FirstIndex() {
						compacted.Add(1)
						continue
					}
				case err == nil:
					if want, ok := h.get(rev); !ok || !bytes.Equal(got, want) {
						t.Errorf("Read(%d) = %x, want %x (recorded: %v)", rev, got, want, ok)
						return
					}
					continue
				}
				t.Errorf("Read(%d) with first %d, written %d (now %d, %d): %q, %v",
					rev, first, written, l.FirstIndex(), l.WrittenIndex(), got, err)
				return
			}
		}()
	}
	appending.Wait()
	if err := l.WaitWritten(l.LastEnqueued()); err != nil {
		t.Fatal(err)
	}
	done.Store(true)
	close(truncate)
	wg.Wait()
	if t.Failed() {
		return
	}
	st := l.Stats()
	t.Logf("%d records, first %d, %d segments, %d fsyncs, reads %v, %d raced a truncation",
		st.Written, st.First, st.Segments, st.Fsyncs, reads, compacted.Load())
	if st.Written != appenders*perAppender || st.First < st.Written/2 {
		t.Fatalf("setup: wrote %d records, the log starts at %d: TruncateFront did not keep up", st.Written, st.First)
	}

	// Reopened, the log holds what the readers were checked against.
	first := st.First
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var next = first
	l, err = wal.Open(dir, first, wal.Options{SegmentSize: 4 << 10}, func(rev uint64, p []byte) error {
		if want, _ := h.get(rev); rev != next || !bytes.Equal(p, want) {
			t.Errorf("replay: revision %d (want %d): %x, want %x", rev, next, p, want)
		}
		next++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if next != st.Written+1 {
		t.Fatalf("replay ended before %d, want %d", next, st.Written+1)
	}
}

// deletedSegmentsHeld lists the segment files of dir that this process
// still holds open although they were deleted.
func deletedSegmentsHeld(t testing.TB, dir string) []string {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	var held []string
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, dir+"/") && strings.HasSuffix(target, " (deleted)") {
			held = append(held, target)
		}
	}
	return held
}

// TestRead checks Read's answers one at a time: every written record, in
// sealed segments and the tail; ErrNotFound for revision 0, for a record
// enqueued but not written and past the last one; ErrCompacted below the
// first revision after TruncateFront (which closes what Read held of the
// dropped files); a *CorruptError for a record damaged on disk; ErrClosed
// after Close.
func TestRead(t *testing.T) {
	dir := t.TempDir()
	l, err := wal.Open(dir, 1, wal.Options{SegmentSize: 2000}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	checkReadErr(t, l, 0, wal.ErrNotFound)
	checkReadErr(t, l, 1, wal.ErrNotFound)
	for rev := uint64(1); rev <= 300; rev++ {
		write(t, l, payload(rev), false)
	}
	if segs := l.Stats().Segments; segs < 5 {
		t.Fatalf("setup: %d segments", segs)
	}
	for _, rev := range []uint64{300, 1, 150, 2, 299, 151} {
		checkRead(t, l, rev, payload(rev))
	}
	for rev := uint64(1); rev <= 300; rev++ {
		checkRead(t, l, rev, payload(rev))
	}
	checkReadErr(t, l, 0, wal.ErrNotFound)
	checkReadErr(t, l, 301, wal.ErrNotFound)
	checkReadErr(t, l, math.MaxUint64, wal.ErrNotFound)

	rev, err := l.Enqueue(payload(301), nil)
	if err != nil {
		t.Fatal(err)
	}
	checkReadErr(t, l, rev, wal.ErrNotFound)
	if err := l.WaitWritten(rev); err != nil {
		t.Fatal(err)
	}
	checkRead(t, l, rev, payload(rev))

	// Read holds segments that the truncation drops.
	checkRead(t, l, 1, payload(1))
	checkRead(t, l, 100, payload(100))
	if err := l.TruncateFront(200); err != nil {
		t.Fatal(err)
	}
	// An fsync closes the fsync descriptors of the old tails; what stays
	// open is Read's.
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	first := l.FirstIndex()
	if first < 100 || first >= 200 {
		t.Fatalf("setup: after TruncateFront(200) the log starts at %d", first)
	}
	if held := deletedSegmentsHeld(t, dir); len(held) > 0 {
		t.Fatalf("deleted segments still open: %v", held)
	}
	checkReadErr(t, l, first-1, wal.ErrCompacted)
	checkReadErr(t, l, 1, wal.ErrCompacted)
	for rev := first; rev <= 301; rev++ {
		checkRead(t, l, rev, payload(rev))
	}

	// Damage the record of revision 250 on disk: one payload byte.
	segs := segments(t, dir)
	var seg string
	for _, s := range segs {
		if n, _ := strconv.ParseUint(s, 10, 64); n <= 250 {
			seg = s
		}
	}
	path := filepath.Join(dir, seg)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, payload(250))
	if i < 0 {
		t.Fatalf("setup: payload of 250 not in %s", seg)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{b[i+3] ^ 1}, int64(i+3)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var ce *wal.CorruptError
	if _, err := l.Read(250); !errors.As(err, &ce) || !errors.Is(err, wal.ErrCorrupt) || ce.Segment != seg {
		t.Fatalf("Read of a damaged record: %v, want a *CorruptError in %s", err, seg)
	}
	checkRead(t, l, 249, payload(249))
	checkRead(t, l, 251, payload(251))
	if _, err := f.WriteAt([]byte{b[i+3]}, int64(i+3)); err != nil && !errors.Is(err, os.ErrClosed) {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	checkReadErr(t, l, 250, wal.ErrClosed)
}

// TestReadHoldsNoSegment: reading every record of a log of many segments
// leaves no segment's records in memory (Read keeps offsets only;
// tidwall/wal's Read would keep the last segments it read).
func TestReadHoldsNoSegment(t *testing.T) {
	const segSize = 1 << 20
	l, _ := openLog(t, t.TempDir(), wal.Options{SegmentSize: segSize, Preallocate: -1})
	rec := bytes.Repeat([]byte{'r'}, 4<<10)
	const n = segSize * 6 / (4 << 10)
	for range n {
		write(t, l, rec, false)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for rev := uint64(1); rev <= n; rev++ {
		if _, err := l.Read(rev); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("read %d records of %d segments: %d KiB more held", n, l.Stats().Segments, held>>10)
	if held > segSize/2 {
		t.Fatalf("after reading %d segments of %d KiB, %d KiB more is held", l.Stats().Segments, segSize>>10, held>>10)
	}
}

// syncCounter counts the fsyncs of segment files (Options.SyncFile) and
// fails them once failing is set.
type syncCounter struct {
	n       atomic.Int64
	failing atomic.Bool
}

func (c *syncCounter) sync(f *os.File) error {
	if c.failing.Load() {
		return errors.New("injected fsync failure")
	}
	c.n.Add(1)
	return f.Sync()
}

// flagged is the value a test passes to Enqueue or EnqueueSync with a
// record, so that OnWritten knows which ones asked for an fsync.
type flagged struct{ sync bool }

// TestSyncFlag checks the rule of EnqueueSync: the batch written in one
// write(2) is fsynced before it counts as written (before OnWritten sees it
// and WaitWritten returns) iff one of its records asked for it, and that
// fsync covers every earlier record. The flusher is kept out of the way (an
// hour's FlushInterval).
func TestSyncFlag(t *testing.T) {
	var (
		c       syncCounter
		l       *wal.Log
		batches []string // "first-last sync", as OnWritten saw them
	)
	opts := wal.Options{FlushInterval: time.Hour, SyncFile: c.sync, OnWritten: func(first uint64, vs []any) {
		last, sync := first+uint64(len(vs))-1, false
		for _, v := range vs {
			sync = sync || v.(flagged).sync
		}
		if d := l.Durable(); sync && d < last {
			t.Errorf("OnWritten(%d..%d) of a batch with a flagged record: durable only up to %d", first, last, d)
		}
		batches = append(batches, strconv.FormatUint(first, 10)+"-"+strconv.FormatUint(last, 10)+" "+strconv.FormatBool(sync))
	}}
	l, err := wal.Open(t.TempDir(), 1, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	enqueue := func(sync bool) uint64 {
		t.Helper()
		e := l.Enqueue
		if sync {
			e = l.EnqueueSync
		}
		rev, err := e(payload(l.LastEnqueued()+1), flagged{sync})
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	wait := func(rev uint64) {
		t.Helper()
		if err := l.WaitWritten(rev); err != nil {
			t.Fatal(err)
		}
	}
	check := func(durable uint64, fsyncs int64, synced uint64) {
		t.Helper()
		st := l.Stats()
		if st.Durable != durable || l.DurableIndex() != durable || c.n.Load() != fsyncs || int64(st.Fsyncs) != fsyncs || st.RecordsSynced != synced {
			t.Fatalf("written %d: durable %d (DurableIndex %d), %d fsyncs (Stats: %d) making %d records durable; want %d, %d, %d",
				l.WrittenIndex(), st.Durable, l.DurableIndex(), c.n.Load(), st.Fsyncs, st.RecordsSynced, durable, fsyncs, synced)
		}
	}

	// Unflagged batches are written, not fsynced.
	wait(enqueue(false))
	wait(enqueue(false))
	check(0, 0, 0)
	// A flagged record is durable when WaitWritten returns, with the two
	// before it, by one fsync.
	wait(enqueue(true))
	check(3, 1, 3)
	wait(enqueue(false))
	check(3, 1, 3)
	// One batch of three, the middle one flagged: one fsync, for all four.
	enqueue(false)
	enqueue(true)
	wait(enqueue(false))
	check(7, 2, 7)
	// WaitDurable still fsyncs what the writer did not.
	rev := enqueue(false)
	wait(rev)
	check(7, 2, 7)
	if err := l.WaitDurable(rev); err != nil {
		t.Fatal(err)
	}
	check(8, 3, 8)
	want := []string{"1-1 false", "2-2 false", "3-3 true", "4-4 false", "5-7 true", "8-8 false"}
	if strings.Join(batches, ",") != strings.Join(want, ",") {
		t.Fatalf("batches %v, want %v", batches, want)
	}

	// A failed fsync of a flagged batch fails the log: the batch never
	// counts as written.
	c.failing.Store(true)
	rev = enqueue(true)
	if err := l.WaitWritten(rev); !errors.Is(err, wal.ErrFailed) {
		t.Fatalf("WaitWritten after a failed fsync: %v, want ErrFailed", err)
	}
	if w, d := l.WrittenIndex(), l.DurableIndex(); w != 8 || d != 8 {
		t.Fatalf("after a failed fsync of batch 9: written %d, durable %d; want 8, 8", w, d)
	}
	checkReadErr(t, l, rev, wal.ErrFailed)
	if _, err := l.Enqueue(nil, flagged{}); !errors.Is(err, wal.ErrFailed) {
		t.Fatalf("Enqueue after a failed fsync: %v, want ErrFailed", err)
	}
	if len(batches) != len(want) {
		t.Fatalf("OnWritten saw batches %v after the failure", batches[len(want):])
	}
}
