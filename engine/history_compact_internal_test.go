package engine

import (
	"encoding/binary"
	"errors"
	"os"
	"slices"
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

// checkHistoryLog checks the history's log: no segment holds only
// records before the oldest revision, and the size it counts is its
// files'.
func checkHistoryLog(t *testing.T, db *DB, when string) {
	t.Helper()
	hl := &db.hist.log
	oldest := db.OldestRevision()
	hl.mu.RLock()
	segs := slices.Clone(hl.segs)
	hl.mu.RUnlock()
	if len(segs) > 1 && segs[1].first <= oldest {
		t.Errorf("%s: the history's log keeps segment %d, all before the oldest revision %d", when, segs[0].first, oldest)
	}
	var onDisk int64
	ents, err := os.ReadDir(histDir(db.dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		onDisk += info.Size()
	}
	if counted := hl.size(); counted != onDisk {
		t.Errorf("%s: the history's log counts %d bytes, its files hold %d", when, counted, onDisk)
	}
}

// TestCompactHistory compacts the history below a revision the log
// holds, then below one only memory holds, and checks each time that the
// history starts there, whole, across a clean restart and a crash (a
// close without checkpoint: replay recomputes the revisions the compaction
// dropped from memory, which must stay dropped). A crash between the state
// file's record of the new oldest revision and the log's cut leaves the
// older records, which Open cuts.
func TestCompactHistory(t *testing.T) {
	dir := t.TempDir()
	// Segments of about 1 KiB: about 20 records each.
	opts := Options{CommitMode: CommitAsync, CheckpointInterval: time.Hour, histSegmentBytes: 1 << 10}
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
	checkHistoryLog(t, db, "before")

	// The state file says 1500, the log was not cut: a crash between.
	err = db.bdb.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyHistoryOldest, binary.BigEndian.AppendUint64(nil, 1500))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.close(false); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	checkHistoryFrom(t, db, 1500, last, "recorded, not cut, after a crash")
	checkHistoryLog(t, db, "recorded, not cut, after a crash")

	// Below a revision the log holds.
	oldest, err := db.CompactHistory(2000)
	if err != nil || oldest != 2000 {
		t.Fatalf("CompactHistory(2000): %d, %v", oldest, err)
	}
	checkHistoryFrom(t, db, 2000, last, "below 2000")
	checkHistoryLog(t, db, "below 2000")
	// An older revision changes nothing.
	if oldest, err = db.CompactHistory(1500); err != nil || oldest != 2000 {
		t.Fatalf("CompactHistory(1500) after 2000: %d, %v", oldest, err)
	}

	// Below a revision that only memory holds, then a crash: replay
	// applies 2501..2600 again, and 2501..2549 must not come back.
	if oldest, err = db.CompactHistory(2550); err != nil || oldest != 2550 {
		t.Fatalf("CompactHistory(2550): %d, %v", oldest, err)
	}
	checkHistoryFrom(t, db, 2550, last, "below 2550")
	checkHistoryLog(t, db, "below 2550 (all in memory)")
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
	checkHistoryLog(t, db, "below 2550, checkpointed")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	checkHistoryFrom(t, db, 2550, last, "below 2550, after a restart")

	// Never past the revision after the last durable one.
	if oldest, err = db.CompactHistory(1 << 40); err != nil || oldest != last+1 {
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
			if i%1000 == 0 {
				// Let a checkpoint run among the compactions: the writes
				// alone may all be in before the first one ends.
				c := db.checkpoints.Load()
				for deadline := time.Now().Add(10 * time.Second); db.checkpoints.Load() == c && time.Now().Before(deadline); {
					time.Sleep(time.Millisecond)
				}
			}
		}
		done <- db.Sync()
	}()
	var prev uint64
	check := func() {
		t.Helper()
		upTo := db.DurableRevision()
		oldest, err := db.CompactHistory(upTo/2 + 1)
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
			if db.checkpoints.Load() < 6 {
				t.Fatalf("%d checkpoints ran during the test; want several", db.checkpoints.Load())
			}
			return
		default:
			check()
		}
	}
}
