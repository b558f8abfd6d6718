package wal

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/kvtest"
)

// The tests of this file make write(2) fail for real: a file size limit
// (RLIMIT_FSIZE) turns a write that crosses it into a short write followed
// by EFBIG, as a full disk gives a short write followed by ENOSPC. The limit
// is the process's; no test of this package runs in parallel.

// openFDs counts the process's open file descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		kvtest.Require(t, fmt.Sprintf("needs /proc/self/fd to count descriptors: %v", err))
	}
	return len(ents)
}

// syncBuffer is a log destination safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func recPayload(tag string, size int) []byte {
	return append([]byte(tag+":"), bytes.Repeat([]byte{'.'}, max(0, size-len(tag)-1))...)
}

// wantReplay closes l and checks that the directory's records are exactly
// want, by revision (see closeAndReplay).
func wantReplay(t *testing.T, l *Log, dir string, want map[uint64]string) {
	t.Helper()
	got := closeAndReplay(t, l, dir)
	if len(got) != len(want) {
		t.Errorf("reopen found %d records, %d were written", len(got), len(want))
	}
	for rev, p := range want {
		if got[rev] != p {
			t.Errorf("revision %d: %.20q, want %.20q", rev, got[rev], p)
		}
	}
}

// closeAndReplay closes l and returns the payloads of the directory's records by
// revision, failing unless they are revisions 1..n without a gap.
func closeAndReplay(t *testing.T, l *Log, dir string) map[uint64]string {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	got := map[uint64]string{}
	var last uint64
	l2, err := Open(dir, 1, Options{}, func(rev uint64, p []byte) error {
		if rev != last+1 {
			t.Errorf("reopen: revision %d follows %d", rev, last)
		}
		last = rev
		got[rev] = string(p)
		return nil
	})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if err := l2.Close(); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestWriteErrorRefusesAndRecovers fails the write of a batch in the middle
// of a record and checks the recovery: the batch is refused, nothing is
// left of it in the file, revisions go back, the async records written
// before it are made durable by the cut's fsync, a stream of failing writes
// neither leaks descriptors nor damages the log, and once the limit is
// lifted the next write succeeds at the next revision without a reopen.
func TestWriteErrorRefusesAndRecovers(t *testing.T) {
	if kvtest.InSubprocess(t) {
		return
	}
	dir := t.TempDir()
	var logged syncBuffer
	l, err := Open(dir, 1, Options{
		SegmentSize:   1 << 20,
		Preallocate:   64 << 10,
		FlushInterval: time.Hour, // only the recovery fsyncs the async records
		Logger:        slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]string{}
	write := func(tag string, durable bool) (uint64, error) {
		t.Helper()
		p := recPayload(tag, 1000)
		rev, err := l.Enqueue(p, nil)
		if err != nil {
			t.Fatalf("enqueue %s: %v", tag, err)
		}
		if durable {
			err = l.WaitDurable(rev)
		} else {
			err = l.WaitWritten(rev)
		}
		if err == nil {
			want[rev] = string(p)
		}
		return rev, err
	}
	for i := range 5 {
		if _, err := write(fmt.Sprintf("sync-%d", i), true); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		if _, err := write(fmt.Sprintf("async-%d", i), false); err != nil {
			t.Fatal(err)
		}
	}
	before := l.Stats()
	if before.Written != 10 || before.Durable != 5 {
		t.Fatalf("before the failure: written %d durable %d, want 10 and 5", before.Written, before.Durable)
	}
	tail := filepath.Join(dir, segmentName(1))

	// The limit falls inside the next record: part of it reaches the file.
	kvtest.FileLimit(t, uint64(l.tailBytes+500))
	var revs []uint64
	for i := range 3 {
		rev, err := l.Enqueue(recPayload(fmt.Sprintf("refused-%d", i), 1000), nil)
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, rev)
	}
	err = l.WaitWritten(revs[2])
	if !errors.Is(err, ErrWriteRefused) || !errors.Is(err, syscall.EFBIG) || errors.Is(err, ErrFailed) {
		t.Fatalf("write past the limit: %v, want ErrWriteRefused wrapping EFBIG, not ErrFailed", err)
	}
	for _, rev := range revs[:2] {
		if err := l.WaitDurable(rev); !errors.Is(err, ErrWriteRefused) {
			t.Fatalf("revision %d of the refused batch: %v, want ErrWriteRefused", rev, err)
		}
	}
	st := l.Stats()
	if st.Err != nil || st.Written != 10 || l.LastEnqueued() != 10 {
		t.Fatalf("after the refusal: err %v, written %d, last enqueued %d; want no failure, 10, 10", st.Err, st.Written, l.LastEnqueued())
	}
	if st.Durable != 10 {
		t.Errorf("durable %d after the recovery, want 10: the async records written before the failure were not fsynced", st.Durable)
	}
	if st.WriteFailures != 1 || st.RecordsRefused != 3 || !errors.Is(st.LastWriteErr, syscall.EFBIG) {
		t.Errorf("stats: %d write failures, %d records refused, last %v; want 1, 3, EFBIG", st.WriteFailures, st.RecordsRefused, st.LastWriteErr)
	}
	if fi, err := os.Stat(tail); err != nil || fi.Size() != int64(l.tailBytes) {
		t.Errorf("tail segment after the cut: %v, %v; want %d bytes (no partial record, no zero fill)", fi.Size(), err, l.tailBytes)
	}
	if !strings.Contains(logged.String(), "level=WARN msg=\"wal: write failed; the batch was cut") {
		t.Errorf("the refusal was not logged as a warning:\n%s", logged.String())
	}

	// The disk stays full: every write tries it and is refused.
	fds := openFDs(t)
	for i := range 30 {
		if _, err := write(fmt.Sprintf("still-full-%d", i), i%2 == 0); !errors.Is(err, ErrWriteRefused) {
			t.Fatalf("write %d while the limit holds: %v, want ErrWriteRefused", i, err)
		}
	}
	if n := openFDs(t); n != fds {
		t.Errorf("%d descriptors open after 30 refused writes, %d before", n, fds)
	}
	if st := l.Stats(); st.Written != 10 || st.WriteFailures != 31 || st.Err != nil {
		t.Fatalf("after 30 more refusals: %+v", st)
	}

	// Space comes back.
	kvtest.FileLimit(t, 0)
	rev, err := write("after", true)
	if err != nil || rev != 11 {
		t.Fatalf("write once the limit is lifted: revision %d, %v; want 11, nil", rev, err)
	}
	if !strings.Contains(logged.String(), "wal: writes succeed again") {
		t.Errorf("the end of the failures was not logged:\n%s", logged.String())
	}
	for i := range 20 {
		if _, err := write(fmt.Sprintf("more-%d", i), i%3 == 0); err != nil {
			t.Fatal(err)
		}
	}
	wantReplay(t, l, dir, want)
}

// TestWriteErrorAcrossSegments fails a batch after tidwall/wal sealed the
// tail segment with a record of the batch and started a new one: that
// record is cut from the sealed segment, the new segment file is removed,
// and the log goes on in the old tail.
func TestWriteErrorAcrossSegments(t *testing.T) {
	if kvtest.InSubprocess(t) {
		return
	}
	const segSize = 32 << 10
	dir := t.TempDir()
	l, err := Open(dir, 1, Options{SegmentSize: segSize, Preallocate: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]string{}
	for i := 0; l.tailBytes+1100 < segSize; i++ {
		p := recPayload(fmt.Sprintf("fill-%d", i), 1000)
		rev, err := l.Enqueue(p, nil)
		if err == nil {
			err = l.WaitDurable(rev)
		}
		if err != nil {
			t.Fatal(err)
		}
		want[rev] = string(p)
	}
	pre := l.tailBytes
	// a fills the segment, b (bigger than the limit) goes to the next one.
	kvtest.FileLimit(t, 48<<10)
	a, _ := l.Enqueue(recPayload("a", 1100), nil)
	b, _ := l.Enqueue(recPayload("b", 64<<10), nil)
	if err := l.WaitWritten(b); !errors.Is(err, ErrWriteRefused) || !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("batch across segments: %v, want ErrWriteRefused wrapping EFBIG", err)
	}
	if err := l.WaitWritten(a); !errors.Is(err, ErrWriteRefused) {
		t.Fatalf("record a, whole in the sealed segment: %v, want ErrWriteRefused", err)
	}
	if segs := segmentNames(t, dir); len(segs) != 1 || segs[0] != segmentName(1) {
		t.Errorf("segment files after the cut: %v, want only %s", segs, segmentName(1))
	}
	if fi, err := os.Stat(filepath.Join(dir, segmentName(1))); err != nil || fi.Size() != int64(pre) {
		t.Errorf("tail after the cut: %d bytes (%v), want %d", fi.Size(), err, pre)
	}
	kvtest.FileLimit(t, 0)
	for _, tag := range []string{"c", "d", "e"} {
		p := recPayload(tag, 1000)
		rev, err := l.Enqueue(p, nil)
		if err == nil {
			err = l.WaitDurable(rev)
		}
		if err != nil {
			t.Fatalf("write %s after the limit is lifted: %v", tag, err)
		}
		want[rev] = string(p)
	}
	if rev, ok := lastKey(want); !ok || rev != b+1 {
		t.Errorf("last revision %d, want %d: refused revisions are given again", rev, b+1)
	}
	wantReplay(t, l, dir, want)
}

func lastKey(m map[uint64]string) (uint64, bool) {
	var k uint64
	for r := range m {
		k = max(k, r)
	}
	return k, len(m) > 0
}

func segmentNames(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if len(e.Name()) == segmentNameLen {
			names = append(names, e.Name())
		}
	}
	return names
}

