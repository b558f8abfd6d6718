package engine

import (
	"errors"
	"testing"
)

// A failed checkpoint (for example an fsync of the state file returning EIO,
// which tests/crash injects with strace) makes every later write fail, even
// though the log itself is healthy.
func TestCheckpointFailureRefusesWrites(t *testing.T) {
	db, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Put([]byte("a"), []byte("1"), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	injected := errors.New("injected checkpoint failure")
	db.setFatal(injected)
	if _, err := db.Put([]byte("b"), []byte("2"), WriteOptions{}); !errors.Is(err, ErrLogFailed) || !errors.Is(err, injected) {
		t.Fatalf("Put after a failed checkpoint: %v", err)
	}
	if _, err := db.Update(WriteOptions{}, func(tx *Txn) error { tx.Put([]byte("c"), nil); return nil }); !errors.Is(err, ErrLogFailed) {
		t.Fatalf("Update after a failed checkpoint: %v", err)
	}
	if v, err := db.Get([]byte("a")); err != nil || string(v) != "1" {
		t.Fatalf("Get after a failed checkpoint: %q, %v", v, err)
	}
	if st := db.Stats(); !errors.Is(st.Err, injected) {
		t.Fatalf("Stats.Err = %v", st.Err)
	}
}
