package engine

import (
	"runtime"
	"runtime/debug"
	"time"
)

// Returning the memory that checkpoints free (Options.ReleaseMemory).
//
// A checkpoint drops a memtable that may hold a quarter of kvd's budget.
// The Go runtime does not notice until its next collection, and an idle
// process has none for two minutes (the forced periodic one): the heap the
// last collection sized for a full memtable stays resident. So once writes
// pause, the checkpointer collects and returns the free heap to the system
// itself (freeMemory). It waits for the pause rather than doing so
// after every checkpoint: under a steady write load the soft memory limit
// already keeps the heap within the budget, and a forced collection per
// checkpoint would only cost time and page faults as the heap grows back.
// Writes have paused when a second passed without a checkpoint and the
// memtables hold less than releaseMinBytes: a load that checkpoints every
// few seconds refills them meanwhile, and puts the release off.
const (
	// releaseQuiet is how long after the last checkpoint the release
	// waits: a checkpoint within it (writes go on) puts it off again.
	releaseQuiet = time.Second
	// releaseInterval is the least time between two releases, for loads
	// that checkpoint less often than releaseQuiet (the periodic
	// checkpoint of a light load): at most one forced collection each.
	releaseInterval = 10 * time.Second
	// releaseMinBytes is how much the checkpoints since the last release
	// must have dropped from the memtables for a release: a few small
	// checkpoints free too little to be worth a collection.
	releaseMinBytes = 4 << 20
)

// memReleaser decides when the checkpointer returns memory. Only the
// checkpointer goroutine uses it.
type memReleaser struct {
	freed int64     // memtable bytes checkpoints dropped since the last release
	last  time.Time // the last release
	timer *time.Timer
	armed bool
	// held reports what the memtables hold.
	held func() int64
	// free returns the memory (freeMemory).
	free func()
}

func newMemReleaser(held func() int64) *memReleaser {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &memReleaser{timer: t, held: held, free: freeMemory}
}

// freeMemory collects twice, then returns the free heap to the system.
// One collection is not enough: sync.Pools keep what they held through
// the first collection after it was put back (their victim cache), and
// the state file's page pool (bbolt's, one page per buffer) holds what
// the checkpoints wrote, 20 MiB after a load of 48 MiB measured. The
// second collection, in debug.FreeOSMemory, frees it.
func freeMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}

// checkpointed records a checkpoint that dropped n bytes from the
// memtables at time now, and (re)arms the release once enough was dropped:
// releaseQuiet after now, and no sooner than releaseInterval after the
// last release. It returns how long the release waits (0: none armed).
func (r *memReleaser) checkpointed(n int64, now time.Time) time.Duration {
	r.freed += max(n, 0)
	if r.freed < releaseMinBytes {
		return 0
	}
	wait := releaseQuiet
	if !r.last.IsZero() {
		wait = max(wait, r.last.Add(releaseInterval).Sub(now))
	}
	r.timer.Reset(wait)
	r.armed = true
	return wait
}

// due is the channel the armed release fires on; nil (never ready) while
// none is armed.
func (r *memReleaser) due() <-chan time.Time {
	if !r.armed {
		return nil
	}
	return r.timer.C
}

// release returns the free heap to the system, unless writes go on (the
// memtables hold releaseMinBytes again): then it waits releaseQuiet more.
func (r *memReleaser) release(now time.Time) {
	if r.held() >= releaseMinBytes {
		r.timer.Reset(releaseQuiet)
		return
	}
	r.armed = false
	r.freed = 0
	r.last = now
	r.free()
}

// stop disarms the release.
func (r *memReleaser) stop() {
	r.timer.Stop()
	r.armed = false
}
