package wal_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kvdstore/kvd/wal"
)

// payload returns the deterministic payload of revision rev.
func payload(rev uint64) []byte {
	return []byte(fmt.Sprintf("payload-%d-%s", rev, bytes.Repeat([]byte{'x'}, int(rev%37))))
}

// appendN writes n records, each waited for in sync mode, and returns the
// last revision.
func appendN(t testing.TB, l *wal.Log, n int) uint64 {
	t.Helper()
	var rev uint64
	for range n {
		r, err := l.Enqueue(payload(l.LastEnqueued()+1), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.WaitDurable(r); err != nil {
			t.Fatal(err)
		}
		rev = r
	}
	return rev
}

type replayed struct {
	revs []uint64
}

func (r *replayed) fn(t testing.TB) wal.ReplayFunc {
	return func(rev uint64, p []byte) error {
		if !bytes.Equal(p, payload(rev)) {
			t.Errorf("revision %d: payload %q, want %q", rev, p, payload(rev))
		}
		r.revs = append(r.revs, rev)
		return nil
	}
}

func openLog(t testing.TB, dir string, opts wal.Options) (*wal.Log, []uint64) {
	t.Helper()
	var r replayed
	l, err := wal.Open(dir, 1, opts, r.fn(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, r.revs
}

// checkPrefix fails unless revs is exactly 1..n.
func checkPrefix(t testing.TB, revs []uint64, n uint64) {
	t.Helper()
	if uint64(len(revs)) != n {
		t.Fatalf("replayed %d records, want %d", len(revs), n)
	}
	for i, r := range revs {
		if r != uint64(i+1) {
			t.Fatalf("record %d has revision %d", i, r)
		}
	}
}

func segments(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if len(e.Name()) == 20 {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

func TestRoundTripAndReopen(t *testing.T) {
	dir := t.TempDir()
	l, revs := openLog(t, dir, wal.Options{})
	checkPrefix(t, revs, 0)
	if got := appendN(t, l, 50); got != 50 {
		t.Fatalf("last revision %d, want 50", got)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Enqueue([]byte("x"), nil); !errors.Is(err, wal.ErrClosed) {
		t.Fatalf("Enqueue after Close: %v, want ErrClosed", err)
	}
	l2, revs := openLog(t, dir, wal.Options{})
	checkPrefix(t, revs, 50)
	if got := appendN(t, l2, 1); got != 51 {
		t.Fatalf("next revision %d, want 51", got)
	}
}

func TestReplayFrom(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, wal.Options{})
	appendN(t, l, 20)
	l.Close()
	var got []uint64
	l2, err := wal.Open(dir, 15, wal.Options{}, func(rev uint64, p []byte) error {
		got = append(got, rev)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if len(got) != 6 || got[0] != 15 || got[5] != 20 {
		t.Fatalf("replayed %v, want 15..20", got)
	}
	if _, err := wal.Open(t.TempDir(), 0, wal.Options{}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestLogBehindStateIsAnError(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, wal.Options{})
	appendN(t, l, 5)
	l.Close()
	_, err := wal.Open(dir, 10, wal.Options{}, nil)
	if !errors.Is(err, wal.ErrCorrupt) {
		t.Fatalf("Open from 10 over a log ending at 5: %v, want ErrCorrupt", err)
	}
}

func TestFormatChecked(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, wal.Options{})
	l.Close()
	if err := os.WriteFile(filepath.Join(dir, "FORMAT"), []byte("kvd-wal 99\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := wal.Open(dir, 1, wal.Options{}, nil); !errors.Is(err, wal.ErrFormat) {
		t.Fatalf("Open of another format: %v, want ErrFormat", err)
	}
}

// lastRecordBounds returns the offsets of the last record in the tail segment.
func lastRecordBounds(t testing.TB, path string, lastRev uint64) (start, end int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ends := entryEnds(b)
	if len(ends) < 2 || ends[len(ends)-1] != len(b) {
		t.Fatalf("%s does not end with a whole entry: entries end at %v, file is %d bytes", path, ends, len(b))
	}
	return ends[len(ends)-2], len(b)
}

// entryEnds parses the tidwall/wal entries of a segment image (a uvarint
// length, then that many bytes) up to the first empty or impossible one and
// returns 0 and the end offset of each.
func entryEnds(b []byte) []int {
	ends := []int{0}
	for off := 0; off < len(b); {
		size, un := binary.Uvarint(b[off:])
		if un <= 0 || size == 0 || size > uint64(len(b)-off-un) {
			break
		}
		off += un + int(size)
		ends = append(ends, off)
	}
	return ends
}

func TestTornTailEveryOffset(t *testing.T) {
	base := t.TempDir()
	l, _ := openLog(t, base, wal.Options{})
	const n = 10
	appendN(t, l, n)
	l.Close()
	seg := segments(t, base)[0]
	orig, err := os.ReadFile(filepath.Join(base, seg))
	if err != nil {
		t.Fatal(err)
	}
	start, end := lastRecordBounds(t, filepath.Join(base, seg), n)
	for cut := start; cut < end; cut++ {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			dir := t.TempDir()
			copyWAL(t, base, dir)
			if err := os.WriteFile(filepath.Join(dir, seg), orig[:cut], 0o640); err != nil {
				t.Fatal(err)
			}
			l, revs := openLog(t, dir, wal.Options{})
			checkPrefix(t, revs, n-1)
			if got := appendN(t, l, 1); got != n {
				t.Fatalf("revision after repair %d, want %d", got, n)
			}
			l.Close()
			_, revs = openLog(t, dir, wal.Options{})
			checkPrefix(t, revs, n)
		})
	}
}

func copyWAL(t testing.TB, from, to string) {
	t.Helper()
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
}

func TestZeroAndGarbageTails(t *testing.T) {
	base := t.TempDir()
	l, _ := openLog(t, base, wal.Options{})
	const n = 5
	appendN(t, l, n)
	l.Close()
	seg := segments(t, base)[0]
	orig, err := os.ReadFile(filepath.Join(base, seg))
	if err != nil {
		t.Fatal(err)
	}
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	type tail struct {
		name string
		b    []byte
	}
	var tails []tail
	for _, size := range []int{1, 2, 3, 7, 8, 16, 17, 100, 511, 512, 4095, 4096, 4097, 8191, 8192} {
		tails = append(tails, tail{fmt.Sprintf("zeros-%d", size), make([]byte, size)})
	}
	// Garbage that a torn write can leave: an entry whose length runs past
	// the end of the file, and random bytes after it.
	for i := range 20 {
		size := 1 + rng.IntN(4096)
		g := binary.AppendUvarint(nil, uint64(size+1+rng.IntN(1<<20)))
		for range size {
			g = append(g, byte(rng.Uint32()))
		}
		tails = append(tails, tail{fmt.Sprintf("garbage-%d-%d", i, len(g)), g})
	}
	// A torn record: a valid frame for the next revision, the file ending
	// inside it.
	next := wal.AppendRecord([]byte{byte(wal.HeaderSize + len(payload(n+1)))}, n+1, n, payload(n+1))
	tails = append(tails, tail{"half-written-record", next[:len(next)/2]})
	for _, tc := range tails {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			copyWAL(t, base, dir)
			if err := os.WriteFile(filepath.Join(dir, seg), append(bytes.Clone(orig), tc.b...), 0o640); err != nil {
				t.Fatal(err)
			}
			l, revs := openLog(t, dir, wal.Options{})
			checkPrefix(t, revs, n)
			appendN(t, l, 2)
			l.Close()
			_, revs = openLog(t, dir, wal.Options{})
			checkPrefix(t, revs, n+2)
		})
	}
}

func TestCorruptionInSealedSegmentFailsOpen(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, wal.Options{SegmentSize: 1024})
	appendN(t, l, 200)
	l.Close()
	segs := segments(t, dir)
	if len(segs) < 3 {
		t.Fatalf("want several segments, got %v", segs)
	}
	victim := filepath.Join(dir, segs[1])
	b, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	const off = 300
	b[off] ^= 0x10
	if err := os.WriteFile(victim, b, 0o640); err != nil {
		t.Fatal(err)
	}
	_, err = wal.Open(dir, 1, wal.Options{SegmentSize: 1024}, nil)
	var ce *wal.CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, wal.ErrCorrupt) {
		t.Fatalf("Open over a flipped bit: %v, want a CorruptError", err)
	}
	if ce.Segment != segs[1] || ce.Offset > off || ce.Offset < off-200 {
		t.Fatalf("error names segment %s offset %d, want %s near %d", ce.Segment, ce.Offset, segs[1], off)
	}
	t.Log(err)
}

func TestBadRecordFollowedByValidInTailIsCorruption(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, wal.Options{})
	appendN(t, l, 10)
	l.Close()
	path := filepath.Join(dir, segments(t, dir)[0])
	b, _ := os.ReadFile(path)
	b[40] ^= 0xff // inside the first record
	os.WriteFile(path, b, 0o640)
	if _, err := wal.Open(dir, 1, wal.Options{}, nil); !errors.Is(err, wal.ErrCorrupt) {
		t.Fatalf("Open: %v, want ErrCorrupt", err)
	}
	if fi, _ := os.Stat(path); fi.Size() != int64(len(b)) {
		t.Fatalf("a refused open changed the segment: size %d, was %d", fi.Size(), len(b))
	}
}

func TestSegmentsAndDirectory(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, wal.Options{SegmentSize: 2000})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(1, uint64(w)))
			for range 300 {
				p := bytes.Repeat([]byte{byte(w)}, 1+rng.IntN(300))
				rev, err := l.Enqueue(p, nil)
				if err != nil {
					t.Error(err)
					return
				}
				if err := l.WaitWritten(rev); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if got, want := l.Stats().Segments, len(segments(t, dir)); got != want {
		t.Fatalf("log tracks %d segments, directory has %d", got, want)
	}
	if err := l.TruncateFront(1000); err != nil {
		t.Fatal(err)
	}
	st := l.Stats()
	if got, want := st.Segments, len(segments(t, dir)); got != want {
		t.Fatalf("after truncation the log tracks %d segments, directory has %d", got, want)
	}
	if st.First > 1000 || st.First < 500 {
		t.Fatalf("first revision after truncating to 1000 is %d", st.First)
	}
	l.Close()
	var first uint64
	l2, err := wal.Open(dir, 1000, wal.Options{SegmentSize: 2000}, func(rev uint64, _ []byte) error {
		if first == 0 {
			first = rev
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if first != 1000 || l2.Written() != 1200 {
		t.Fatalf("replay from 1000 started at %d, last %d", first, l2.Written())
	}
}

func TestGroupCommitSharesFsyncs(t *testing.T) {
	l, _ := openLog(t, t.TempDir(), wal.Options{})
	var wg sync.WaitGroup
	const writers, each = 32, 20
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				rev, err := l.Enqueue([]byte("v"), nil)
				if err == nil {
					err = l.WaitDurable(rev)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	st := l.Stats()
	if st.Durable != writers*each || st.RecordsSynced != writers*each {
		t.Fatalf("durable %d, records synced %d, want %d", st.Durable, st.RecordsSynced, writers*each)
	}
	if st.Fsyncs >= writers*each {
		t.Fatalf("%d fsyncs for %d records: no fsync was shared", st.Fsyncs, writers*each)
	}
	t.Logf("%d records, %d fsyncs", writers*each, st.Fsyncs)
}

func TestAsyncRecordsAreFlushed(t *testing.T) {
	l, _ := openLog(t, t.TempDir(), wal.Options{})
	rev, err := l.Enqueue([]byte("v"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.WaitWritten(rev); err != nil {
		t.Fatal(err)
	}
	// Nobody waits for durability: the flusher must get there.
	waitFor(t, func() bool { return l.Stats().Durable >= rev })
}

func TestFsyncErrorIsSticky(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	fail := false
	opts := wal.Options{SyncFile: func(f *os.File) error {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			return syscall.EIO
		}
		return f.Sync()
	}}
	l, _ := openLog(t, dir, opts)
	acked := appendN(t, l, 10)
	mu.Lock()
	fail = true
	mu.Unlock()
	rev, err := l.Enqueue([]byte("doomed"), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = l.WaitDurable(rev)
	if !errors.Is(err, wal.ErrFailed) || !errors.Is(err, syscall.EIO) || !errors.Is(err, wal.ErrOutcomeUnknown) {
		t.Fatalf("WaitDurable with a failing fsync: %v, want ErrFailed wrapping EIO, outcome unknown (the record is written)", err)
	}
	mu.Lock()
	fail = false // a later fsync would succeed: the log must not retry and pretend
	mu.Unlock()
	if _, err := l.Enqueue([]byte("later"), nil); !errors.Is(err, wal.ErrFailed) {
		t.Fatalf("Enqueue after a failed fsync: %v, want ErrFailed", err)
	}
	if err := l.WaitDurable(rev); !errors.Is(err, wal.ErrFailed) {
		t.Fatalf("second WaitDurable: %v, want ErrFailed", err)
	}
	if err := l.Sync(); !errors.Is(err, wal.ErrFailed) {
		t.Fatalf("Sync after failure: %v, want ErrFailed", err)
	}
	if st := l.Stats(); st.Durable != acked || st.Err == nil {
		t.Fatalf("durable %d err %v, want %d and the failure", st.Durable, st.Err, acked)
	}
	l.Close()
	var r replayed
	l2, err := wal.Open(dir, 1, wal.Options{}, func(rev uint64, p []byte) error {
		r.revs = append(r.revs, rev)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if uint64(len(r.revs)) < acked {
		t.Fatalf("reopen found %d records, %d were acknowledged", len(r.revs), acked)
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	for i := 0; i < 2000; i++ {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond) // poll: the flusher runs on a 10ms timer

	}
	t.Fatal("condition not reached within 10s")
}

// TestPreallocatedTail checks the zero fill ahead of the tail segment's
// records: it is there while the log is open, a crash image (a copy of the
// open log, as kill -9 leaves it) opens with every record and its fill cut
// off, sealed segments never end in zeros, and Close trims the fill.
func TestPreallocatedTail(t *testing.T) {
	for _, prealloc := range []int{16 << 10, -1} {
		t.Run(fmt.Sprint(prealloc), func(t *testing.T) {
			dir := t.TempDir()
			opts := wal.Options{SegmentSize: 64 << 10, Preallocate: prealloc}
			l, _ := openLog(t, dir, opts)
			const n = 5000
			appendN(t, l, n)
			segs := segments(t, dir)
			if len(segs) < 3 {
				t.Fatalf("%d segments, want several", len(segs))
			}
			tail := filepath.Join(dir, segs[len(segs)-1])
			b, err := os.ReadFile(tail)
			if err != nil {
				t.Fatal(err)
			}
			ends := entryEnds(b)
			end := ends[len(ends)-1]
			if len(ends) < 2 {
				t.Fatalf("no record found in the tail segment")
			}
			fill := b[end:]
			if prealloc < 0 && len(fill) != 0 {
				t.Fatalf("preallocation off, but %d bytes follow the last record", len(fill))
			}
			if prealloc > 0 && (len(fill) < prealloc/2 || len(bytes.TrimLeft(fill, "\x00")) != 0) {
				t.Fatalf("%d bytes follow the last record, want at least %d zeros", len(fill), prealloc/2)
			}

			crash := t.TempDir()
			copyWAL(t, dir, crash)
			var logged bytes.Buffer
			copts := opts
			copts.Logger = slog.New(slog.NewTextHandler(&logged, nil))
			l2, revs := openLog(t, crash, copts)
			checkPrefix(t, revs, n)
			l2.Close()
			// The fill is expected, not damage: Info, not the Warn of a torn tail.
			if prealloc > 0 && !strings.Contains(logged.String(), `level=INFO msg="wal: truncating zeroed tail"`) {
				t.Errorf("reopening the crash image did not log the zeroed tail at Info:\n%s", logged.String())
			}
			if strings.Contains(logged.String(), "level=WARN") {
				t.Errorf("reopening the crash image warned:\n%s", logged.String())
			}
			if fi, err := os.Stat(filepath.Join(crash, segs[len(segs)-1])); err != nil || fi.Size() != int64(end) {
				t.Fatalf("crash image's tail after reopen: %v, %v; want %d bytes", fi.Size(), err, end)
			}

			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(tail); err != nil || fi.Size() != int64(end) {
				t.Fatalf("tail after Close: %v, %v; want %d bytes", fi.Size(), err, end)
			}
		})
	}
}

// TestLogHoldsOneSegment checks what the log keeps in memory. tidwall/wal
// keeps the tail segment's entries in memory for its Read, and caches the
// segments it seals: the log drops that cache at each new segment, so what
// it holds stays about one segment however many it writes (SegmentSize
// bounds it; see Options.SegmentSize).
func TestLogHoldsOneSegment(t *testing.T) {
	const segSize = 8 << 20
	l, _ := openLog(t, t.TempDir(), wal.Options{SegmentSize: segSize, Preallocate: -1})
	rec := bytes.Repeat([]byte{'v'}, 4<<10)
	write := func(n int) {
		for range n {
			r, err := l.Enqueue(rec, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := l.WaitWritten(r); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(16) // warm the log's own reusable buffers
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	// Six segments and a half: the tail is half full at the end.
	const n = segSize * 13 / 2 / (4 << 10)
	write(n)
	runtime.GC()
	runtime.ReadMemStats(&after)
	if segs := l.Stats().Segments; segs < 6 {
		t.Fatalf("%d segments, want at least 6", segs)
	}
	written := float64(l.Stats().BytesWritten)
	allocated := float64(after.TotalAlloc - before.TotalAlloc)
	held := float64(after.HeapAlloc) - float64(before.HeapAlloc)
	t.Logf("%d records, %.1f MiB written, %.1f MiB allocated, %.1f MiB more held", n, written/(1<<20), allocated/(1<<20), held/(1<<20))
	if held > 1.5*segSize {
		t.Errorf("after writing %.1f MiB in %d MiB segments, %.1f MiB more is held: sealed segments are kept in memory",
			written/(1<<20), segSize>>20, held/(1<<20))
	}
}

// TestCloseTrimFsyncError: Close cuts the zero fill off the tail and fsyncs
// the file through Options.SyncFile like every other fsync of a segment, so
// that a failure of that fsync is injectable and reported, and the log
// reopens with every record.
func TestCloseTrimFsyncError(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	sizes := map[string]int64{} // size of each file at its last fsync
	trims := 0
	opts := wal.Options{SegmentSize: 1 << 20, Preallocate: 64 << 10, SyncFile: func(f *os.File) error {
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		last, seen := sizes[f.Name()]
		sizes[f.Name()] = fi.Size()
		if seen && fi.Size() < last {
			trims++ // the zero fill was cut off since the last fsync
			return syscall.EIO
		}
		return f.Sync()
	}}
	l, err := wal.Open(dir, 1, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	acked := appendN(t, l, 50)
	if err := l.Close(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Close with a failing fsync after the trim: %v, want EIO", err)
	}
	if trims != 1 {
		t.Fatalf("%d fsyncs after a trim, want 1", trims)
	}
	_, revs := openLog(t, dir, wal.Options{SegmentSize: 1 << 20})
	checkPrefix(t, revs, acked)
}
