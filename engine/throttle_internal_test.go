package engine

import (
	"errors"
	"testing"
	"time"
)

// TestTrySubmitThrottled checks TrySubmit at the memory bound: it writes
// nothing, starts a checkpoint and returns ErrThrottled at once, where
// Submit waits until memory is freed.
func TestTrySubmitThrottled(t *testing.T) {
	db, err := Open(t.TempDir(), Options{CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Put([]byte("a"), []byte("1"), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	// As if the memtables held MaxMemtableBytes more than they do.
	full := db.opts.MaxMemtableBytes
	db.memBytes.Add(full)

	var b Batch
	b.Put([]byte("b"), []byte("2"))
	if _, err := db.TrySubmit(&b); !errors.Is(err, ErrThrottled) {
		t.Fatalf("TrySubmit over the memory bound: %v, want ErrThrottled", err)
	}
	if _, err := db.Get([]byte("b")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after a throttled TrySubmit: %v, want ErrNotFound", err)
	}
	// The checkpoint it started ran (the interval is an hour).
	deadline := time.Now().Add(10 * time.Second)
	for db.Stats().Checkpoints == 0 {
		if time.Now().After(deadline) {
			t.Fatal("TrySubmit over the memory bound started no checkpoint")
		}
		time.Sleep(time.Millisecond)
	}

	done := make(chan error, 1)
	go func() {
		_, err := db.Submit(&b)
		if err == nil {
			err = db.WaitWritten(&b)
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Submit over the memory bound returned (%v) without waiting", err)
	case <-time.After(50 * time.Millisecond):
	}
	db.memBytes.Add(-full)
	db.bpMu.Lock()
	db.bpCond.Broadcast()
	db.bpMu.Unlock()
	if err := <-done; err != nil {
		t.Fatalf("Submit once memory was freed: %v", err)
	}
	var c Batch
	c.Put([]byte("c"), []byte("3"))
	if _, err := db.TrySubmit(&c); err != nil {
		t.Fatalf("TrySubmit under the bound: %v", err)
	}
	if err := db.WaitWritten(&c); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"a": "1", "b": "2", "c": "3"} {
		if v, err := db.Get([]byte(k)); err != nil || string(v) != want {
			t.Errorf("Get(%s) = %q, %v; want %q", k, v, err, want)
		}
	}
}
