package engine_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/faults"
)

func open(t testing.TB, dir string, opts engine.Options) *engine.DB {
	t.Helper()
	db, err := engine.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func mustPut(t testing.TB, db *engine.DB, k, v string) uint64 {
	t.Helper()
	rev, err := db.Put([]byte(k), []byte(v), engine.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func wantGet(t testing.TB, db *engine.DB, k, want string) {
	t.Helper()
	got, err := db.Get([]byte(k))
	if want == "<missing>" {
		if !errors.Is(err, engine.ErrNotFound) {
			t.Fatalf("Get(%q) = %q, %v; want ErrNotFound", k, got, err)
		}
		return
	}
	if err != nil || string(got) != want {
		t.Fatalf("Get(%q) = %q, %v; want %q", k, got, err, want)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, mode := range []engine.CommitMode{engine.CommitSync, engine.CommitAsync} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			db := open(t, dir, engine.Options{CommitMode: mode})
			var last uint64
			for i := range 100 {
				rev := mustPut(t, db, fmt.Sprintf("k%03d", i), fmt.Sprint(i))
				if rev != last+1 {
					t.Fatalf("revision %d after %d", rev, last)
				}
				last = rev
			}
			mustPut(t, db, "k007", "seven")
			if _, err := db.Delete([]byte("k008"), engine.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			mustPut(t, db, "empty", "")
			bin := string([]byte{0, 1, 2, 0xff, '\r', '\n'})
			mustPut(t, db, bin, bin)
			check := func(db *engine.DB) {
				wantGet(t, db, "k000", "0")
				wantGet(t, db, "k007", "seven")
				wantGet(t, db, "k008", "<missing>")
				wantGet(t, db, "k099", "99")
				wantGet(t, db, "empty", "")
				wantGet(t, db, bin, bin)
				wantGet(t, db, "nope", "<missing>")
				if n, err := db.Count(); err != nil || n != 101 {
					t.Fatalf("Count = %d, %v; want 101", n, err)
				}
			}
			check(db)
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			db = open(t, dir, engine.Options{})
			check(db)
			st := db.Stats()
			if st.WrittenRevision != 104 || st.CheckpointedRevision != 104 || st.DurableRevision != 104 {
				t.Fatalf("after reopen: %+v", st)
			}
		})
	}
}

// TestAppendGet: AppendGet appends what Get returns to the caller's buffer,
// from the memtable and from the state file, and allocates nothing when the
// buffer has room; GetEach, which the server's GET uses, allocates nothing
// either.
func TestAppendGet(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, engine.Options{})
	mustPut(t, db, "k", "value")
	mustPut(t, db, "empty", "")
	mustPut(t, db, "gone", "x")
	if _, err := db.Delete([]byte("gone"), engine.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	check := func(where string) {
		buf := make([]byte, 0, 64)
		for _, c := range []struct{ key, want string }{
			{"k", "value"}, {"empty", ""}, {"gone", "<missing>"}, {"nope", "<missing>"},
		} {
			got, err := db.AppendGet(append(buf, "prefix:"...), []byte(c.key))
			switch {
			case c.want == "<missing>":
				if !errors.Is(err, engine.ErrNotFound) || string(got) != "prefix:" {
					t.Errorf("%s: AppendGet(%q) = %q, %v; want the buffer back and ErrNotFound", where, c.key, got, err)
				}
			case err != nil || string(got) != "prefix:"+c.want:
				t.Errorf("%s: AppendGet(%q) = %q, %v; want %q", where, c.key, got, err, "prefix:"+c.want)
			}
			wantGet(t, db, c.key, c.want)
		}
		if raceEnabled {
			return // allocation counts mean nothing under the race detector
		}
		key := []byte("k")
		if n := testing.AllocsPerRun(100, func() {
			if _, err := db.AppendGet(buf[:0], key); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%s: AppendGet allocates %.1f times per call", where, n)
		}
		keys, seen := [][]byte{key, []byte("nope")}, 0
		count := func(int, []byte, bool) { seen++ }
		if n := testing.AllocsPerRun(100, func() {
			if err := db.GetEach(keys, count); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%s: GetEach allocates %.1f times per call", where, n)
		}
		if seen == 0 {
			t.Errorf("%s: GetEach never called its function", where)
		}
	}
	check("memtable")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir, engine.Options{})
	if st := db.Stats(); st.CheckpointedRevision != st.WrittenRevision {
		t.Fatalf("after reopen the writes are not all in the state file: %+v", st)
	}
	check("state file")
}

// TestGetEachIsAtomic: GetEach never sees part of a batch, also while
// checkpoints move the writes into the state file.
func TestGetEachIsAtomic(t *testing.T) {
	db := open(t, t.TempDir(), engine.Options{CommitMode: engine.CommitAsync, CheckpointLogBytes: 8 << 10})
	keys := [][]byte{[]byte("a"), []byte("b"), []byte("c")}
	// The writer runs until enough checkpoints have overlapped the reads,
	// not for a fixed count: under the race detector a slow checkpointer
	// folds more writes into each checkpoint.
	const wantCheckpoints = 10
	done := make(chan error, 1)
	go func() {
		deadline := time.Now().Add(time.Minute)
		for i := 0; db.Stats().Checkpoints < wantCheckpoints; i++ {
			if time.Now().After(deadline) {
				done <- fmt.Errorf("%d checkpoints after %d batches in a minute; want %d", db.Stats().Checkpoints, i, wantCheckpoints)
				return
			}
			var b engine.Batch
			for _, k := range keys {
				if i%7 == 6 {
					b.Delete(k)
				} else {
					b.Put(k, fmt.Appendf(nil, "%d%s", i, bytes.Repeat([]byte("v"), i%200)))
				}
			}
			if _, err := db.Write(&b, engine.WriteOptions{}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	reads := 0
	for {
		var vals []string
		err := db.GetEach(keys, func(i int, v []byte, found bool) {
			if found {
				vals = append(vals, string(v))
			} else {
				vals = append(vals, "<missing>")
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		reads++
		if vals[0] != vals[1] || vals[1] != vals[2] {
			t.Fatalf("read %d saw part of a batch: %.20q", reads, vals)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d reads alongside %d checkpoints", reads, db.Stats().Checkpoints)
			return
		default:
		}
	}
}

func TestPerWriteDurability(t *testing.T) {
	db := open(t, t.TempDir(), engine.Options{CommitMode: engine.CommitAsync, FlushInterval: time.Hour})
	before := db.Stats().Fsyncs
	rev, err := db.Put([]byte("a"), []byte("1"), engine.WriteOptions{Durability: engine.DurabilitySync})
	if err != nil {
		t.Fatal(err)
	}
	if st := db.Stats(); st.DurableRevision < rev || st.Fsyncs != before+1 {
		t.Fatalf("sync write in async mode: durable %d fsyncs %d, want >= %d and %d", st.DurableRevision, st.Fsyncs, rev, before+1)
	}
	rev, err = db.Put([]byte("b"), []byte("2"), engine.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st := db.Stats(); st.DurableRevision >= rev {
		t.Fatalf("async write was fsynced before the flush interval: %+v", st)
	}
	wantGet(t, db, "b", "2") // reads see acknowledged, not yet durable writes
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	if st := db.Stats(); st.DurableRevision < rev || db.DurableRevision() != st.DurableRevision || db.WrittenRevision() != rev {
		t.Fatalf("Sync returned before revision %d was durable: %+v", rev, st)
	}
}

// TestSubmitThenWait: Submit queues without writing; a write is visible
// once WaitWritten returns and durable once WaitDurable does, and one wait
// covers every write submitted before it.
func TestSubmitThenWait(t *testing.T) {
	db := open(t, t.TempDir(), engine.Options{CommitMode: engine.CommitAsync, FlushInterval: time.Hour})
	var b1, b2 engine.Batch
	b1.Put([]byte("a"), []byte("1"))
	b2.Put([]byte("b"), []byte("2"))
	c1, err := db.Submit(&b1, engine.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := db.Submit(&b2, engine.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c1.Sync() || c2.Sync() {
		t.Fatal("a write with the default durability is sync in async commit mode")
	}
	r1, r2 := c1.Revision(), c2.Revision()
	if r2 != r1+1 {
		t.Fatalf("revisions %d, %d: want consecutive", r1, r2)
	}
	if _, err := db.Get([]byte("a")); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("a submitted write is visible before it is written: %v", err)
	}
	if db.WrittenRevision() >= r1 {
		t.Fatalf("committed revision %d before any wait", db.WrittenRevision())
	}
	if err := c2.WaitWritten(); err != nil {
		t.Fatal(err)
	}
	if err := c1.WaitWritten(); err != nil {
		t.Fatal(err)
	}
	wantGet(t, db, "a", "1")
	wantGet(t, db, "b", "2")
	if db.DurableRevision() >= r2 {
		t.Fatalf("durable revision %d without an fsync", db.DurableRevision())
	}
	fsyncs := db.Stats().Fsyncs
	if err := c2.WaitDurable(); err != nil {
		t.Fatal(err)
	}
	if st := db.Stats(); st.DurableRevision < r2 || st.Fsyncs != fsyncs+1 {
		t.Fatalf("after WaitDurable(%d): durable %d, %d fsyncs (want %d)", r2, st.DurableRevision, st.Fsyncs, fsyncs+1)
	}
	var bad engine.Batch
	bad.Put(nil, []byte("x"))
	if _, err := db.Submit(&bad, engine.WriteOptions{}); err == nil {
		t.Fatal("Submit accepted an empty key")
	}
}

func TestBatchAndScan(t *testing.T) {
	db := open(t, t.TempDir(), engine.Options{})
	var b engine.Batch
	for i := range 10 {
		b.Put([]byte(fmt.Sprintf("p/%02d", i)), []byte(fmt.Sprint(i)))
	}
	b.Put([]byte("q/1"), []byte("q"))
	b.Delete([]byte("p/05"))
	rev, err := db.Write(&b, engine.WriteOptions{})
	if err != nil || rev != 1 {
		t.Fatalf("Write = %d, %v; want revision 1", rev, err)
	}
	b.Reset()
	if rev, err := db.Write(&b, engine.WriteOptions{}); err != nil || rev != 1 {
		t.Fatalf("empty Write = %d, %v; want 1, nil", rev, err)
	}
	// Move part of the state into the state file, then overlay newer writes.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_ = db
	dir := t.TempDir()
	db = open(t, dir, engine.Options{})
	db.Write(func() *engine.Batch {
		var b engine.Batch
		for i := range 10 {
			b.Put([]byte(fmt.Sprintf("p/%02d", i)), []byte(fmt.Sprint(i)))
		}
		b.Put([]byte("q/1"), []byte("q"))
		return &b
	}(), engine.WriteOptions{})
	db.Close()
	db = open(t, dir, engine.Options{}) // everything now in the state file
	db.Delete([]byte("p/05"), engine.WriteOptions{})
	mustPut(t, db, "p/03", "three")
	mustPut(t, db, "p/10", "10")
	keys := func(kvs []engine.KV) string {
		var s []string
		for _, kv := range kvs {
			s = append(s, string(kv.Key)+"="+string(kv.Value))
		}
		return strings.Join(s, ",")
	}
	for _, tc := range []struct {
		name string
		o    engine.ScanOptions
		want string
	}{
		{"prefix", engine.ScanOptions{Prefix: []byte("p/"), Limit: 5}, "p/00=0,p/01=1,p/02=2,p/03=three,p/04=4"},
		{"after tombstone", engine.ScanOptions{Start: []byte("p/04"), Limit: 3}, "p/04=4,p/06=6,p/07=7"},
		{"range", engine.ScanOptions{Start: []byte("p/08"), End: []byte("q/1")}, "p/08=8,p/09=9,p/10=10"},
		{"all of q", engine.ScanOptions{Prefix: []byte("q/")}, "q/1=q"},
		{"none", engine.ScanOptions{Prefix: []byte("zz")}, ""},
		{"keys only", engine.ScanOptions{Prefix: []byte("p/1"), KeysOnly: true}, "p/10="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kvs, err := db.Scan(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if got := keys(kvs); got != tc.want {
				t.Fatalf("Scan = %s; want %s", got, tc.want)
			}
		})
	}
	if n, err := db.Count(); err != nil || n != 11 {
		t.Fatalf("Count = %d, %v; want 11", n, err)
	}
}

func TestUpdateIsAtomic(t *testing.T) {
	db := open(t, t.TempDir(), engine.Options{CommitMode: engine.CommitAsync})
	incr := func() error {
		_, err := db.Update(engine.WriteOptions{}, func(tx *engine.Txn) error {
			v, err := tx.Get([]byte("n"))
			if err != nil && !errors.Is(err, engine.ErrNotFound) {
				return err
			}
			n, _ := strconv.Atoi(string(v))
			tx.Put([]byte("n"), []byte(strconv.Itoa(n+1)))
			return nil
		})
		return err
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 100 {
				if err := incr(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		go func() { // blind writes racing with the increments
			defer wg.Done()
			for i := range 100 {
				if _, err := db.Put([]byte(fmt.Sprint("other", i)), []byte("x"), engine.WriteOptions{}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	wantGet(t, db, "n", "800")
	sentinel := errors.New("no")
	rev0 := db.Stats().WrittenRevision
	rev, err := db.Update(engine.WriteOptions{}, func(tx *engine.Txn) error {
		tx.Put([]byte("n"), []byte("0"))
		return sentinel
	})
	if !errors.Is(err, sentinel) || rev != 0 {
		t.Fatalf("Update returning an error: %d, %v", rev, err)
	}
	wantGet(t, db, "n", "800")
	if got := db.Stats().WrittenRevision; got != rev0 {
		t.Fatalf("a failed Update committed: revision %d, was %d", got, rev0)
	}
	// Read-your-writes inside a transaction.
	db.Update(engine.WriteOptions{}, func(tx *engine.Txn) error {
		tx.Put([]byte("x"), []byte("1"))
		if v, err := tx.Get([]byte("x")); err != nil || string(v) != "1" {
			t.Errorf("Txn.Get of its own write: %q, %v", v, err)
		}
		tx.Delete([]byte("x"))
		if _, err := tx.Get([]byte("x")); !errors.Is(err, engine.ErrNotFound) {
			t.Errorf("Txn.Get of its own delete: %v", err)
		}
		return nil
	})
}

func TestLimitsAndBadInput(t *testing.T) {
	db := open(t, t.TempDir(), engine.Options{MaxValueSize: 100, MaxKeySize: 10})
	wo := engine.WriteOptions{}
	if _, err := db.Put(nil, []byte("v"), wo); !errors.Is(err, engine.ErrEmptyKey) {
		t.Errorf("empty key: %v", err)
	}
	if _, err := db.Put([]byte("01234567890"), []byte("v"), wo); !errors.Is(err, engine.ErrKeyTooLarge) {
		t.Errorf("long key: %v", err)
	}
	if _, err := db.Put([]byte("k"), make([]byte, 101), wo); !errors.Is(err, engine.ErrValueTooLarge) {
		t.Errorf("long value: %v", err)
	}
	var b engine.Batch
	b.Put([]byte("ok"), []byte("v"))
	b.Put([]byte("k"), make([]byte, 101))
	if _, err := db.Write(&b, wo); !errors.Is(err, engine.ErrValueTooLarge) {
		t.Errorf("batch with a long value: %v", err)
	}
	wantGet(t, db, "ok", "<missing>") // nothing of a refused batch is written
	if st := db.Stats(); st.WrittenRevision != 0 {
		t.Errorf("refused writes committed revision %d", st.WrittenRevision)
	}
}

func TestOptionsReportEveryProblem(t *testing.T) {
	_, err := engine.Open(t.TempDir(), engine.Options{
		CommitMode:    engine.CommitMode(7),
		FlushInterval: -1,
		MaxKeySize:    engine.MaxKeyLimit + 1,
		FlushBytes:    -5,
	})
	if err == nil {
		t.Fatal("Open accepted invalid options")
	}
	for _, want := range []string{"CommitMode", "FlushInterval", "MaxKeySize", "FlushBytes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if _, err := engine.ParseCommitMode("fast"); err == nil {
		t.Error("ParseCommitMode accepted fast")
	}
}

func TestDirectoryLock(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, engine.Options{})
	if _, err := engine.Open(dir, engine.Options{}); !errors.Is(err, engine.ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	// With LOCK deleted, the second Open gets past it: the state file's own
	// lock stops it, with the same error.
	if err := os.Remove(filepath.Join(dir, "LOCK")); err != nil {
		t.Fatal(err)
	}
	if _, err := engine.Open(dir, engine.Options{}); !errors.Is(err, engine.ErrLocked) {
		t.Fatalf("second Open with LOCK deleted: %v, want ErrLocked", err)
	} else {
		t.Log(err)
	}
	db.Close()
	db2 := open(t, dir, engine.Options{})
	db2.Close()
}

func TestClose(t *testing.T) {
	db, err := engine.Open(t.TempDir(), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, db, "a", "1")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := db.Put([]byte("a"), []byte("2"), engine.WriteOptions{}); !errors.Is(err, engine.ErrClosed) {
		t.Errorf("Put after Close: %v", err)
	}
	if _, err := db.Get([]byte("a")); !errors.Is(err, engine.ErrClosed) {
		t.Errorf("Get after Close: %v", err)
	}
	if err := db.Sync(); !errors.Is(err, engine.ErrClosed) {
		t.Errorf("Sync after Close: %v", err)
	}
}

// TestCheckpointLogBytes overwrites one key: the memtable stays small while
// the log grows, so only CheckpointLogBytes can start a checkpoint before
// the hour-long interval. It must, both for records written since Open and
// for records Open replayed.
func TestCheckpointLogBytes(t *testing.T) {
	dir := t.TempDir()
	opts := engine.Options{
		CommitMode:         engine.CommitAsync,
		CheckpointInterval: time.Hour,
		SegmentSize:        16 << 10,
		CheckpointLogBytes: 64 << 10,
	}
	db := open(t, dir, opts)
	val := bytes.Repeat([]byte("v"), 100)
	// Each round writes more than CheckpointLogBytes of log after the
	// previous round's checkpoint has swapped the memtable, so each must
	// start one.
	const rounds, perRound = 4, 800 // about 1.4× CheckpointLogBytes a round
	i := 0
	for r := 1; r <= rounds; r++ {
		for range perRound {
			if _, err := db.Put([]byte("hot"), append(val, fmt.Sprint(i)...), engine.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			i++
		}
		waitFor(t, func() bool { return db.Stats().Checkpoints >= uint64(r) })
	}
	wantGet(t, db, "hot", string(val)+fmt.Sprint(i-1))
	const n = rounds * perRound

	// A crash image with more than CheckpointLogBytes of log to replay: a
	// copy of a store that has checkpointed nothing, made after a Sync.
	src := t.TempDir()
	big := opts
	big.CheckpointLogBytes = 1 << 30
	db2 := open(t, src, big)
	for i := range n {
		if _, err := db2.Put([]byte("hot"), append(val, fmt.Sprint(i)...), engine.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db2.Sync(); err != nil {
		t.Fatal(err)
	}
	if st := db2.Stats(); st.Checkpoints != 0 {
		t.Fatalf("setup: %d checkpoints ran", st.Checkpoints)
	}
	crashed := t.TempDir()
	copyDir(t, src, crashed)
	db3 := open(t, crashed, opts)
	if st := db3.Stats(); st.CheckpointedRevision != 0 || st.WrittenRevision != n {
		t.Fatalf("reopened crash image: %+v", st)
	}
	mustPut(t, db3, "after", "reopen") // the replayed records count towards the bound
	waitFor(t, func() bool { return db3.Stats().CheckpointedRevision == n+1 })
	wantGet(t, db3, "hot", string(val)+fmt.Sprint(n-1))
}

func TestCheckpointsTruncateTheLog(t *testing.T) {
	dir := t.TempDir()
	opts := engine.Options{
		CommitMode:       engine.CommitAsync,
		SegmentSize:      16 << 10,
		CheckpointBytes:  32 << 10,
		MaxMemtableBytes: 128 << 10,
	}
	db := open(t, dir, opts)
	val := bytes.Repeat([]byte("v"), 200)
	const n = 5000
	for i := range n {
		if _, err := db.Put([]byte(fmt.Sprintf("key-%05d", i%1000)), append(val, fmt.Sprint(i)...), engine.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		if mb := db.Stats().MemtableBytes; mb > opts.MaxMemtableBytes+64<<10 {
			t.Fatalf("memtable at %d bytes, bound %d", mb, opts.MaxMemtableBytes)
		}
	}
	waitFor(t, func() bool { return db.Stats().Checkpoints > 5 })
	st := db.Stats()
	if st.WALBytes > 1<<20 {
		t.Fatalf("log holds %d bytes after checkpoints: not truncated (%+v)", st.WALBytes, st)
	}
	for i := n - 1000; i < n; i++ {
		wantGet(t, db, fmt.Sprintf("key-%05d", i%1000), string(val)+fmt.Sprint(i))
	}
	db.Close()
	db = open(t, dir, opts)
	for i := n - 1000; i < n; i++ {
		wantGet(t, db, fmt.Sprintf("key-%05d", i%1000), string(val)+fmt.Sprint(i))
	}
	if got := db.Stats().WrittenRevision; got != n {
		t.Fatalf("revision after reopen %d, want %d", got, n)
	}
	mustPut(t, db, "after", "reopen")
	if got := db.Stats().WrittenRevision; got != n+1 {
		t.Fatalf("revision of the next write %d, want %d", got, n+1)
	}
}

func TestFsyncFailureRefusesWritesKeepsReads(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	failing := false
	t.Cleanup(faults.Set(dir, faults.Hooks{SyncFile: func(f *os.File) error {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			return syscall.EIO
		}
		return f.Sync()
	}}))
	opts := engine.Options{}
	db, err := engine.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		mustPut(t, db, fmt.Sprint("k", i), "v")
	}
	mu.Lock()
	failing = true
	mu.Unlock()
	if _, err := db.Put([]byte("doomed"), []byte("v"), engine.WriteOptions{}); !errors.Is(err, engine.ErrLogFailed) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("Put with failing fsync: %v, want ErrLogFailed wrapping EIO", err)
	}
	mu.Lock()
	failing = false
	mu.Unlock()
	for _, d := range []engine.Durability{engine.DurabilitySync, engine.DurabilityAsync} {
		if _, err := db.Put([]byte("later"), []byte("v"), engine.WriteOptions{Durability: d}); !errors.Is(err, engine.ErrLogFailed) {
			t.Fatalf("%v Put after the failure: %v, want ErrLogFailed", d, err)
		}
	}
	wantGet(t, db, "k19", "v")
	if st := db.Stats(); st.Err == nil {
		t.Fatal("Stats does not report the failure")
	}
	if err := db.Close(); !errors.Is(err, engine.ErrLogFailed) {
		t.Fatalf("Close of a failed DB: %v, want ErrLogFailed", err)
	}
	db = open(t, dir, engine.Options{})
	for i := range 20 {
		wantGet(t, db, fmt.Sprint("k", i), "v")
	}
	wantGet(t, db, "later", "<missing>")
	mustPut(t, db, "healthy", "again")
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 20s")
		}
		time.Sleep(5 * time.Millisecond) // poll
	}
}

func TestTruncatedStateFileIsRefused(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, engine.Options{})
	val := bytes.Repeat([]byte("v"), 1000)
	for i := range 2000 {
		if _, err := db.Put([]byte(fmt.Sprint("key", i)), val, engine.WriteOptions{Durability: engine.DurabilityAsync}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil { // checkpoints into state.db
		t.Fatal(err)
	}
	path := dir + "/state.db"
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The file's pages in use end well before its (preallocated) size.
	for _, size := range []int{8192, 16384, 64 << 10, 1 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			run := t.TempDir()
			copyDir(t, dir, run)
			if err := os.WriteFile(run+"/state.db", orig[:size], 0o640); err != nil {
				t.Fatal(err)
			}
			_, err := engine.Open(run, engine.Options{})
			if !errors.Is(err, engine.ErrCorruptState) {
				t.Fatalf("Open over state.db cut to %d of %d bytes: %v, want ErrCorruptState", size, len(orig), err)
			}
			t.Log(err)
		})
	}
	// Pages zeroed but the size intact: bbolt itself panics on them.
	t.Run("zeroed pages", func(t *testing.T) {
		run := t.TempDir()
		copyDir(t, dir, run)
		b := bytes.Clone(orig)
		clear(b[8192 : len(b)/2])
		if err := os.WriteFile(run+"/state.db", b, 0o640); err != nil {
			t.Fatal(err)
		}
		db, err := engine.Open(run, engine.Options{})
		if err == nil {
			// bbolt may not touch a zeroed page at open; it must then be
			// caught when read.
			_, err = db.Scan(engine.ScanOptions{})
			db.Close()
		}
		if err == nil {
			t.Fatal("zeroed pages went unnoticed")
		}
		t.Log(err)
	})
}

func copyDir(t testing.TB, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from+"/.", to).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
}

// TestBatchReusedOnceWritten has writers reuse their batch as soon as it
// is written, as the server's connections do, while other writers' batches
// are written with theirs by one group-commit leader: the engine must not
// touch a batch once its writer may have it back (run under -race).
func TestBatchReusedOnceWritten(t *testing.T) {
	db := open(t, t.TempDir(), engine.Options{CommitMode: engine.CommitAsync})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b engine.Batch
			for i := range 300 {
				b.Reset()
				b.IncrBy([]byte(fmt.Sprintf("n%d", w)), 1)
				b.Put([]byte(fmt.Sprintf("k%d-%d", w, i)), []byte("v"))
				c, err := db.Submit(&b, engine.WriteOptions{})
				if err == nil {
					err = c.WaitWritten()
				}
				if err != nil {
					t.Error(err)
					return
				}
				if got := b.Results()[0].Int; got != int64(i+1) {
					t.Errorf("writer %d: incr %d gave %d", w, i+1, got)
					return
				}
			}
		}()
	}
	wg.Wait()
}
