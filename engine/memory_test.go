package engine_test

import (
	"bytes"
	"fmt"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/kvtest"
)

// TestMemoryStaysBounded writes far more than the memtable bound (1 KiB
// values, every key new, from several writers at once) and checks that
// the memtables never hold more than their bound plus one write per writer,
// and that the Go heap live after a collection stays below a bound that a
// memtable growing with the load would pass: it grows with the keys
// written only through the engine's bookkeeping, not with their values.
//
// It runs in a process of its own: the live heap is the process's, and the
// load's heap would otherwise stay mapped for the tests after it, some of
// which read damaged state files whose bad offsets must land on unmapped
// memory.
func TestMemoryStaysBounded(t *testing.T) {
	if kvtest.InSubprocess(t) {
		return
	}
	const (
		writers  = 4
		valSize  = 1 << 10
		maxMem   = 8 << 20
		phases   = 4
		keySlack = 64 // bytes a memtable entry of the test costs beyond its value, rounded up
	)
	puts := 200_000
	if raceEnabled || testing.Short() {
		puts = 40_000
	}
	opts := engine.Options{
		CommitMode:       engine.CommitAsync,
		CheckpointBytes:  maxMem / 2,
		MaxMemtableBytes: maxMem,
		SegmentSize:      1 << 20,
	}
	db := open(t, t.TempDir(), opts)
	if got := db.Stats().MaxMemtableBytes; got != maxMem {
		t.Fatalf("Stats().MaxMemtableBytes = %d, want %d", got, maxMem)
	}

	// Each writer has one write in flight at a time (Put returns once the
	// write is applied), so the memtables may pass their bound by at most
	// one entry per writer.
	slack := int64(writers * (valSize + keySlack + 112))
	var peak atomic.Int64
	done := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			if mb := db.Stats().MemtableBytes; mb > peak.Load() {
				peak.Store(mb)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})

	// The bound on the live heap: the memtables (their estimate is close
	// to what they cost), the log's in-memory segment, the read view and
	// the test's own values, twice over, plus what the runtime and the
	// test binary hold anyway. 200,000 keys of 1 KiB held in memory would
	// be about 230 MiB.
	heapBound := uint64(2*maxMem + 32<<20)
	val := bytes.Repeat([]byte("v"), valSize)
	per := puts / phases / writers
	var heapPeak uint64
	for phase := range phases {
		putConcurrently(t, db, writers, per, fmt.Sprintf("p%d-", phase), val)
		runtime.GC()
		live := heapLive(t)
		heapPeak = max(heapPeak, live)
		t.Logf("after %d puts: live heap %d MiB, memtable peak %d KiB, checkpoints %d",
			(phase+1)*per*writers, live>>20, peak.Load()>>10, db.Stats().Checkpoints)
	}
	close(done)
	sampler.Wait()

	if p := peak.Load(); p > maxMem+slack {
		t.Errorf("memtables reached %d bytes, bound %d plus %d for the writes in flight", p, maxMem, slack)
	}
	if heapPeak > heapBound {
		t.Errorf("live heap reached %d bytes after a collection, want at most %d", heapPeak, heapBound)
	}
	st := db.Stats()
	if st.Checkpoints < uint64(puts*valSize/maxMem) {
		t.Errorf("%d checkpoints for %d MiB written under a %d MiB bound", st.Checkpoints, puts*valSize>>20, maxMem>>20)
	}
}

// putConcurrently puts n new keys, prefix then w<writer>-<i>, with val
// from each of writers goroutines at once, and fails t on an error.
func putConcurrently(t testing.TB, db *engine.DB, writers, n int, prefix string, val []byte) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range n {
				if _, err := db.Put(fmt.Appendf(nil, "%sw%d-%08d", prefix, w, i), val, engine.WriteOptions{}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// heapLive is the heap the last garbage collection found live.
func heapLive(t testing.TB) uint64 {
	t.Helper()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		t.Fatalf("runtime/metrics: no %s", s[0].Name)
	}
	return s[0].Value.Uint64()
}

// TestMemoryReturnedAfterLoad: with Options.ReleaseMemory, the heap that a
// write load's memtables held is returned to the system soon after the
// load stops, not kept until the runtime's next collection (up to two
// minutes away in an idle process). The runtime's own collections are
// off, so that only the DB's release can bring the heap down: it writes
// 48 MiB of new keys under memtables of 16 MiB, then waits for the heap the
// runtime holds from the system (objects live or not, free spans not yet
// released) to fall under a bound. Without a release the heap holds all
// that the load allocated, several times the bound.
//
// It runs in a process of its own: the heap it reads, and the collector it
// turns off, are the process's.
func TestMemoryReturnedAfterLoad(t *testing.T) {
	if kvtest.InSubprocess(t) {
		return
	}
	const (
		writers = 2
		valSize = 1 << 10
		maxMem  = 16 << 20
		// What a DB with empty memtables and the test binary hold (the
		// log's segment in memory, 1 MiB here, the read view, the
		// runtime's own: 2 MiB measured once the release is done, up to
		// 28 MiB while its freed pages are being returned), and the
		// garbage of up to releaseMinBytes of memtables checkpointed
		// after the last release, which the DB leaves. (Before the
		// release collected twice, the state file's page pool kept
		// 20-30 MiB live through it.)
		heldBound = 32 << 20
	)
	puts := 48 << 20 / valSize
	if raceEnabled || testing.Short() {
		puts = 16 << 20 / valSize // still 150 MiB of heap without a release
	}
	debug.SetGCPercent(-1)
	db := open(t, t.TempDir(), engine.Options{
		CommitMode:         engine.CommitAsync,
		CheckpointBytes:    maxMem / 2,
		MaxMemtableBytes:   maxMem,
		CheckpointInterval: 200 * time.Millisecond,
		SegmentSize:        1 << 20,
		ReleaseMemory:      true,
	})
	putConcurrently(t, db, writers, puts/writers, "", bytes.Repeat([]byte("v"), valSize))
	end := time.Now()
	t.Logf("after the load: heap held %d MiB, checkpoints %d", heapHeld(t)>>20, db.Stats().Checkpoints)
	kvtest.Eventually(t, 10*time.Second, "the memtables to be checkpointed", func() bool {
		return db.Stats().MemtableBytes == 0
	})
	// The release comes a second after the last checkpoint, or ten after
	// the previous release.
	kvtest.Eventually(t, 20*time.Second, "the heap held to fall under 32 MiB", func() bool {
		return heapHeld(t) <= heldBound
	})
	t.Logf("%v after the load: heap held %d MiB", time.Since(end).Round(100*time.Millisecond), heapHeld(t)>>20)
}

// heapHeld is the heap memory the runtime holds from the system: objects
// (live or garbage not yet collected) and free spans not yet released.
func heapHeld(t testing.TB) uint64 {
	t.Helper()
	s := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
	}
	metrics.Read(s)
	var n uint64
	for _, v := range s {
		if v.Value.Kind() != metrics.KindUint64 {
			t.Fatalf("runtime/metrics: no %s", v.Name)
		}
		n += v.Value.Uint64()
	}
	return n
}
