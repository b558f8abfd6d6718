package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"
)

// testSeed returns a random seed, or the one the environment variable env
// gives, and logs it so that a failing run can be repeated.
func testSeed(t testing.TB, env string) uint64 {
	t.Helper()
	seed := rand.Uint64()
	if s := os.Getenv(env); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (set %s to repeat)", seed, env)
	return seed
}

// foldedKey is a key's state as a history replayed from revision 1 leaves it.
type foldedKey struct {
	value   string
	expires int64
	mod     uint64
}

// foldHistory reads db's whole history and replays it onto an empty map,
// checking on the way that revisions ascend and that no revision repeats a
// key.
func foldHistory(t testing.TB, db *DB) (map[string]foldedKey, []ChangeSet) {
	t.Helper()
	sets, next, err := db.Changes(1, nil, 0, db.WrittenRevision())
	if err != nil {
		t.Fatal(err)
	}
	if want := db.WrittenRevision() + 1; next != want {
		t.Fatalf("next %d after the whole history, want %d", next, want)
	}
	m := map[string]foldedKey{}
	var last uint64
	for _, cs := range sets {
		if cs.Revision <= last {
			t.Fatalf("revision %d after %d", cs.Revision, last)
		}
		last = cs.Revision
		if len(cs.Changes) == 0 {
			t.Fatalf("revision %d: an empty change set", cs.Revision)
		}
		for i, c := range cs.Changes {
			if i > 0 && bytes.Compare(cs.Changes[i-1].Key, c.Key) >= 0 {
				t.Fatalf("revision %d: keys %q, %q not in order or repeated", cs.Revision, cs.Changes[i-1].Key, c.Key)
			}
			if c.Delete {
				delete(m, string(c.Key))
			} else {
				m[string(c.Key)] = foldedKey{string(c.Value), c.ExpiresAt, cs.Revision}
			}
		}
	}
	return m, sets
}

// checkHistory checks that db's history, replayed, gives its state: every
// key with its value, expiry and mod revision (read with the clock at 0,
// where no key has expired).
func checkHistory(t testing.TB, db *DB, clock *testClock, when string) []ChangeSet {
	t.Helper()
	m, sets := foldHistory(t, db)
	kvs := scanAt(t, db, clock, 0)
	if len(kvs) != len(m) {
		t.Errorf("%s: the state has %d keys, the history %d", when, len(kvs), len(m))
	}
	for _, kv := range kvs {
		f, ok := m[string(kv.Key)]
		want := foldedKey{string(kv.Value), kv.ExpiresAt, kv.ModRevision}
		if !ok || f != want {
			t.Errorf("%s: key %q is %+v, the history gives %+v (present %v)", when, kv.Key, want, f, ok)
		}
	}
	return sets
}