// TestWriteErrorConcurrentWriters runs writers while the file size limit
// comes and goes, and checks that what each writer was told matches the
// log: the records OnWritten reported are exactly those the log holds, at
// their revisions and without a gap, no record refused is among them, and
// every writer told nil finds its own record written (OnWritten, which
// gets the value given to Enqueue, tells whose record holds a revision
// that was refused and given again). The seed is printed and taken back
// from KVD_WAL_SEED.
func TestWriteErrorConcurrentWriters(t *testing.T) {
	if kvtest.InSubprocess(t) {
		return
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("KVD_WAL_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d (KVD_WAL_SEED=%d repeats it)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	const segSize = 64 << 10
	dir := t.TempDir()
	type result struct {
		payload string
		rev     uint64
		err     error
	}
	var wmu sync.Mutex
	wrote := map[*result]uint64{} // what OnWritten reported
	l, err := Open(dir, 1, Options{SegmentSize: segSize, Preallocate: 16 << 10, FlushInterval: time.Millisecond,
		OnWritten: func(first uint64, vs []any) {
			wmu.Lock()
			defer wmu.Unlock()
			for i, v := range vs {
				wrote[v.(*result)] = first + uint64(i)
			}
		}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		results  []result
		ok, refd atomic.Int64
		reused   atomic.Int64
		stop     atomic.Bool
		wg       sync.WaitGroup
	)
	for w := range 6 {
		wrng := rand.New(rand.NewPCG(rng.Uint64(), uint64(w)))
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				r := &result{payload: string(recPayload(fmt.Sprintf("w%d-%d", w, i), 100+wrng.IntN(3000)))}
				rev, err := l.Enqueue([]byte(r.payload), r)
				if err != nil {
					t.Errorf("enqueue: %v", err)
					return
				}
				if wrng.IntN(2) == 0 {
					err = l.WaitDurable(rev)
				} else {
					err = l.WaitWritten(rev)
				}
				wmu.Lock()
				at, written := wrote[r]
				wmu.Unlock()
				switch {
				case err == nil && (!written || at != rev):
					// Refused before this writer waited; its revision
					// went to another record.
					err = ErrWriteRefused
					refd.Add(1)
					reused.Add(1)
				case err == nil:
					ok.Add(1)
				case errors.Is(err, ErrWriteRefused):
					if written {
						t.Errorf("record written at revision %d was refused: %v", at, err)
					}
					refd.Add(1)
				default:
					t.Errorf("write: %v, want nil or ErrWriteRefused", err)
					return
				}
				r.rev, r.err = rev, err
				mu.Lock()
				results = append(results, *r)
				mu.Unlock()
			}
		})
	}
	// Alternate full and free phases, each until enough writes ended in it.
	deadline := time.Now().Add(20 * time.Second)
	for phase := 0; phase < 12 && !t.Failed(); phase++ {
		full := phase%2 == 0
		if full {
			kvtest.FileLimit(t, uint64(1+rng.IntN(segSize)))
		} else {
			kvtest.FileLimit(t, 0)
		}
		counter := &ok
		if full {
			counter = &refd
		}
		start := counter.Load()
		for counter.Load() < start+20 {
			if time.Now().After(deadline) {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("phase %d (full %v) made no progress: %d acknowledged, %d refused", phase, full, ok.Load(), refd.Load())
			}
			time.Sleep(time.Millisecond) // poll
		}
	}
	kvtest.FileLimit(t, 0)
	stop.Store(true)
	wg.Wait()
	if t.Failed() {
		return
	}
	got := closeAndReplay(t, l, dir)
	written := 0
	for _, r := range results {
		if r.err == nil {
			written++
			if got[r.rev] != r.payload {
				t.Errorf("acknowledged %.12q at revision %d, reopen has %.12q", r.payload, r.rev, got[r.rev])
			}
		}
	}
	if len(got) != written {
		t.Errorf("reopen found %d records, %d were acknowledged", len(got), written)
	}
	refusedFound := 0
	present := map[string]bool{}
	for _, p := range got {
		present[p] = true
	}
	for _, r := range results {
		if r.err != nil && present[r.payload] {
			refusedFound++
		}
	}
	if refusedFound > 0 {
		t.Errorf("%d refused records are in the log", refusedFound)
	}
	t.Logf("%d acknowledged, %d refused (%d of them told by OnWritten)", ok.Load(), refd.Load(), reused.Load())
}

