package engine_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
)

// fakeLog is a replicated log whose durable index the test moves.
type fakeLog struct {
	mu      sync.Mutex
	cond    *sync.Cond
	durable uint64
	closed  bool
}

func newFakeLog() *fakeLog {
	l := &fakeLog{}
	l.cond = sync.NewCond(&l.mu)
	return l
}

func (l *fakeLog) Durable() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.durable
}

func (l *fakeLog) WaitDurable(index uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.durable < index {
		if l.closed {
			return errors.New("fake log closed")
		}
		l.cond.Wait()
	}
	return nil
}

func (l *fakeLog) setDurable(i uint64) {
	l.mu.Lock()
	l.durable = i
	l.cond.Broadcast()
	l.mu.Unlock()
}

func (l *fakeLog) close() {
	l.mu.Lock()
	l.closed = true
	l.cond.Broadcast()
	l.mu.Unlock()
}

func putPayload(key, value string) []byte {
	var b engine.Batch
	b.Put([]byte(key), []byte(value))
	b.SetTimestamp(1)
	return b.Bytes()
}

// TestReplicaApply: entries with gaps between their indexes get gapless
// revisions; an index already applied is skipped, before and after a
// restart; local writes are refused; the state file keeps the index.
func TestReplicaApply(t *testing.T) {
	dir := t.TempDir()
	log := newFakeLog()
	db, err := engine.OpenReplica(dir, engine.Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	indexes := []uint64{3, 4, 7, 8, 12}
	for i, idx := range indexes {
		o, err := db.ApplyEntry(idx, putPayload(fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", idx)))
		if err != nil {
			t.Fatal(err)
		}
		if o.Revision != uint64(i+1) || len(o.Results) != 1 || !o.Results[0].Applied {
			t.Fatalf("entry %d: revision %d, results %+v; want revision %d, applied", idx, o.Revision, o.Results, i+1)
		}
	}
	if _, err := db.ApplyEntry(8, putPayload("k1", "again")); !errors.Is(err, engine.ErrAlreadyApplied) {
		t.Fatalf("reapplied index 8: %v, want ErrAlreadyApplied", err)
	}
	if _, err := db.Put([]byte("local"), []byte("x"), engine.WriteOptions{}); !errors.Is(err, engine.ErrReplica) {
		t.Fatalf("local put on a replica: %v, want ErrReplica", err)
	}
	if got := db.WrittenRevision(); got != 5 {
		t.Fatalf("written revision %d, want 5", got)
	}
	if got := db.DurableRevision(); got != 0 {
		t.Fatalf("durable revision %d before the log made anything durable, want 0", got)
	}
	log.setDurable(7)
	if got := db.DurableRevision(); got != 3 {
		t.Fatalf("durable revision %d with the log durable to index 7, want 3", got)
	}
	log.setDurable(12)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db, err = engine.OpenReplica(dir, engine.Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got := db.AppliedIndex(); got != 12 {
		t.Fatalf("applied index after restart %d, want 12", got)
	}
	if got, err := db.Get([]byte("k2")); err != nil || string(got) != "v7" {
		t.Fatalf("k2 after restart = %q, %v", got, err)
	}
	if _, err := db.ApplyEntry(12, putPayload("k4", "again")); !errors.Is(err, engine.ErrAlreadyApplied) {
		t.Fatalf("reapplied index 12 after restart: %v, want ErrAlreadyApplied", err)
	}
	o, err := db.ApplyEntry(15, putPayload("k5", "v15"))
	if err != nil || o.Revision != 6 {
		t.Fatalf("entry 15 after restart: revision %d, %v; want 6", o.Revision, err)
	}
	log.setDurable(15)
}

// TestReplicaCheckpointWaitsForDurableLog: the state file never holds an
// entry that the log has not made durable. A checkpoint of entries beyond
// the durable index waits; if the log fails instead (a power loss took
// them), the state file keeps its older index and a restart applies the
// log again from there.
func TestReplicaCheckpointWaitsForDurableLog(t *testing.T) {
	dir := t.TempDir()
	log := newFakeLog()
	db, err := engine.OpenReplica(dir, engine.Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 10; i++ {
		if _, err := db.ApplyEntry(i, putPayload(fmt.Sprintf("k%d", i), "v")); err != nil {
			t.Fatal(err)
		}
	}
	log.setDurable(4)
	closed := make(chan error, 1)
	go func() { closed <- db.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while its checkpoint's entries were not durable", err)
	case <-time.After(200 * time.Millisecond):
	}
	log.close() // the log fails: entries 5-10 never become durable
	if err := <-closed; err == nil {
		t.Fatal("Close succeeded although its checkpoint could not wait for the log")
	}

	db, err = engine.OpenReplica(dir, engine.Options{}, newFakeLog())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got := db.AppliedIndex(); got != 0 {
		t.Fatalf("applied index %d after a checkpoint past the durable log, want 0", got)
	}
	if _, err := db.Get([]byte("k1")); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("k1 found (%v) in a state file checkpointed past its log", err)
	}
}

// TestReplicaRefusesSingleNodeDir: a replica does not take over a single
// node's data directory, whose state its log does not hold.
func TestReplicaRefusesSingleNodeDir(t *testing.T) {
	dir := t.TempDir()
	db, err := engine.Open(dir, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Put([]byte("k"), []byte("v"), engine.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err := engine.OpenReplica(dir, engine.Options{}, newFakeLog()); err == nil {
		db.Close()
		t.Fatal("OpenReplica opened a single node's data directory")
	}
}

// TestReplicaSnapshotRestore: a replica's snapshot, with the log index in
// its metadata, installed into another replica gives the same state, the
// index to go on from, and the revisions after it.
func TestReplicaSnapshotRestore(t *testing.T) {
	log := newFakeLog()
	src, err := engine.OpenReplica(t.TempDir(), engine.Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for i := uint64(1); i <= 40; i++ {
		if _, err := src.ApplyEntry(i*2, putPayload(fmt.Sprintf("k%d", i%25), fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	log.setDurable(80)
	snap, index, err := src.ReplicaSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	if index != 80 {
		t.Fatalf("snapshot at index %d, want 80", index)
	}
	snap.SetMetadata(binary.BigEndian.AppendUint64(nil, index))
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Close()
	indexOf := func(meta []byte) (uint64, error) { return binary.BigEndian.Uint64(meta), nil }

	dstLog := newFakeLog()
	dst, err := engine.OpenReplica(t.TempDir(), engine.Options{}, dstLog)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	// Something to be replaced.
	if _, err := dst.ApplyEntry(1, putPayload("stale", "x")); err != nil {
		t.Fatal(err)
	}
	dstLog.setDurable(1)
	bad := bytes.Clone(buf.Bytes())
	bad[len(bad)/2] ^= 1
	if _, err := dst.RestoreReplica(bytes.NewReader(bad), indexOf); !errors.Is(err, engine.ErrBadSnapshot) {
		t.Fatalf("restore of a damaged snapshot: %v, want ErrBadSnapshot", err)
	}
	if _, err := dst.Get([]byte("stale")); err != nil {
		t.Fatalf("a refused restore changed the replica: %v", err)
	}
	info, err := dst.RestoreReplica(bytes.NewReader(buf.Bytes()), indexOf)
	if err != nil {
		t.Fatal(err)
	}
	if info.Revision != 40 || dst.AppliedIndex() != 80 || dst.WrittenRevision() != 40 {
		t.Fatalf("restored at revision %d, index %d, written %d; want 40, 80, 40", info.Revision, dst.AppliedIndex(), dst.WrittenRevision())
	}
	if _, err := dst.Get([]byte("stale")); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("a key the snapshot lacks survived the restore: %v", err)
	}
	for i := 16; i <= 40; i++ {
		k := fmt.Sprintf("k%d", i%25)
		want, _ := src.Get([]byte(k))
		got, err := dst.Get([]byte(k))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s = %q, %v; want %q", k, got, err, want)
		}
	}
	if _, err := dst.ApplyEntry(80, putPayload("k", "again")); !errors.Is(err, engine.ErrAlreadyApplied) {
		t.Fatalf("entry 80 after the restore: %v, want ErrAlreadyApplied", err)
	}
	o, err := dst.ApplyEntry(81, putPayload("k", "next"))
	if err != nil || o.Revision != 41 {
		t.Fatalf("entry 81 after the restore: revision %d, %v; want 41", o.Revision, err)
	}
	dstLog.setDurable(81)
}

// TestReplicaApplyEntries: an entry of several batches gives each the next
// revision, in order; a batch that fails to apply gets no revision and the
// others apply all the same; the entry's index is recorded once, maps to
// its last revision for durability, and is not applied twice.
func TestReplicaApplyEntries(t *testing.T) {
	log := newFakeLog()
	db, err := engine.OpenReplica(t.TempDir(), engine.Options{}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ApplyEntry(2, putPayload("a", "1")); err != nil {
		t.Fatal(err)
	}
	var cas engine.Batch
	cas.CompareAndPut([]byte("a"), []byte("2"), 1)
	cas.SetTimestamp(1)
	payloads := [][]byte{putPayload("b", "1"), []byte("not a batch"), cas.Bytes(), putPayload("c", "1")}
	outs := make([]engine.Outcome, len(payloads))
	errs := make([]error, len(payloads))
	if err := db.ApplyEntries(5, payloads, outs, errs); err != nil {
		t.Fatal(err)
	}
	for i, want := range []uint64{2, 0, 3, 4} {
		if outs[i].Revision != want {
			t.Errorf("batch %d: revision %d, want %d", i, outs[i].Revision, want)
		}
	}
	if errs[0] != nil || errs[2] != nil || errs[3] != nil || !errors.Is(errs[1], engine.ErrBadBatch) {
		t.Fatalf("errors %v; want ErrBadBatch for batch 1 only", errs)
	}
	if len(outs[2].Results) != 1 || !outs[2].Results[0].Applied {
		t.Fatalf("the conditional put's results %+v, want applied (it sees the entry before it)", outs[2].Results)
	}
	if got, err := db.Get([]byte("a")); err != nil || string(got) != "2" {
		t.Fatalf("a = %q, %v; want 2", got, err)
	}
	if got := db.WrittenRevision(); got != 4 {
		t.Fatalf("written revision %d, want 4", got)
	}
	if got := db.AppliedIndex(); got != 5 {
		t.Fatalf("applied index %d, want 5", got)
	}
	if err := db.ApplyEntries(5, payloads[:1], outs, errs); !errors.Is(err, engine.ErrAlreadyApplied) {
		t.Fatalf("entry 5 again: %v, want ErrAlreadyApplied", err)
	}
	log.setDurable(2)
	if got := db.DurableRevision(); got != 1 {
		t.Fatalf("durable revision %d with index 2 durable, want 1", got)
	}
	log.setDurable(5)
	if got := db.DurableRevision(); got != 4 {
		t.Fatalf("durable revision %d with index 5 durable, want 4", got)
	}
	// An entry whose batches all fail records its index and no revision.
	if err := db.ApplyEntries(6, [][]byte{[]byte("x")}, outs, errs); err != nil || !errors.Is(errs[0], engine.ErrBadBatch) {
		t.Fatalf("entry of a bad batch: %v, %v", err, errs[0])
	}
	if db.AppliedIndex() != 6 || db.WrittenRevision() != 4 {
		t.Fatalf("after an entry of a bad batch: index %d, revision %d; want 6, 4", db.AppliedIndex(), db.WrittenRevision())
	}
	log.setDurable(6) // for Close's checkpoint
}
