package engine

import (
	"errors"
	"testing"
	"time"
)

// wantEntry is a key's expected value and revisions; missing: no value.
type wantEntry struct {
	key, value  string
	create, mod uint64
	missing     bool
}

// checkEntries checks GetEntry and Scan against want, which lists every
// key of the store in order.
func checkEntries(t testing.TB, stage string, db *DB, want ...wantEntry) {
	t.Helper()
	var live []wantEntry
	for _, w := range want {
		e, err := db.GetEntry([]byte(w.key))
		if w.missing {
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("%s: GetEntry(%s) = %+v, %v; want ErrNotFound", stage, w.key, e, err)
			}
			continue
		}
		live = append(live, w)
		if err != nil || string(e.Value) != w.value || e.CreateRevision != w.create || e.ModRevision != w.mod {
			t.Errorf("%s: GetEntry(%s) = %q create %d mod %d, %v; want %q create %d mod %d",
				stage, w.key, e.Value, e.CreateRevision, e.ModRevision, err, w.value, w.create, w.mod)
		}
	}
	kvs, err := db.Scan(ScanOptions{})
	if err != nil {
		t.Fatalf("%s: Scan: %v", stage, err)
	}
	if len(kvs) != len(live) {
		t.Errorf("%s: Scan returned %d keys, want %d", stage, len(kvs), len(live))
	}
	for i, kv := range kvs {
		if i >= len(live) {
			break
		}
		w := live[i]
		if string(kv.Key) != w.key || string(kv.Value) != w.value || kv.CreateRevision != w.create || kv.ModRevision != w.mod {
			t.Errorf("%s: Scan[%d] = %s=%q create %d mod %d; want %s=%q create %d mod %d",
				stage, i, kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, w.key, w.value, w.create, w.mod)
		}
	}
}

// TestRevisions: every key has the revision that created it and the one
// that last wrote it, whichever of the active memtable, the frozen one
// and the state file hold it and its earlier writes; after a failed
// checkpoint puts the frozen memtable back, after a checkpoint, after a
// clean restart and after a replay of the log.
func TestRevisions(t *testing.T) {
	dir := t.TempDir()
	opts := Options{CheckpointInterval: time.Hour}
	db, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	put := func(k, v string) {
		t.Helper()
		if _, err := db.Put([]byte(k), []byte(v), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	del := func(k string) {
		t.Helper()
		if _, err := db.Delete([]byte(k), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	put("a", "1") // 1
	put("b", "1") // 2
	put("c", "1") // 3
	if err := db.checkpoint(); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, "state file", db,
		wantEntry{key: "a", value: "1", create: 1, mod: 1},
		wantEntry{key: "b", value: "1", create: 2, mod: 2},
		wantEntry{key: "c", value: "1", create: 3, mod: 3})

	put("a", "2") // 4: over the state file
	// Freeze the memtable as a checkpoint does before its commit.
	db.smu.Lock()
	frozen := db.active
	db.frozen, db.active = frozen, newMemtable()
	db.view.close()
	db.view = nil
	db.smu.Unlock()
	put("a", "3") // 5: over the frozen memtable, over the state file
	del("b")      // 6
	put("b", "2") // 7: deleted and set again: created anew
	put("d", "1") // 8: new
	del("c")      // 9
	put("e", "1") // 10
	put("e", "2") // 11: created at 10, in the same memtable
	want := []wantEntry{
		{key: "a", value: "3", create: 1, mod: 5},
		{key: "b", value: "2", create: 7, mod: 7},
		{key: "c", missing: true},
		{key: "d", value: "1", create: 8, mod: 8},
		{key: "e", value: "2", create: 10, mod: 11},
	}
	checkEntries(t, "frozen", db, want...)
	db.unfreeze(frozen)
	checkEntries(t, "unfrozen", db, want...)
	if err := db.checkpoint(); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, "checkpointed", db, want...)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db, err = Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, "reopened", db, want...)
	put("e", "3") // 12
	put("c", "2") // 13
	// Close without a checkpoint: Open replays 12 and 13.
	if err := db.close(false); err != nil {
		t.Fatal(err)
	}
	db, err = Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	want[2] = wantEntry{key: "c", value: "2", create: 13, mod: 13}
	want[4] = wantEntry{key: "e", value: "3", create: 10, mod: 12}
	checkEntries(t, "replayed", db, want...)
}