// TestHistoryMatchesState applies random batches of every kind of operation
// (conditional puts, INCR, APPEND, compare-and-set, expiry, delete-all,
// transactions whose requirement fails) and checks, every few revisions,
// that replaying the change history from revision 1 gives the state, with
// every key's mod revision. The DB checkpoints often (so the history is
// read partly from the state file), is reopened halfway without a final
// checkpoint (a crash: the history above the checkpoint is recomputed by
// replay) and at the end after a clean close. A second DB applies the same
// batches without restarts: the two histories must be equal.
func TestHistoryMatchesState(t *testing.T) {
	seed := testSeed(t, "KVD_HISTORY_SEED")
	const n = 300
	batches := randomBatches(rand.New(rand.NewPCG(seed, 0)), n)
	var clock testClock
	opts := Options{CheckpointLogBytes: 2 << 10, CommitMode: CommitAsync, NoExpiryRemoval: true, clock: clock.now, histSegmentBytes: 512}
	dir := t.TempDir()
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { db.Close() }()
	other, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	for i, p := range batches {
		rev := uint64(i + 1)
		if _, err := db.Apply(rev, p, WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := other.Apply(rev, p, WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		if rev%25 == 0 {
			checkHistory(t, db, &clock, fmt.Sprintf("revision %d", rev))
		}
		if rev == n/2 {
			if err := db.close(false); err != nil {
				t.Fatal(err)
			}
			if db, err = Open(dir, opts); err != nil {
				t.Fatal(err)
			}
			checkHistory(t, db, &clock, "after a crash")
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	if db.Stats().CheckpointedRevision < n/10 {
		t.Fatalf("checkpointed through %d only: the test reads too little of the history from the state file", db.Stats().CheckpointedRevision)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	got := checkHistory(t, db, &clock, "after a restart")
	_, want := foldHistory(t, other)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("histories differ:\n%v\n%v", got, want)
	}
	if len(got) < n/3 {
		t.Fatalf("only %d of %d revisions changed something", len(got), n)
	}
}

// TestHistoryEffects checks the change sets of a few operations whose
// effects their log records do not hold: a delete-all (of keys in the state
// file, the frozen and the active memtable), INCR and APPEND (the resulting
// values), a SET NX that found its key and a failed requirement (no change
// set), an expiry removed by the sweep (a deletion).
func TestHistoryEffects(t *testing.T) {
	var clock testClock
	clock.ms.Store(batchEpoch)
	db, err := Open(t.TempDir(), Options{clock: clock.now, sweepInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	write := func(f func(b *Batch)) uint64 {
		t.Helper()
		var b Batch
		f(&b)
		rev, err := db.Write(&b, WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	changes := func(rev uint64) string {
		t.Helper()
		sets, _, err := db.Changes(rev, nil, 0, rev)
		if err != nil {
			t.Fatal(err)
		}
		var s string
		for _, cs := range sets {
			if cs.Revision != rev {
				t.Fatalf("asked for revision %d, got %d", rev, cs.Revision)
			}
			for _, c := range cs.Changes {
				if c.Delete {
					s += fmt.Sprintf("del %s;", c.Key)
				} else {
					s += fmt.Sprintf("put %s=%s exp=%d;", c.Key, c.Value, c.ExpiresAt)
				}
			}
		}
		return s
	}
	expect := func(rev uint64, want string) {
		t.Helper()
		if got := changes(rev); got != want {
			t.Errorf("revision %d: %q, want %q", rev, got, want)
		}
	}
	write(func(b *Batch) {
		b.Put([]byte("a"), []byte("1"))
		b.Put([]byte("b"), []byte("2"))
		b.Put([]byte("s"), []byte("only in the state file"))
	})
	if err := db.checkpoint(); err != nil {
		t.Fatal(err)
	}
	r := write(func(b *Batch) {
		b.IncrBy([]byte("a"), 5)
		b.Append([]byte("b"), []byte("x"))
		b.Put([]byte("c"), []byte("3"))
	})
	expect(r, "put a=6 exp=0;put b=2x exp=0;put c=3 exp=0;")
	r = write(func(b *Batch) { b.PutIf([]byte("a"), []byte("no"), IfAbsent) })
	expect(r, "")
	r = write(func(b *Batch) { b.Require([]byte("a"), 1); b.Put([]byte("z"), []byte("no")) })
	expect(r, "")
	r = write(func(b *Batch) {
		b.Put([]byte("c"), []byte("4"))
		b.Delete([]byte("c"))
		b.Put([]byte("d"), []byte("5"))
	})
	expect(r, "del c;put d=5 exp=0;")
	r = write(func(b *Batch) { b.DeleteAll() })
	expect(r, "del a;del b;del d;del s;")
	r = write(func(b *Batch) { b.PutExpiresAt([]byte("e"), []byte("6"), 0, batchEpoch+1000) })
	expect(r, fmt.Sprintf("put e=6 exp=%d;", batchEpoch+1000))
	clock.ms.Store(batchEpoch + 2000)
	// The sweep removes e with a batch of its own.
	deadline := time.Now().Add(10 * time.Second)
	for changes(r+1) != "del e;" {
		if time.Now().After(deadline) {
			t.Fatalf("the expired key's removal is not in the history: %q", changes(r+1))
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHistoryRetention checks that a checkpoint prunes the history to its
// retention, that an older revision then gives a CompactedError naming the
// oldest one left, and that from the oldest on the history is whole.
func TestHistoryRetention(t *testing.T) {
	dir := t.TempDir()
	opts := Options{HistoryRevisions: 10, HistoryAge: time.Nanosecond}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { db.Close() }()
	for i := range 50 {
		if _, err := db.Put([]byte("k"+strconv.Itoa(i)), []byte("v"), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		if i%7 == 0 {
			if err := db.checkpoint(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := db.checkpoint(); err != nil {
		t.Fatal(err)
	}
	oldest := db.OldestRevision()
	if oldest != 50+1-10 {
		t.Fatalf("oldest revision %d, want %d", oldest, 50+1-10)
	}
	for _, from := range []uint64{1, oldest - 1} {
		_, _, err := db.Changes(from, nil, 0, 50)
		var ce *CompactedError
		if !errors.As(err, &ce) || !errors.Is(err, ErrCompacted) || ce.Oldest != oldest || ce.Requested != from {
			t.Fatalf("Changes from %d: %v, want a CompactedError naming %d", from, err, oldest)
		}
	}
	sets, next, err := db.Changes(oldest, nil, 0, 50)
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 10 || sets[0].Revision != oldest || next != 51 {
		t.Fatalf("from the oldest: %d sets from %d, next %d", len(sets), sets[0].Revision, next)
	}
	// The bounds survive a restart.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	if got := db.OldestRevision(); got != oldest {
		t.Fatalf("oldest revision %d after a restart, want %d", got, oldest)
	}

	// By size: a cap of 50 bytes keeps one record (45 bytes).
	small, err := Open(t.TempDir(), Options{HistoryBytes: 50})
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	for range 5 {
		if _, err := small.Put([]byte("key"), []byte("0123456789"), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := small.checkpoint(); err != nil {
		t.Fatal(err)
	}
	if got := small.OldestRevision(); got != 5 {
		t.Fatalf("oldest revision %d under a 50-byte cap, want 5", got)
	}
}

// TestChangesBounds checks the bounds of Changes: a revision is never split
// by max, next moves past revisions that matched nothing, a revision above
// upTo waits, and ChangesNotify's channel closes on a write.
func TestChangesBounds(t *testing.T) {
	db, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var b Batch
	for _, k := range []string{"p/1", "p/2", "p/3", "q/1"} {
		b.Put([]byte(k), []byte("v"))
	}
	if _, err := db.Write(&b, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	notify := db.ChangesNotify()
	if _, err := db.Put([]byte("q/2"), []byte("v"), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-notify:
	case <-time.After(10 * time.Second):
		t.Fatal("ChangesNotify's channel did not close on a write")
	}
	prefixP := func(k []byte) bool { return bytes.HasPrefix(k, []byte("p/")) }
	sets, next, err := db.Changes(1, prefixP, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 1 || len(sets[0].Changes) != 3 || next != 2 {
		t.Fatalf("max 1: %v, next %d; want revision 1 whole (3 changes), next 2", sets, next)
	}
	sets, next, err = db.Changes(2, prefixP, 0, 2)
	if err != nil || len(sets) != 0 || next != 3 {
		t.Fatalf("from 2 (no match): %v, next %d, %v; want none, next 3", sets, next, err)
	}
	sets, next, err = db.Changes(3, nil, 0, 100)
	if err != nil || len(sets) != 0 || next != 3 {
		t.Fatalf("from 3 (the future): %v, next %d, %v; want none, next 3", sets, next, err)
	}
}

// TestChangesNotifyAfterWritten: when ChangesNotify's channel closes on a
// write, WrittenRevision already covers it. A watcher of written revisions
// reads up to WrittenRevision once woken; one that found the write not yet
// counted would sleep until the next write or fsync (up to the flush
// interval). Each round a goroutine waits on the channel and reads the
// revision the moment it wakes, racing the writer that closed it.
func TestChangesNotifyAfterWritten(t *testing.T) {
	db, err := Open(t.TempDir(), Options{CommitMode: CommitAsync, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := range 3000 {
		notify := db.ChangesNotify()
		seen := make(chan uint64)
		go func() {
			<-notify
			seen <- db.WrittenRevision()
		}()
		rev, err := db.Put([]byte("k"), []byte("v"), WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := <-seen; got < rev {
			t.Fatalf("round %d: woken by the write of revision %d, WrittenRevision %d", i, rev, got)
		}
	}
}

// TestHistoryOwnsItsBytes: the history keeps what each revision changed
// when the caller reuses its batch (whose buffer holds the keys) for the
// next write, before and after a checkpoint writes it to the log.
func TestHistoryOwnsItsBytes(t *testing.T) {
	db, err := Open(t.TempDir(), Options{CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var b Batch
	want := ""
	for i := range 50 {
		b.Reset()
		for j := range 3 {
			k, v := fmt.Sprintf("k%02d-%d", i, j), fmt.Sprintf("v%d", i*3+j)
			b.Put([]byte(k), []byte(v))
			want += fmt.Sprintf("%s=%s;", k, v)
		}
		if _, err := db.Write(&b, WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	got := func() string {
		t.Helper()
		sets, _, err := db.Changes(1, nil, 0, db.WrittenRevision())
		if err != nil {
			t.Fatal(err)
		}
		s := ""
		for _, cs := range sets {
			for _, c := range cs.Changes {
				s += fmt.Sprintf("%s=%s;", c.Key, c.Value)
			}
		}
		return s
	}
	if s := got(); s != want {
		t.Fatalf("history held in memory:\n%s\nwant\n%s", s, want)
	}
	if err := db.checkpoint(); err != nil {
		t.Fatal(err)
	}
	if s := got(); s != want {
		t.Fatalf("history after a checkpoint:\n%s\nwant\n%s", s, want)
	}
}
