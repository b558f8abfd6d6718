package replication

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
)

// TestGatheredWrites: concurrent writes on the leader share Raft entries,
// and each still gets a revision and an outcome of its own: every write
// increments one counter, so the counter's value after a write is that
// write's revision, and a counter of its writer's own by a step that tells
// the writers apart. Every node ends with the same state.
func TestGatheredWrites(t *testing.T) {
	c := startCluster(t, 3)
	leader := c.nodes[c.leader()]
	first, _ := leader.logs.LastIndex()
	startRev := leader.db.WrittenRevision()
	const writers, each = 32, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := leader.Store(Linearizable)
			for i := range each {
				var b engine.Batch
				b.IncrBy([]byte("counter"), 1)
				b.IncrBy(fmt.Appendf(nil, "w%d", w), int64(w+1)) // tells the writers' outcomes apart
				d := engine.DurabilityAsync
				if (w+i)%2 == 0 {
					d = engine.DurabilitySync
				}
				cm, err := s.WriteContext(t.Context(), &b, engine.WriteOptions{Durability: d})
				if err != nil {
					t.Error(err)
					return
				}
				if r := b.Results(); len(r) != 2 || uint64(r[0].Int)+startRev != cm.Revision() || r[1].Int != int64((i+1)*(w+1)) {
					t.Errorf("writer %d, write %d: revision %d, results %+v; want the counter at %d and its own at %d",
						w, i, cm.Revision(), r, cm.Revision()-startRev, (i+1)*(w+1))
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	last, _ := leader.logs.LastIndex()
	if entries := last - first; entries >= writers*each {
		t.Errorf("%d writes took %d Raft entries: none were gathered", writers*each, entries)
	} else {
		t.Logf("%d writes in %d Raft entries", writers*each, entries)
	}
	for i, n := range c.nodes {
		e, err := n.Store(Linearizable).GetEntry([]byte("counter"))
		if err != nil || string(e.Value) != "800" {
			t.Fatalf("node %d: counter %q, %v; want 800", i+1, e.Value, err)
		}
	}
}

// TestNextEntry: an entry takes the queued writes that fit in
// maxGatherBytes, in order, and a larger write goes alone.
func TestNextEntry(t *testing.T) {
	w := func(size int) *proposal { return &proposal{data: make([]byte, size)} }
	small, half, big := w(100), w(maxGatherBytes/2), w(maxGatherBytes+1)
	for _, tc := range []struct {
		queue      []*proposal
		next, rest int
	}{
		{[]*proposal{small}, 1, 0},
		{[]*proposal{small, small, small}, 3, 0},
		{[]*proposal{half, half, small}, 2, 1},
		{[]*proposal{big, small}, 1, 1},
		{[]*proposal{small, big}, 1, 1},
		{[]*proposal{half, small, half}, 2, 1},
	} {
		next, rest := nextEntry(tc.queue)
		if len(next) != tc.next || len(rest) != tc.rest || next[0] != tc.queue[0] || (len(rest) > 0 && rest[0] != tc.queue[len(next)]) {
			t.Errorf("queue of %d: next %d, rest %d; want %d and %d, in order", len(tc.queue), len(next), len(rest), tc.next, tc.rest)
		}
	}
}

// TestSplitMulti: an entry's batches come back as they were put in, and a
// cut or overlong length is refused as a bad batch.
func TestSplitMulti(t *testing.T) {
	var data []byte
	for _, b := range []string{"one", "", "three"} {
		data = binary.AppendUvarint(data, uint64(len(b)))
		data = append(data, b...)
	}
	got, err := splitMulti(data)
	if err != nil || len(got) != 3 || string(got[0]) != "one" || len(got[1]) != 0 || string(got[2]) != "three" {
		t.Fatalf("split %q: %q, %v", data, got, err)
	}
	for _, bad := range [][]byte{data[:len(data)-1], {0x80}, binary.AppendUvarint(nil, 1<<40)} {
		if _, err := splitMulti(bad); !errors.Is(err, engine.ErrBadBatch) {
			t.Errorf("split %q: %v, want ErrBadBatch", bad, err)
		}
	}
}

// TestGatherWaitsForAnsweredWriters: after an entry commits, the next one
// waits for the writers the entry answered to come back, so 16 writers in
// a closed loop go together in every entry but the first and the last
// (without the wait they split into two cohorts that take turns: entries
// of 1 and 15). The writers that do not come back (one has finished before
// the last entry) hold the others no longer than an entry takes to commit.
func TestGatherWaitsForAnsweredWriters(t *testing.T) {
	const writers, each, commitTime, maxWait = 16, 10, 20 * time.Millisecond, 10 * time.Second
	var mu sync.Mutex
	var sizes []int
	var lastWait time.Duration
	committed := time.Now()
	n := &Node{}
	n.gather[0] = gatherer{maxWait: maxWait, commit: func(ps []*proposal, _ byte) {
		mu.Lock()
		sizes = append(sizes, len(ps))
		lastWait = time.Since(committed)
		mu.Unlock()
		time.Sleep(commitTime)
		for _, p := range ps {
			p.o = engine.Outcome{Revision: 1}
		}
		mu.Lock()
		committed = time.Now()
		mu.Unlock()
	}}
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range each {
				if _, err := await(func(done func(engine.Outcome, error)) { n.proposeAsync([]byte{1}, 0, done) }); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	want := []int{1}
	for range each - 1 {
		want = append(want, writers)
	}
	want = append(want, writers-1)
	if !slices.Equal(sizes, want) {
		t.Errorf("entries of %v writes; want %v", sizes, want)
	}
	if lastWait >= maxWait {
		t.Errorf("the last entry waited %v for a writer that had finished", lastWait)
	}
}
