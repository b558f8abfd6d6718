package wal_test

import (
	"bytes"
	"errors"
	"fmt"
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

	"github.com/kvdstore/kvd/internal/kvtest"
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
		fronts    atomic.Int64 // TruncateFront calls that dropped segments
	)
	for a := range appenders {
		appending.Add(1)
		go func() {
			defer appending.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(a)))
			for i := range perAppender {
				rev, err := enqueueRandom(l, rng, 0, 300)
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
					truncate <- rev - 150
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // the truncator: keeps the last ~150 revisions
		defer wg.Done()
		for keep := range truncate {
			before := l.FirstIndex()
			if err := l.TruncateFront(keep); err != nil {
				t.Error(err)
				continue // the appender's sends must not block
			}
			if l.FirstIndex() > before {
				fronts.Add(1)
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
	t.Logf("%d records, first %d, %d segments, %d fsyncs, reads %v, %d truncations, %d raced a read",
		st.Written, st.First, st.Segments, st.Fsyncs, reads, fronts.Load(), compacted.Load())
	if st.Written != appenders*perAppender || fronts.Load() < 6 {
		t.Fatalf("setup: wrote %d records, %d truncations", st.Written, fronts.Load())
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
		kvtest.Require(t, fmt.Sprintf("needs /proc/self/fd to check descriptors: %v", err))
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

// TestReadIndexesAgainAfterCorruption: Read keeps the offsets of a
// segment's records, found from their lengths. When the lengths it read
// were wrong (here zeros where two records were, as a stale page would
// show them) the record it then finds fails its checks; once the file reads
// right again, so must the records. Read must not keep the offsets it built
// from the bad bytes.
func TestReadIndexesAgainAfterCorruption(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, wal.Options{})
	for rev := uint64(1); rev <= 5; rev++ {
		write(t, l, payload(rev), false)
	}
	checkRead(t, l, 3, payload(3)) // indexes 1..5
	for rev := uint64(6); rev <= 7; rev++ {
		write(t, l, payload(rev), false)
	}
	segs := segments(t, dir)
	path := filepath.Join(dir, segs[len(segs)-1])
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ends := entryEnds(b)
	if len(ends) != 8 {
		t.Fatalf("setup: %d entries in %s, want 7", len(ends)-1, path)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, ends[7]-ends[5]), int64(ends[5])); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Read(7); !errors.Is(err, wal.ErrCorrupt) {
		t.Fatalf("Read(7) over zeroed records: %v, want ErrCorrupt", err)
	}
	if _, err := f.WriteAt(b[ends[5]:ends[7]], int64(ends[5])); err != nil {
		t.Fatal(err)
	}
	for rev := uint64(7); rev >= 1; rev-- {
		checkRead(t, l, rev, payload(rev))
	}
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

// payload2 is the payload written at revision rev after a truncation
// dropped the first one written there: a different length too, so that
// records sit at other offsets.
func payload2(rev uint64) []byte { return append([]byte("again-"), payload(rev)...) }

// replay opens dir from revision from and returns the payloads replayed, by
// revision, and the log.
func replay(t testing.TB, dir string, from uint64, opts wal.Options) (map[uint64][]byte, *wal.Log) {
	t.Helper()
	got := make(map[uint64][]byte)
	next := from
	l, err := wal.Open(dir, from, opts, func(rev uint64, p []byte) error {
		if rev != next {
			t.Errorf("replayed revision %d, want %d", rev, next)
		}
		next++
		got[rev] = bytes.Clone(p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return got, l
}

// checkLog fails unless log holds exactly revisions from..to, revision r
// holding want(r).
func checkLog(t testing.TB, log map[uint64][]byte, from, to uint64, want func(uint64) []byte) {
	t.Helper()
	if len(log) != int(to+1-from) {
		t.Fatalf("log holds %d records, want %d..%d", len(log), from, to)
	}
	for rev := from; rev <= to; rev++ {
		if !bytes.Equal(log[rev], want(rev)) {
			t.Fatalf("revision %d holds %q, want %q", rev, log[rev], want(rev))
		}
	}
}

// TestTruncateBack drops a suffix that ends in a sealed segment, with
// written records above the durable revision and queued ones after them:
// the log ends at n, durable, for Read, Enqueue, a crash image of the
// directory and a reopen; records appended after it are read back (not the
// dropped ones at the same revisions); the cases at the edges (nothing to
// drop, queued records only, everything, below the first revision) do what
// the doc says.
func TestTruncateBack(t *testing.T) {
	dir := t.TempDir()
	opts := wal.Options{SegmentSize: 2000}
	l, err := wal.Open(dir, 1, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for rev := uint64(1); rev <= 300; rev++ {
		write(t, l, payload(rev), false)
	}
	if err := l.WaitDurable(200); err != nil {
		t.Fatal(err)
	}
	for rev := uint64(301); rev <= 305; rev++ { // queued, not written
		if _, err := l.Enqueue(payload(rev), nil); err != nil {
			t.Fatal(err)
		}
	}
	// Read holds the segments that change.
	for _, rev := range []uint64{1, 150, 170, 300} {
		checkRead(t, l, rev, payload(rev))
	}
	if err := l.TruncateBack(l.LastEnqueued()); err != nil {
		t.Fatal(err)
	}
	if l.LastEnqueued() != 305 || l.WrittenIndex() != 300 {
		t.Fatalf("TruncateBack at the last revision changed the log: enqueued %d, written %d", l.LastEnqueued(), l.WrittenIndex())
	}

	if err := l.TruncateBack(150); err != nil {
		t.Fatal(err)
	}
	if e, w, d := l.LastEnqueued(), l.WrittenIndex(), l.DurableIndex(); e != 150 || w != 150 || d != 150 {
		t.Fatalf("after TruncateBack(150): enqueued %d, written %d, durable %d; want 150 each", e, w, d)
	}
	checkRead(t, l, 150, payload(150))
	checkRead(t, l, 1, payload(1))
	for _, rev := range []uint64{151, 170, 300, 303} {
		checkReadErr(t, l, rev, wal.ErrNotFound)
	}
	if err := l.WaitWritten(303); err == nil {
		t.Fatal("WaitWritten(303) of a dropped queued record returned nil")
	}
	img := t.TempDir()
	copyWAL(t, dir, img)
	got, _ := replay(t, img, 1, opts)
	checkLog(t, got, 1, 150, payload)

	// New records at the dropped revisions, some flagged.
	for rev := uint64(151); rev <= 200; rev++ {
		if got := write(t, l, payload2(rev), rev%10 == 0); got != rev {
			t.Fatalf("Enqueue after TruncateBack(150) returned %d, want %d", got, rev)
		}
	}
	want := func(rev uint64) []byte {
		if rev > 150 {
			return payload2(rev)
		}
		return payload(rev)
	}
	for rev := uint64(200); rev >= 1; rev-- { // the new records first
		checkRead(t, l, rev, want(rev))
	}
	img = t.TempDir()
	copyWAL(t, dir, img)
	got, _ = replay(t, img, 1, opts)
	checkLog(t, got, 1, 200, want)

	// Queued records only.
	for rev := uint64(201); rev <= 205; rev++ {
		if _, err := l.Enqueue(payload2(rev), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.TruncateBack(202); err != nil {
		t.Fatal(err)
	}
	if l.LastEnqueued() != 202 {
		t.Fatalf("after TruncateBack(202) of queued records, last enqueued %d", l.LastEnqueued())
	}
	if err := l.WaitWritten(202); err != nil {
		t.Fatal(err)
	}
	checkRead(t, l, 202, payload2(202))
	checkReadErr(t, l, 203, wal.ErrNotFound)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.TruncateBack(1); !errors.Is(err, wal.ErrClosed) {
		t.Fatalf("TruncateBack after Close: %v, want ErrClosed", err)
	}
	got, l = replay(t, dir, 1, opts)
	checkLog(t, got, 1, 202, want)

	// Below the first revision, and everything.
	if err := l.TruncateFront(100); err != nil {
		t.Fatal(err)
	}
	first := l.FirstIndex()
	if first == 1 {
		t.Fatal("setup: TruncateFront(100) dropped nothing")
	}
	if err := l.TruncateBack(first - 2); !errors.Is(err, wal.ErrCompacted) {
		t.Fatalf("TruncateBack(%d) below the first revision %d: %v, want ErrCompacted", first-2, first, err)
	}
	if err := l.TruncateBack(first - 1); err != nil {
		t.Fatal(err)
	}
	if w, f := l.WrittenIndex(), l.FirstIndex(); w != first-1 || f != first {
		t.Fatalf("after emptying the log: first %d, written %d; want %d, %d", f, w, first, first-1)
	}
	checkReadErr(t, l, first, wal.ErrNotFound)
	if got := write(t, l, payload2(first), false); got != first {
		t.Fatalf("the emptied log's next revision is %d, want %d", got, first)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ = replay(t, dir, first, opts)
	checkLog(t, got, first, first, payload2)
}

// versions records every payload written at each revision, through
// Options.OnWritten, for a log whose revisions TruncateBack drops and
// writes again.
type versions struct {
	mu sync.Mutex
	m  map[uint64][][]byte
}

func (h *versions) onWritten(first uint64, vs []any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, v := range vs {
		h.m[first+uint64(i)] = append(h.m[first+uint64(i)], v.([]byte))
	}
}

// has reports whether p was written at rev.
func (h *versions) has(rev uint64, p []byte) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, q := range h.m[rev] {
		if bytes.Equal(p, q) {
			return true
		}
	}
	return false
}

// latest returns the last payload written at rev.
func (h *versions) latest(rev uint64) []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	vs := h.m[rev]
	if len(vs) == 0 {
		return nil
	}
	return vs[len(vs)-1]
}

// TestTruncateConcurrent runs TruncateBack, Reset and TruncateFront against
// appenders that wait for their records to be written or durable (some
// flagged), a reader and the flusher. A wait ends (no hang) with nil or
// ErrTruncated; a read returns a payload once written at that revision, or
// ErrNotFound, or ErrCompacted below the first revision; and at the end,
// read back and reopened, the log holds the last payload written at each
// revision.
func TestTruncateConcurrent(t *testing.T) {
	seed := testSeed(t)
	dir := t.TempDir()
	h := &versions{m: make(map[uint64][][]byte)}
	opts := wal.Options{SegmentSize: 4 << 10, FlushInterval: time.Millisecond, OnWritten: h.onWritten}
	l, err := wal.Open(dir, 1, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	const appenders, perAppender = 2, 1500
	var (
		wg, appending sync.WaitGroup
		done          atomic.Bool
		cut           = make(chan struct{}, 1)
		truncated     atomic.Int64
		began, cuts   atomic.Int64 // TruncateBack and Reset calls begun, ended
		resets        atomic.Int64
	)
	for a := range appenders {
		appending.Add(1)
		go func() {
			defer appending.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(a)))
			for i := range perAppender {
				rev, err := enqueueRandom(l, rng, 1, 200)
				if err != nil {
					t.Error(err)
					return
				}
				wait := l.WaitWritten
				if rng.IntN(4) == 0 {
					wait = l.WaitDurable
				}
				if err := wait(rev); errors.Is(err, wal.ErrTruncated) {
					truncated.Add(1)
				} else if err != nil {
					t.Errorf("wait for %d: %v", rev, err)
					return
				}
				if a == 0 && i%25 == 24 {
					cut <- struct{}{}
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // the truncator
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, appenders))
		for range cut {
			w, first := l.WrittenIndex(), l.FirstIndex()
			var err error
			if began.Add(1)%10 == 5 {
				err = l.Reset(max(1, w+20-rng.Uint64N(40)))
				resets.Add(1)
			} else {
				err = l.TruncateBack(w - min(w+1-first, rng.Uint64N(40)))
			}
			cuts.Add(1)
			if err == nil && rng.IntN(4) == 0 && w > 300 {
				err = l.TruncateFront(w - 300)
			}
			if err != nil {
				t.Error(err) // and go on: the appender's sends must not block
			}
		}
	}()
	wg.Add(1)
	go func() { // the reader
		defer wg.Done()
		rng := rand.New(rand.NewPCG(seed, appenders+1))
		for !done.Load() {
			ended := cuts.Load()
			first, written := l.FirstIndex(), l.WrittenIndex()
			if written < first {
				continue
			}
			rev := first + rng.Uint64N(written-first+1)
			got, err := l.Read(rev)
			switch {
			case err == nil && h.has(rev, got):
			case errors.Is(err, wal.ErrNotFound) && began.Load() > ended:
				// A TruncateBack or Reset ran meanwhile.
			case errors.Is(err, wal.ErrCompacted) && rev < l.FirstIndex():
			default:
				t.Errorf("Read(%d) with first %d, written %d: %x, %v", rev, first, written, got, err)
				return
			}
		}
	}()
	appending.Wait()
	close(cut)
	done.Store(true)
	wg.Wait()
	if t.Failed() {
		return
	}
	for i := range 50 { // the last cut may have emptied the log
		write(t, l, []byte{byte(i)}, false)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	first, written := l.FirstIndex(), l.WrittenIndex()
	t.Logf("%d truncations (%d resets), %d waits ended by one; log %d..%d", cuts.Load(), resets.Load(), truncated.Load(), first, written)
	if cuts.Load() < 10 || resets.Load() == 0 || written < first+49 {
		t.Fatalf("setup: %d truncations, log ends at %d", cuts.Load(), written)
	}
	for rev := first; rev <= written; rev++ {
		checkRead(t, l, rev, h.latest(rev))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ := replay(t, dir, first, wal.Options{SegmentSize: 4 << 10})
	checkLog(t, got, first, written, h.latest)
}

// TestReset empties a log of several segments, with queued records and a
// read index held, at a revision above its last one and then below:
// FirstIndex, WrittenIndex, DurableIndex and the next Enqueue follow,
// nothing old is read or held open, waits for the dropped records end as
// the doc says, and appends after it survive a crash image and a reopen at
// the new start.
func TestReset(t *testing.T) {
	dir := t.TempDir()
	opts := wal.Options{SegmentSize: 2000}
	l, err := wal.Open(dir, 1, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Reset(0); err == nil {
		t.Fatal("Reset(0) succeeded")
	}
	for rev := uint64(1); rev <= 300; rev++ {
		write(t, l, payload(rev), false)
	}
	checkRead(t, l, 290, payload(290))
	checkRead(t, l, 10, payload(10))
	for range 5 { // 301..305, queued
		if _, err := l.Enqueue(payload(0), nil); err != nil {
			t.Fatal(err)
		}
	}

	check := func(start uint64) {
		t.Helper()
		if f, w, d, e := l.FirstIndex(), l.WrittenIndex(), l.DurableIndex(), l.LastEnqueued(); f != start || w != start-1 || d != start-1 || e != start-1 {
			t.Fatalf("after Reset(%d): first %d, written %d, durable %d, last enqueued %d", start, f, w, d, e)
		}
		checkReadErr(t, l, start-1, wal.ErrCompacted)
		checkReadErr(t, l, start, wal.ErrNotFound)
		if held := deletedSegmentsHeld(t, dir); len(held) > 0 {
			t.Fatalf("deleted segments still open after Reset: %v", held)
		}
		if segs := segments(t, dir); len(segs) != 1 || segs[0] != fmt.Sprintf("%020d", start) {
			t.Fatalf("segments after Reset(%d): %v", start, segs)
		}
		if _, err := os.Stat(filepath.Join(dir, "trash")); !os.IsNotExist(err) {
			t.Fatalf("trash left after Reset: %v", err)
		}
	}
	appendFrom := func(start, n uint64) {
		t.Helper()
		for rev := start; rev < start+n; rev++ {
			if got := write(t, l, payload2(rev), rev%7 == 0); got != rev {
				t.Fatalf("Enqueue returned %d, want %d", got, rev)
			}
		}
		for rev := start; rev < start+n; rev++ {
			checkRead(t, l, rev, payload2(rev))
		}
	}

	if err := l.Reset(1000); err != nil {
		t.Fatal(err)
	}
	check(1000)
	// Revisions below start count as written and durable.
	if err := l.WaitDurable(303); err != nil {
		t.Fatalf("WaitDurable(303) after Reset(1000): %v", err)
	}
	img := t.TempDir()
	copyWAL(t, dir, img)
	got, _ := replay(t, img, 1000, opts)
	checkLog(t, got, 1000, 999, payload2)
	appendFrom(1000, 100)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Reset(1); !errors.Is(err, wal.ErrClosed) {
		t.Fatalf("Reset after Close: %v, want ErrClosed", err)
	}
	got, l = replay(t, dir, 1000, opts)
	checkLog(t, got, 1000, 1099, payload2)

	// Below: the revisions from start on are enqueued again.
	checkRead(t, l, 1050, payload2(1050))
	for range 3 { // 1100..1102, queued
		if _, err := l.Enqueue(payload(0), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Reset(5); err != nil {
		t.Fatal(err)
	}
	check(5)
	for _, rev := range []uint64{5, 1050, 1101} {
		if err := l.WaitWritten(rev); !errors.Is(err, wal.ErrTruncated) {
			t.Fatalf("WaitWritten(%d) after Reset(5): %v, want ErrTruncated", rev, err)
		}
	}
	appendFrom(5, 50)
	img = t.TempDir()
	copyWAL(t, dir, img)
	got, _ = replay(t, img, 5, opts)
	checkLog(t, got, 5, 54, payload2)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got, _ = replay(t, dir, 5, opts)
	checkLog(t, got, 5, 54, payload2)
}

// enqueueRandom enqueues a record of lo to lo+n-1 random bytes, its payload
// also its value for OnWritten, flagged for an fsync one time in eight.
func enqueueRandom(l *wal.Log, rng *rand.Rand, lo, n int) (uint64, error) {
	p := make([]byte, lo+rng.IntN(n))
	for j := range p {
		p[j] = byte(rng.Uint32())
	}
	enqueue := l.Enqueue
	if rng.IntN(8) == 0 {
		enqueue = l.EnqueueSync
	}
	return enqueue(p, p)
}
