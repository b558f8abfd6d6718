package engine

import (
	"context"
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
	if _, err := db.TrySubmit(&b, WriteOptions{}); !errors.Is(err, ErrThrottled) {
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
		c, err := db.Submit(&b, WriteOptions{})
		if err == nil {
			err = c.WaitWritten()
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
	cc, err := db.TrySubmit(&c, WriteOptions{})
	if err != nil {
		t.Fatalf("TrySubmit under the bound: %v", err)
	}
	if err := cc.WaitWritten(); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"a": "1", "b": "2", "c": "3"} {
		if v, err := db.Get([]byte(k)); err != nil || string(v) != want {
			t.Errorf("Get(%s) = %q, %v; want %q", k, v, err, want)
		}
	}
}

// TestWriteContextCanceledWhileThrottled checks that a write waiting for
// room gives up when its context is done, and is then not executed.
func TestWriteContextCanceledWhileThrottled(t *testing.T) {
	db, err := Open(t.TempDir(), Options{CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	full := db.opts.MaxMemtableBytes
	db.memBytes.Add(full)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		var b Batch
		b.Put([]byte("k"), []byte("v"))
		_, err := db.WriteContext(ctx, &b, WriteOptions{})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("WriteContext over the memory bound returned (%v) without waiting", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("WriteContext after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WriteContext still waits for room after its context was canceled")
	}
	db.memBytes.Add(-full)
	if _, err := db.Get([]byte("k")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the canceled write was executed: Get = %v", err)
	}
	if rev := db.WrittenRevision(); rev != 0 {
		t.Fatalf("written revision %d after a canceled write, want 0", rev)
	}
}

// TestCommitDurability checks the one place that decides whether a write
// is acknowledged once durable: its durability, else the DB's mode.
func TestCommitDurability(t *testing.T) {
	db, err := Open(t.TempDir(), Options{CommitMode: CommitAsync, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, tc := range []struct {
		mode CommitMode
		d    Durability
		sync bool
	}{
		{CommitAsync, DurabilityDefault, false},
		{CommitAsync, DurabilitySync, true},
		{CommitAsync, DurabilityAsync, false},
		{CommitSync, DurabilityDefault, true},
		{CommitSync, DurabilitySync, true},
		{CommitSync, DurabilityAsync, false},
	} {
		db.SetCommitMode(tc.mode)
		var b Batch
		b.Put([]byte("k"), []byte("v"))
		c, err := db.Submit(&b, WriteOptions{Durability: tc.d})
		if err != nil {
			t.Fatal(err)
		}
		if c.Sync() != tc.sync {
			t.Errorf("mode %v, durability %v: Sync() = %v, want %v", tc.mode, tc.d, c.Sync(), tc.sync)
		}
		if err := c.Wait(); err != nil {
			t.Fatal(err)
		}
		if durable := db.DurableRevision() >= c.Revision(); durable != tc.sync {
			t.Errorf("mode %v, durability %v: durable after Wait = %v, want %v", tc.mode, tc.d, durable, tc.sync)
		}
	}
}