// TestWriteErrorRecoveryFails makes the fsync of the cut fail: the log
// fails, the records of the batch have an unknown outcome, a record queued
// behind the batch was refused (it never reached the file), and a record
// written but not yet durable has an unknown outcome too.
func TestWriteErrorRecoveryFails(t *testing.T) {
	if kvtest.InSubprocess(t) {
		return
	}
	dir := t.TempDir()
	var failSync atomic.Bool
	l, err := Open(dir, 1, Options{
		Preallocate:   -1,
		FlushInterval: time.Hour,
		SyncFile: func(f *os.File) error {
			if failSync.Load() {
				return syscall.EIO
			}
			return fdatasync(f)
		},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	appendRec := func(tag string) uint64 {
		t.Helper()
		rev, err := l.Enqueue(recPayload(tag, 500), nil)
		if err == nil {
			err = l.WaitWritten(rev)
		}
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	appendRec("one")
	async := appendRec("two")

	var queued uint64
	testHookWrite = func(l *Log) {
		testHookWrite = nil
		// Queued behind the batch being written.
		queued, _ = l.Enqueue(recPayload("queued", 500), nil)
		failSync.Store(true)
	}
	defer func() { testHookWrite = nil }()
	kvtest.FileLimit(t, uint64(l.tailBytes+100))
	rev, _ := l.Enqueue(recPayload("doomed", 500), nil)
	err = l.WaitWritten(rev)
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrFailed) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("batch whose cut was not fsynced: %v, want ErrOutcomeUnknown and ErrFailed wrapping EIO", err)
	}
	if err := l.WaitWritten(queued); !errors.Is(err, ErrFailed) || errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("record queued behind it: %v, want ErrFailed alone", err)
	}
	if err := l.WaitDurable(async); !errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("record written, not durable: %v, want ErrOutcomeUnknown", err)
	}
	if err := l.WaitWritten(async); err != nil {
		t.Errorf("WaitWritten of a record written before the failure: %v", err)
	}
	if _, err := l.Enqueue([]byte("later"), nil); !errors.Is(err, ErrFailed) {
		t.Errorf("enqueue after the failure: %v, want ErrFailed", err)
	}
}

