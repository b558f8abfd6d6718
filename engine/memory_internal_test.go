package engine

import (
	"testing"
	"time"
)

// TestMemReleaser: the release is armed once checkpoints dropped
// releaseMinBytes, a second after the last checkpoint and no sooner than
// releaseInterval after the previous release, and put off while the
// memtables fill again.
func TestMemReleaser(t *testing.T) {
	var held int64
	frees := 0
	r := newMemReleaser(func() int64 { return held })
	r.free = func() { frees++ }
	defer r.stop()
	t0 := time.Now()

	if w := r.checkpointed(releaseMinBytes/2, t0); w != 0 || r.due() != nil {
		t.Fatalf("armed after a checkpoint of %d bytes (wait %v)", releaseMinBytes/2, w)
	}
	if w := r.checkpointed(releaseMinBytes/2, t0); w != releaseQuiet || r.due() == nil {
		t.Fatalf("after checkpoints of %d bytes: wait %v, want %v", releaseMinBytes, w, releaseQuiet)
	}
	// Writes go on: the memtables hold releaseMinBytes again.
	held = releaseMinBytes
	r.release(t0.Add(releaseQuiet))
	if frees != 0 || r.due() == nil {
		t.Fatalf("released %d times while the memtables filled; armed %v", frees, r.due() != nil)
	}
	held = 0
	t1 := t0.Add(2 * releaseQuiet)
	r.release(t1)
	if frees != 1 || r.due() != nil {
		t.Fatalf("released %d times once writes paused, want 1; still armed %v", frees, r.due() != nil)
	}
	// The next release waits for releaseInterval after this one.
	if w := r.checkpointed(releaseMinBytes, t1.Add(time.Second)); w != releaseInterval-time.Second {
		t.Errorf("a second after a release: wait %v, want %v", w, releaseInterval-time.Second)
	}
	// Negative figures (writes outran the checkpoint) count as nothing.
	r = newMemReleaser(func() int64 { return 0 })
	defer r.stop()
	if w := r.checkpointed(-releaseMinBytes, t0); w != 0 {
		t.Errorf("armed after a negative drop: wait %v", w)
	}
}
