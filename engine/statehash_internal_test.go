package engine

import (
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"testing"
	"time"
)

// snapshotHash is db's StateHash at its newest revision.
func snapshotHash(t testing.TB, db *DB) [32]byte {
	t.Helper()
	s, err := db.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h, err := s.StateHash()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// scanHash computes what StateHash should give from a full scan of db at
// clock time 0 (which hides no expired key), and db's revision.
func scanHash(t testing.TB, db *DB) [32]byte {
	t.Helper()
	kvs, err := db.Scan(ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	hashKVs(h, kvs)
	h.Write(binary.BigEndian.AppendUint64(nil, db.WrittenRevision()))
	return [32]byte(h.Sum(nil))
}

// TestStateHash applies the same random batches (every op kind) to two
// stores, one checkpointing after every few KiB and restarted now and
// then, the other never checkpointing: at every step their StateHashes
// are equal, equal to a hash of a full scan, and a store one write ahead
// hashes differently.
func TestStateHash(t *testing.T) {
	seed := testSeed(t, "KVD_APPLY_SEED")
	const n = 300
	batches := randomBatches(rand.New(rand.NewPCG(seed, 0)), n)
	var clock testClock // at 0: nothing is hidden as expired
	often := Options{CheckpointLogBytes: 2 << 10, CommitMode: CommitAsync, NoExpiryRemoval: true, clock: clock.now}
	never := often
	never.CheckpointLogBytes, never.CheckpointInterval = 1<<30, time.Hour
	dirA := t.TempDir()
	a, err := Open(dirA, often)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { a.Close() }()
	b, err := Open(t.TempDir(), never)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	checked := 0
	for i, p := range batches {
		rev := uint64(i + 1)
		for _, db := range []*DB{a, b} {
			if _, err := db.Apply(rev, p, WriteOptions{}); err != nil {
				t.Fatalf("apply %d: %v", rev, err)
			}
		}
		if i%37 == 36 {
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			if a, err = Open(dirA, often); err != nil {
				t.Fatal(err)
			}
		}
		if i%10 != 9 {
			continue
		}
		ha, hb := snapshotHash(t, a), snapshotHash(t, b)
		if ha != hb {
			t.Fatalf("revision %d: the stores hash differently", rev)
		}
		if want := scanHash(t, b); hb != want {
			t.Fatalf("revision %d: StateHash differs from the hash of a scan", rev)
		}
		checked++
	}
	// One more write on b alone: the hashes differ.
	var x Batch
	x.Put([]byte("one-more"), []byte("x"))
	if _, err := b.Write(&x, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if snapshotHash(t, a) == snapshotHash(t, b) {
		t.Fatal("stores that differ by one write hash alike")
	}
	t.Logf("%d points compared", checked)
}
