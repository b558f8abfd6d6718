package engine_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/kvdstore/kvd/engine"
)

// TestStateFileData: the state file's keys and their bytes, as StateFile
// reports them, follow the checkpoints (new keys, overwrites, deletions),
// persist across a restart, and are counted anew for a state file that does
// not hold them (one an older build wrote).
func TestStateFileData(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, engine.Options{})
	if st, err := db.StateFile(); err != nil || st.Keys != 0 || st.DataBytes != 0 || st.FileBytes <= 0 {
		t.Fatalf("StateFile of a new store = %+v, %v", st, err)
	}
	want := map[string]string{}
	var b engine.Batch
	for i := range 300 {
		k, v := fmt.Sprintf("key-%04d", i), fmt.Sprintf("value-%d", i*i)
		b.Put([]byte(k), []byte(v))
		want[k] = v
	}
	if _, err := db.Write(&b, engine.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Checkpointed on Close; then overwrites (longer and shorter),
	// deletions of checkpointed keys and of a key never checkpointed.
	check := func(db *engine.DB, when string) {
		t.Helper()
		var n int64
		for k, v := range want {
			n += int64(len(k) + len(v))
		}
		st, err := db.StateFile()
		if err != nil || st.Keys != int64(len(want)) || st.DataBytes != n {
			t.Errorf("%s: StateFile = %+v, %v; want %d keys, %d bytes", when, st, err, len(want), n)
		}
		if st.FileBytes < st.DataBytes || st.FreeBytes < 0 || st.FreeBytes > st.FileBytes {
			t.Errorf("%s: StateFile = %+v", when, st)
		}
	}
	reopen := func() *engine.DB {
		t.Helper()
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		return open(t, dir, engine.Options{})
	}
	db = reopen()
	check(db, "after the first checkpoint")
	b.Reset()
	for i := range 100 {
		k := fmt.Sprintf("key-%04d", i)
		switch i % 3 {
		case 0:
			want[k] += "-longer"
			b.Put([]byte(k), []byte(want[k]))
		case 1:
			want[k] = "v"
			b.Put([]byte(k), []byte(want[k]))
		case 2:
			delete(want, k)
			b.Delete([]byte(k))
		}
	}
	b.Put([]byte("brief"), []byte("x"))
	b.Delete([]byte("brief"))
	b.Delete([]byte("never-there"))
	if _, err := db.Write(&b, engine.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	db = reopen()
	check(db, "after overwrites and deletions, reopened")

	// A state file without the counts is counted at Open.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	bdb, err := bolt.Open(filepath.Join(dir, "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := bdb.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Delete([]byte("state-data")) }); err != nil {
		t.Fatal(err)
	}
	bdb.Close()
	db = open(t, dir, engine.Options{})
	check(db, "counted at Open")
	db.Close()
	if _, err := db.StateFile(); !errors.Is(err, engine.ErrClosed) {
		t.Errorf("StateFile after Close: %v, want ErrClosed", err)
	}
}
