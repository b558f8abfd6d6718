package engine

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// histTestOpts: async writes, checkpoints only when the test asks, segments
// of about 20 records.
var histTestOpts = Options{CommitMode: CommitAsync, CheckpointInterval: time.Hour, histSegmentBytes: 1 << 10}

// openHistTest opens the store in dir with histTestOpts.
func openHistTest(t *testing.T, dir string) *DB {
	t.Helper()
	db, err := Open(dir, histTestOpts)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// reopenHistTest closes db (cleanly, or as a crash would: no checkpoint)
// and opens its directory again.
func reopenHistTest(t *testing.T, db *DB, clean bool) *DB {
	t.Helper()
	if err := db.close(clean); err != nil {
		t.Fatal(err)
	}
	return openHistTest(t, db.dir)
}

// snapshotOf returns a snapshot of db.
func snapshotOf(t *testing.T, db *DB) []byte {
	t.Helper()
	snap, err := db.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// closedStoreWith leaves a closed store in a new directory, which it
// returns, with revisions 1 through n (putRevisions) checkpointed.
func closedStoreWith(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	db := openHistTest(t, dir)
	putRevisions(t, db, 1, n)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

// lastHistSegment returns the path of the history log's last segment.
func lastHistSegment(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(histDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	if len(names) == 0 {
		t.Fatal("the history log has no segment")
	}
	return filepath.Join(histDir(dir), names[len(names)-1])
}

// appendToFile appends b to the file at path.
func appendToFile(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// forgedRecord is a sound history record of rev that sets key to value.
func forgedRecord(rev uint64, key, value string) []byte {
	var rec []byte
	rec = binary.BigEndian.AppendUint64(rec, rev)
	rec = appendHistory(rec, rec[:8:8], 0, []Change{{Key: []byte(key), Value: []byte(value)}})
	return append(binary.AppendUvarint(nil, uint64(len(rec))), rec...)
}

// TestHistoryLogCutAtOpen crashes with what a crash in a checkpoint leaves
// after the state file's applied revision in the history's log: a torn
// record, and sound records of revisions the state file does not hold (a
// checkpoint that appended but did not commit, here with other values
// than the log's). Open cuts both; the history is the log's, whole.
func TestHistoryLogCutAtOpen(t *testing.T) {
	for _, tc := range []struct {
		name string
		tail func(applied uint64) []byte
	}{
		{"torn record", func(applied uint64) []byte { return forgedRecord(applied+1, "x", "y")[:9] }},
		{"uncommitted records", func(applied uint64) []byte {
			return append(forgedRecord(applied+1, "k"+strconv.FormatUint(applied+1, 10), "forged"), forgedRecord(applied+2, "other", "forged")...)
		}},
		{"zeros", func(uint64) []byte { return make([]byte, 100) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			db := openHistTest(t, dir)
			defer func() { db.Close() }()
			putRevisions(t, db, 1, 100)
			if err := db.checkpoint(); err != nil {
				t.Fatal(err)
			}
			putRevisions(t, db, 101, 120) // in the log only
			if err := db.close(false); err != nil {
				t.Fatal(err)
			}
			appendToFile(t, lastHistSegment(t, dir), tc.tail(100))
			db = openHistTest(t, dir)
			checkHistoryFrom(t, db, 1, 120, "reopened")
			checkHistoryLog(t, db, "reopened")
			// Checkpointed again, the revisions after 100 are the log's.
			db = reopenHistTest(t, db, true)
			checkHistoryFrom(t, db, 1, 120, "checkpointed and reopened")
			sets, _, err := db.Changes(101, nil, 0, 120)
			if err != nil {
				t.Fatal(err)
			}
			for _, cs := range sets {
				if bytes.Equal(cs.Changes[0].Value, []byte("forged")) {
					t.Fatalf("revision %d has the forged record's value", cs.Revision)
				}
			}
		})
	}
}

// TestHistoryLogRepairedAfterFailedAppend: an append that failed half way
// (its bytes in the file, the log marked broken) is cut and written again
// by the next checkpoint.
func TestHistoryLogRepairedAfterFailedAppend(t *testing.T) {
	dir := t.TempDir()
	db := openHistTest(t, dir)
	defer func() { db.Close() }()
	putRevisions(t, db, 1, 50)
	if err := db.checkpoint(); err != nil {
		t.Fatal(err)
	}
	putRevisions(t, db, 51, 80)
	hl := &db.hist.log
	hl.wmu.Lock()
	hl.closeTail()
	hl.broken = true
	hl.wmu.Unlock()
	appendToFile(t, lastHistSegment(t, dir), forgedRecord(51, "k51", "forged")[:20])
	if err := db.checkpoint(); err != nil {
		t.Fatal(err)
	}
	checkHistoryFrom(t, db, 1, 80, "after the repair")
	checkHistoryLog(t, db, "after the repair")
	db = reopenHistTest(t, db, true)
	checkHistoryFrom(t, db, 1, 80, "after a restart")
}

// TestHistoryLogDamagedIsSetAside: a log that lost records (its last
// segment) is moved aside; the store opens, its history starting after
// the checkpoint, and grows again from there.
func TestHistoryLogDamagedIsSetAside(t *testing.T) {
	dir := closedStoreWith(t, 60)
	// The last segment lost: the log has a gap the state file knows of.
	if err := os.Remove(lastHistSegment(t, dir)); err != nil {
		t.Fatal(err)
	}
	db, err := Open(dir, histTestOpts)
	if err != nil {
		t.Fatalf("a damaged history log kept the store from opening: %v", err)
	}
	defer db.Close()
	if _, err := os.Stat(histDir(dir) + ".damaged"); err != nil {
		t.Fatalf("the damaged log was not set aside: %v", err)
	}
	putRevisions(t, db, 61, 70)
	checkHistoryFrom(t, db, 61, 70, "after the damaged log")
}

// TestHistoryBucketDropped opens a state file written when the history
// was a bucket of it: the bucket goes, and the history starts after the
// checkpoint.
func TestHistoryBucketDropped(t *testing.T) {
	dir := closedStoreWith(t, 30)
	// What an older version left: the bucket, its size, an oldest
	// revision of 1, and no log.
	bdb, err := bolt.Open(filepath.Join(dir, "state.db"), 0o640, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = bdb.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketHistory)
		if err != nil {
			return err
		}
		if err := b.Put(binary.BigEndian.AppendUint64(nil, 1), []byte("old record")); err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(keyHistoryBytes, binary.BigEndian.AppendUint64(nil, 18)); err != nil {
			return err
		}
		return meta.Put(keyHistoryOldest, binary.BigEndian.AppendUint64(nil, 1))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := bdb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(histDir(dir)); err != nil {
		t.Fatal(err)
	}
	db := openHistTest(t, dir)
	defer db.Close()
	putRevisions(t, db, 31, 35)
	checkHistoryFrom(t, db, 31, 35, "after the migration")
	err = db.bdb.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketHistory) != nil || tx.Bucket(bucketMeta).Get(keyHistoryBytes) != nil {
			t.Error("the state file still holds the old history")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestHistoryAfterRestore: a restore replaces the history with one that
// starts after the snapshot's revision; nothing of the replaced store's
// log is read.
func TestHistoryAfterRestore(t *testing.T) {
	src := openHistTest(t, t.TempDir())
	defer src.Close()
	putRevisions(t, src, 1, 40)
	snap := snapshotOf(t, src)

	db := openHistTest(t, t.TempDir())
	defer func() { db.Close() }()
	putRevisions(t, db, 1, 100)
	if err := db.checkpoint(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	putRevisions(t, db, 41, 45)
	checkHistoryFrom(t, db, 41, 45, "after the restore")
	checkHistoryLog(t, db, "after the restore")
	db = reopenHistTest(t, db, true)
	checkHistoryFrom(t, db, 41, 45, "after the restore and a restart")
}

// TestRetainSkipsWholeSegments: the retention decides from what it keeps of
// each segment (its last revision, its latest time) that a whole segment
// goes, without reading it, and finds the same oldest revision as when it
// reads every record. The store is reopened first, so that its first
// segments are ones Open found (not known until read) and its later ones
// were appended since.
func TestRetainSkipsWholeSegments(t *testing.T) {
	var clock testClock
	clock.ms.Store(batchEpoch)
	opts := histTestOpts
	opts.clock = clock.now
	dir := t.TempDir()
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	write := func(from, to int) {
		for i := from; i <= to; i++ {
			clock.ms.Add(10)
			if _, err := db.Put([]byte("k"+strconv.Itoa(i)), []byte("v"+strconv.Itoa(i)), WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			if i%50 == 0 {
				if err := db.checkpoint(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	write(1, 200)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	write(201, 600)
	if err := db.checkpoint(); err != nil {
		t.Fatal(err)
	}
	h := &db.hist.log
	const rev = 600
	total := h.bytes.Load()
	cases := []struct {
		name  string
		o     Options
		cutAt int64 // records older than this are old
	}{
		{"bytes", Options{HistoryBytes: total / 3, HistoryRevisions: 1 << 40}, 0},
		{"age and count", Options{HistoryBytes: 1 << 40, HistoryRevisions: 100}, batchEpoch + 10*450},
		{"count holds it back", Options{HistoryBytes: 1 << 40, HistoryRevisions: 250}, batchEpoch + 10*450},
		{"both", Options{HistoryBytes: total / 2, HistoryRevisions: 200}, batchEpoch + 10*300},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.mu.Lock()
			segs := slices.Clone(h.segs)
			h.cache = nil
			h.mu.Unlock()
			reads := h.reads.Load()
			got, err := h.retain(1, rev, c.cutAt, c.o)
			if err != nil {
				t.Fatal(err)
			}
			read := h.reads.Load() - reads
			h.mu.Lock()
			// Forget what is known of each segment: every record is read.
			for i := range h.segs {
				h.segs[i].timed = false
			}
			h.cache = nil
			h.mu.Unlock()
			want, err := h.retain(1, rev, c.cutAt, c.o)
			if err != nil {
				t.Fatal(err)
			}
			h.mu.Lock()
			h.segs = segs
			h.mu.Unlock()
			if got != want {
				t.Fatalf("oldest revision %d, reading every record %d", got, want)
			}
			var unread, unknown int64 // segments dropped known, and not known (to be read)
			for i := range segs[:len(segs)-1] {
				if segs[i+1].first > got {
					break
				}
				if segs[i].timed {
					unread++
				} else {
					unknown++
				}
			}
			t.Logf("oldest %d of %d; %d segments: %d dropped unread, %d dropped that Open found, %d read",
				got, rev, len(segs), unread, unknown, read)
			if read > unknown+1 {
				t.Fatalf("%d segments read, %d dropped that had to be: the retention read what it could skip", read, unknown)
			}
			if unread < 2 {
				t.Fatalf("%d segments dropped unread: the case does not test the skip", unread)
			}
		})
	}
}