// TestZeroFillFailureThenRefusal writes under a file size limit that first
// stops the zero fill ahead of the tail (Options.Preallocate), as a full
// disk would: the log must say so and go on appending, so the records
// before the limit are acknowledged; the first write past the limit is
// refused, not fatal, and once the limit is lifted the log appends again.
func TestZeroFillFailureThenRefusal(t *testing.T) {
	if kvtest.InSubprocess(t) {
		return
	}
	dir := t.TempDir()
	var logged syncBuffer
	l, err := Open(dir, 1, Options{Preallocate: 1 << 20,
		Logger: slog.New(slog.NewTextHandler(&logged, nil))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kvtest.FileLimit(t, 64<<10)
	want := map[uint64]string{}
	for i := 0; ; i++ {
		if i > 1000 {
			t.Fatal("no write failed under a 64 KiB file size limit")
		}
		p := recPayload(fmt.Sprint(i), 1000)
		rev, err := l.Enqueue(p, nil)
		if err != nil {
			t.Fatalf("enqueue: %v", err)
		}
		if err = l.WaitDurable(rev); err != nil {
			if !errors.Is(err, ErrWriteRefused) || !errors.Is(err, syscall.EFBIG) {
				t.Fatalf("write past the limit: %v, want ErrWriteRefused wrapping EFBIG", err)
			}
			break
		}
		want[rev] = string(p)
	}
	if len(want) < 50 {
		t.Errorf("only %d records acknowledged under a 64 KiB limit", len(want))
	}
	if !strings.Contains(logged.String(), `level=WARN msg="wal: cannot zero-fill the tail segment ahead of its records; appending"`) {
		t.Errorf("the failed zero fill was not logged as a warning:\n%s", logged.String())
	}
	if st := l.Stats(); st.Err != nil || st.Written != uint64(len(want)) {
		t.Fatalf("stats after the refusal: %+v", st)
	}
	kvtest.FileLimit(t, 0)
	p := recPayload("after", 1000)
	rev, err := l.Enqueue(p, nil)
	if err == nil {
		err = l.WaitDurable(rev)
	}
	if err != nil {
		t.Fatalf("write after the limit is lifted: %v", err)
	}
	want[rev] = string(p)
	wantReplay(t, l, dir, want)
}
