package engine

import (
	"encoding/binary"
	"errors"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// putRevisions writes keys k<from>..k<to>, one revision each, async, then
// syncs them.
func putRevisions(t *testing.T, db *DB, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if _, err := db.Put([]byte("k"+strconv.Itoa(i)), []byte("v"+strconv.Itoa(i)), WriteOptions{Durability: DurabilityAsync}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
}

// checkHistoryFrom checks that the history starts at oldest: Changes from
// below it gives a CompactedError naming it, and from it through last
// gives every revision, each changing its own key.
func checkHistoryFrom(t *testing.T, db *DB, oldest, last uint64, when string) {
	t.Helper()
	if got := db.OldestRevision(); got != oldest {
		t.Fatalf("%s: oldest revision %d, want %d", when, got, oldest)
	}
	for _, from := range []uint64{1, oldest - 1} {
		if from == 0 || from >= oldest {
			continue
		}
		_, _, err := db.Changes(from, nil, 0, last)
		var ce *CompactedError
		if !errors.As(err, &ce) || !errors.Is(err, ErrCompacted) || ce.Oldest != oldest || ce.Requested != from {
			t.Fatalf("%s: Changes from %d: %v, want a CompactedError naming %d", when, from, err, oldest)
		}
	}
	for _, from := range []uint64{oldest, oldest + 1} {
		sets, next, err := db.Changes(from, nil, 0, last)
		if err != nil {
			t.Fatalf("%s: Changes from %d: %v", when, from, err)
		}
		if next != last+1 || uint64(len(sets)) != last+1-from {
			t.Fatalf("%s: Changes from %d: %d sets, next %d; want %d, next %d", when, from, len(sets), next, last+1-from, last+1)
		}
		for i, cs := range sets {
			rev := from + uint64(i)
			if cs.Revision != rev || len(cs.Changes) != 1 || string(cs.Changes[0].Key) != "k"+strconv.FormatUint(rev, 10) {
				t.Fatalf("%s: set %d from %d: revision %d, %d changes; want revision %d changing k%d", when, i, from, cs.Revision, len(cs.Changes), rev, rev)
			}
		}
	}
}

// checkHistoryBucket checks the state file's history: its first record is
// first (0: none), and the byte count in meta is the records' size.
func checkHistoryBucket(t *testing.T, db *DB, first uint64, when string) {
	t.Helper()
	err := db.bdb.View(func(tx *bolt.Tx) error {
		var total int64
		var got uint64
		c := tx.Bucket(bucketHistory).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if got == 0 {
				got = binary.BigEndian.Uint64(k)
			}
			total += int64(len(k) + len(v))
		}
		if got != first {
			t.Errorf("%s: the state file's history starts at %d, want %d", when, got, first)
		}
		if n := int64(getUint64(tx.Bucket(bucketMeta), keyHistoryBytes)); n != total {
			t.Errorf("%s: meta counts %d bytes of history, the records are %d", when, n, total)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCompactHistory compacts the history below a revision the state file
// holds, in more than one transaction (stopped after the first, as a crash
// would, then finished), then below one only memory holds, and checks each
// time that the history starts there, whole, across a clean restart and a
// crash (a close without checkpoint: replay recomputes the revisions the
// compaction dropped from memory, which must stay dropped).
func TestCompactHistory(t *testing.T) {
	dir := t.TempDir()
	opts := Options{CommitMode: CommitAsync, CheckpointInterval: time.Hour}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { db.Close() }()
	const inState, last = 2500, 2600
	putRevisions(t, db, 1, inState)
	if err := db.checkpoint(); err != nil {
		t.Fatal(err)
	}
	putRevisions(t, db, inState+1, last)
	checkHistoryFrom(t, db, 1, last, "before")

	// Stopped after its first transaction: the history starts after the
	// records it deleted, and says so after a restart.
	errStop := errors.New("stop")
	var calls []uint64
	oldest, err := db.CompactHistory(2000, func(o uint64) error { calls = append(calls, o); return errStop })
	if !errors.Is(err, errStop) || oldest != historyCompactBatch+1 || len(calls) != 1 || calls[0] != oldest {
		t.Fatalf("stopped compaction: oldest %d, %v, progress %v; want %d, the stop", oldest, err, calls, historyCompactBatch+1)
	}
	checkHistoryFrom(t, db, historyCompactBatch+1, last, "stopped")
	checkHistoryBucket(t, db, historyCompactBatch+1, "stopped")
	if err := db.close(false); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	checkHistoryFrom(t, db, historyCompactBatch+1, last, "stopped, after a crash")

	// Finished.
	if oldest, err = db.CompactHistory(2000, nil); err != nil || oldest != 2000 {
		t.Fatalf("CompactHistory(2000): %d, %v", oldest, err)
	}
	checkHistoryFrom(t, db, 2000, last, "below 2000")
	checkHistoryBucket(t, db, 2000, "below 2000")
	// An older revision changes nothing.
	if oldest, err = db.CompactHistory(1500, nil); err != nil || oldest != 2000 {
		t.Fatalf("CompactHistory(1500) after 2000: %d, %v", oldest, err)
	}

	// Below a revision that only memory holds, then a crash: replay
	// applies 2501..2600 again, and 2501..2549 must not come back.
	if oldest, err = db.CompactHistory(2550, nil); err != nil || oldest != 2550 {
		t.Fatalf("CompactHistory(2550): %d, %v", oldest, err)
	}
	checkHistoryFrom(t, db, 2550, last, "below 2550")
	checkHistoryBucket(t, db, 0, "below 2550 (all in memory)")
	if err := db.close(false); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	checkHistoryFrom(t, db, 2550, last, "below 2550, after a crash")
	if err := db.checkpoint(); err != nil {
		t.Fatal(err)
	}
	checkHistoryBucket(t, db, 2550, "below 2550, checkpointed")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	checkHistoryFrom(t, db, 2550, last, "below 2550, after a restart")

	// Never past the revision after the last durable one.
	if oldest, err = db.CompactHistory(1<<40, nil); err != nil || oldest != last+1 {
		t.Fatalf("CompactHistory(2^40): %d, %v; want %d", oldest, err, last+1)
	}
	putRevisions(t, db, last+1, last+5)
	checkHistoryFrom(t, db, last+1, last+5, "everything compacted, then written")
}

// TestCompactHistoryUnderWrites compacts the history again and again while
// a writer adds revisions and checkpoints run often, and checks each time
// that the history from its oldest revision on is whole: no checkpoint
// brings compacted revisions back or moves the oldest one back.
func TestCompactHistoryUnderWrites(t *testing.T) {
	db, err := Open(t.TempDir(), Options{CommitMode: CommitAsync, CheckpointLogBytes: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const n = 6000
	done := make(chan error, 1)
	go func() {
		for i := 1; i <= n; i++ {
			if _, err := db.Put([]byte("k"+strconv.Itoa(i)), []byte("v"), WriteOptions{}); err != nil {
				done <- err
				return
			}
		}
		done <- db.Sync()
	}()
	var prev uint64
	check := func() {
		t.Helper()
		upTo := db.DurableRevision()
		oldest, err := db.CompactHistory(upTo/2+1, nil)
		if err != nil {
			t.Fatal(err)
		}
		if o := db.OldestRevision(); o != oldest || o < prev {
			t.Fatalf("oldest revision %d after a compaction that returned %d (before: %d)", o, oldest, prev)
		}
		prev = oldest
		sets, next, err := db.Changes(oldest, nil, 0, upTo)
		if err != nil {
			t.Fatalf("Changes from the oldest revision %d: %v", oldest, err)
		}
		if next != upTo+1 || uint64(len(sets)) != upTo+1-oldest {
			t.Fatalf("Changes from %d through %d: %d sets, next %d", oldest, upTo, len(sets), next)
		}
		for i, cs := range sets {
			if rev := oldest + uint64(i); cs.Revision != rev || string(cs.Changes[0].Key) != "k"+strconv.FormatUint(rev, 10) {
				t.Fatalf("set %d from %d: revision %d changing %q", i, oldest, cs.Revision, cs.Changes[0].Key)
			}
		}
	}
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			check()
			if db.checkpoints.Load() < 3 {
				t.Fatalf("%d checkpoints ran during the test; want several", db.checkpoints.Load())
			}
			return
		default:
			check()
		}
	}
}
