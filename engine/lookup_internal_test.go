package engine

import (
	"errors"
	"fmt"
	"testing"
)

// TestLookupDuringCheckpointCommit: while a checkpoint commits, the shared
// read view is gone and reads begin a transaction of their own. Get,
// AppendGet and GetEach read the state file that way too, and GetEach reads
// all its keys in that one transaction.
func TestLookupDuringCheckpointCommit(t *testing.T) {
	db, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, kv := range [][2]string{{"a", "1"}, {"b", ""}, {"c", "3"}} {
		if _, err := db.Put([]byte(kv[0]), []byte(kv[1]), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.checkpoint(); err != nil {
		t.Fatal(err)
	}
	// What the checkpoint does before it commits.
	db.smu.Lock()
	view := db.view
	db.view = nil
	db.smu.Unlock()
	defer func() {
		db.smu.Lock()
		db.view = view
		db.smu.Unlock()
	}()
	open := db.bdb.Stats().OpenTxN // the view's, still open

	if v, err := db.Get([]byte("a")); err != nil || string(v) != "1" {
		t.Errorf("Get(a) = %q, %v", v, err)
	}
	if v, err := db.Get([]byte("b")); err != nil || v == nil || len(v) != 0 {
		t.Errorf("Get(b) = %q (nil %v), %v; want an empty value", v, v == nil, err)
	}
	if v, err := db.AppendGet([]byte("x"), []byte("c")); err != nil || string(v) != "x3" {
		t.Errorf("AppendGet(c) = %q, %v", v, err)
	}
	if v, err := db.AppendGet([]byte("x"), []byte("nope")); !errors.Is(err, ErrNotFound) || string(v) != "x" {
		t.Errorf("AppendGet(nope) = %q, %v; want x, ErrNotFound", v, err)
	}
	var got []string
	err = db.GetEach([][]byte{[]byte("c"), []byte("nope"), []byte("b"), []byte("a")}, func(i int, v []byte, found bool) {
		if !found {
			got = append(got, "-")
			return
		}
		got = append(got, "="+string(v))
	})
	if want := "[=3 - = =1]"; err != nil || fmt.Sprint(got) != want {
		t.Errorf("GetEach = %v, %v; want %s", got, err, want)
	}
	if n := db.bdb.Stats().OpenTxN; n != open {
		t.Errorf("%d read transactions open after the reads, %d before", n, open)
	}
}
