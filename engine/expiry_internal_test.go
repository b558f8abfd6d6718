package engine

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestSweepLeavesRewrittenKeys: keys the sweep found expired but that are
// written again (or whose expiry changes) before the removal applies are
// left alone; the others are removed. The sweep is run by hand: the
// expirer's own period is an hour.
func TestSweepLeavesRewrittenKeys(t *testing.T) {
	var clock testClock
	clock.ms.Store(batchEpoch)
	o := Options{CheckpointInterval: time.Hour, sweepInterval: time.Hour, sweepLimit: 100, clock: clock.now}
	dir := t.TempDir()
	db, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { db.Close() }()
	write := func(build func(b *Batch)) {
		t.Helper()
		var b Batch
		build(&b)
		if _, err := db.Write(&b, WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	write(func(b *Batch) {
		for i := range 6 {
			b.PutExpiresAt(fmt.Appendf(nil, "k%d", i), []byte("v"), 0, batchEpoch+10)
		}
	})
	// k0-k2 go into the state file, k3-k5 stay in the memtable.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if db, err = Open(dir, o); err != nil {
		t.Fatal(err)
	}
	write(func(b *Batch) {
		for i := 3; i < 6; i++ {
			b.PutExpiresAt(fmt.Appendf(nil, "k%d", i), []byte("v"), 0, batchEpoch+10)
		}
	})
	clock.ms.Add(10)
	var sw sweeper
	found := sw.sweep(db)
	if len(found) != 6 {
		t.Fatalf("the sweep found %d expired keys, want 6: %v", len(found), found)
	}
	// Meanwhile k0 and k3 are set again, k1's expiry is moved on (by a
	// batch stamped before it expired, as a replica might have it).
	write(func(b *Batch) {
		b.Put([]byte("k0"), []byte("new"))
		b.Put([]byte("k3"), []byte("new"))
	})
	var b Batch
	b.Expire([]byte("k1"), batchEpoch+1000, 0)
	b.SetTimestamp(batchEpoch + 5)
	if _, err := db.Write(&b, WriteOptions{}); err != nil || !b.Results()[0].Applied {
		t.Fatalf("expire of k1 at its batch's time: %v, %+v", err, b.Results())
	}
	db.remove(found)
	if got := db.Stats().ExpiredRemoved; got != 3 {
		t.Errorf("removed %d keys, want 3", got)
	}
	for k, want := range map[string]string{"k0": "new", "k3": "new", "k1": "v"} {
		if v, err := db.Get([]byte(k)); err != nil || string(v) != want {
			t.Errorf("Get(%s) = %q, %v; want %q", k, v, err, want)
		}
	}
	// The removed keys are gone, not hidden: a clock put back finds none.
	clock.ms.Store(batchEpoch)
	for _, k := range []string{"k2", "k4", "k5"} {
		if _, err := db.Get([]byte(k)); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%s) with the clock back: %v, want ErrNotFound", k, err)
		}
	}
	clock.ms.Store(batchEpoch + 10)
	if again := sw.sweep(db); len(again) != 0 {
		t.Errorf("a second sweep found %v", again)
	}
}
