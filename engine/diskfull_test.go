package engine_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/kvtest"
)

// The tests of this file make writes fail for real with a file size limit
// (RLIMIT_FSIZE): a write that crosses it is cut short and then fails with
// EFBIG, as a full disk fails with ENOSPC. The limit is the process's; no
// test of this package runs in parallel.

// poll waits until cond holds, failing after 10s.
func poll(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestCheckpointOutOfSpace makes the state file unable to grow: checkpoints
// fail and are counted, but the DB does not fail; writes go on until the
// memtables reach their bound; once there is room again a checkpoint
// succeeds by itself and every write is there after a reopen.
func TestCheckpointOutOfSpace(t *testing.T) {
	if kvtest.InSubprocess(t) {
		return
	}
	dir := t.TempDir()
	opts := engine.Options{
		CheckpointInterval: 20 * time.Millisecond,
		CheckpointBytes:    64 << 10,
		MaxMemtableBytes:   256 << 10,
		SegmentSize:        8 << 10, // log files stay below the limit
	}
	db, err := engine.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	// The state file's pages past its first three cannot be written (nor
	// can it grow): every checkpoint fails.
	kvtest.FileLimit(t, 12<<10)
	val := strings.Repeat("v", 1000)
	for i := range 50 {
		if _, err := db.Put([]byte(fmt.Sprintf("k%04d", i)), []byte(val), engine.WriteOptions{}); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	poll(t, "a checkpoint failure", func() bool { return db.Stats().CheckpointFailures > 0 })
	st := db.Stats()
	if st.Err != nil {
		t.Fatalf("the DB failed on a checkpoint that ran out of space: %v", st.Err)
	}
	t.Logf("checkpoint error: %v", st.CheckpointErr)
	if st.CheckpointErr == nil || !strings.Contains(st.CheckpointErr.Error(), "file too large") {
		t.Errorf("Stats.CheckpointErr = %v, want the cause (file too large)", st.CheckpointErr)
	}
	if st.CheckpointedRevision != 0 || st.Checkpoints != 0 {
		t.Fatalf("applied %d after %d checkpoints; want nothing applied", st.CheckpointedRevision, st.Checkpoints)
	}

	// Writes go on, up to the memtables' bound.
	n := 50
	for ; ; n++ {
		if n > 1000 {
			t.Fatal("writes were never throttled while checkpoints failed")
		}
		var b engine.Batch
		b.Put([]byte(fmt.Sprintf("k%04d", n)), []byte(val))
		c, err := db.TrySubmit(&b, engine.WriteOptions{})
		if errors.Is(err, engine.ErrThrottled) {
			break
		} else if err != nil {
			t.Fatalf("write %d while checkpoints fail: %v", n, err)
		}
		if err := c.WaitDurable(); err != nil {
			t.Fatalf("write %d while checkpoints fail: %v", n, err)
		}
	}
	if n < 150 {
		t.Errorf("throttled after %d writes of 1 KB, the bound is 256 KiB", n)
	}
	for i := range n {
		wantGet(t, db, fmt.Sprintf("k%04d", i), val)
	}

	// Room again: the next checkpoint succeeds, and a waiting write goes in.
	kvtest.FileLimit(t, 0)
	if _, err := db.Put([]byte("after"), []byte("1"), engine.WriteOptions{}); err != nil {
		t.Fatalf("write once there is room: %v", err)
	}
	poll(t, "a checkpoint of every write", func() bool {
		st := db.Stats()
		return st.CheckpointedRevision == st.WrittenRevision
	})
	if st := db.Stats(); st.Err != nil || st.CheckpointErr != nil || st.Checkpoints == 0 {
		t.Errorf("after a checkpoint succeeded: err %v, checkpoint err %v, %d checkpoints", st.Err, st.CheckpointErr, st.Checkpoints)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir, opts)
	for i := range n {
		wantGet(t, db, fmt.Sprintf("k%04d", i), val)
	}
	wantGet(t, db, "after", "1")
}

// TestLogWriteRefused makes a log write fail: the writes of the failed batch
// get ErrWriteRefused (not ErrLogFailed) and are not applied, the DB goes
// on, and a write whose revision was refused and given to a later write is
// told it was refused, not that the later write's revision is its own.
func TestLogWriteRefused(t *testing.T) {
	if kvtest.InSubprocess(t) {
		return
	}
	dir := t.TempDir()
	opts := engine.Options{Preallocate: -1}
	db := open(t, dir, opts)
	mustPut(t, db, "before", "1")

	var queued engine.Batch
	queued.Put([]byte("queued"), []byte("x"))
	qc, err := db.Submit(&queued, engine.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rev := qc.Revision()
	seg := filepath.Join(dir, "wal", fmt.Sprintf("%020d", 1))
	fi, err := os.Stat(seg)
	if err != nil {
		t.Fatal(err)
	}
	kvtest.FileLimit(t, uint64(fi.Size())+10)
	// This write writes the queued one too, and both are refused.
	_, err = db.Put([]byte("refused"), []byte("y"), engine.WriteOptions{})
	if !errors.Is(err, engine.ErrWriteRefused) || errors.Is(err, engine.ErrLogFailed) || !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("Put past the limit: %v, want ErrWriteRefused wrapping EFBIG, not ErrLogFailed", err)
	}
	_, err = db.Update(engine.WriteOptions{}, func(tx *engine.Txn) error {
		tx.Put([]byte("txn"), []byte("z"))
		return nil
	})
	if !errors.Is(err, engine.ErrWriteRefused) {
		t.Fatalf("Update past the limit: %v, want ErrWriteRefused", err)
	}

	kvtest.FileLimit(t, 0)
	later := mustPut(t, db, "later", "2")
	if later != rev {
		t.Fatalf("the write after the refusal got revision %d, want %d (refused revisions are given again)", later, rev)
	}
	if err := qc.WaitWritten(); !errors.Is(err, engine.ErrWriteRefused) {
		t.Fatalf("WaitWritten of the refused batch, after its revision went to another write: %v, want ErrWriteRefused", err)
	}
	if err := qc.WaitDurable(); !errors.Is(err, engine.ErrWriteRefused) {
		t.Fatalf("WaitDurable of the refused batch: %v, want ErrWriteRefused", err)
	}
	for _, k := range []string{"queued", "refused", "txn"} {
		wantGet(t, db, k, "<missing>")
	}
	st := db.Stats()
	if st.Err != nil || st.LogWriteFailures == 0 || st.LogRecordsRefused < 2 || !errors.Is(st.LogWriteErr, syscall.EFBIG) {
		t.Errorf("stats: err %v, %d log write failures, %d refused, last %v", st.Err, st.LogWriteFailures, st.LogRecordsRefused, st.LogWriteErr)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir, opts)
	wantGet(t, db, "before", "1")
	wantGet(t, db, "later", "2")
	for _, k := range []string{"queued", "refused", "txn"} {
		wantGet(t, db, k, "<missing>")
	}
}
