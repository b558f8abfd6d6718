package replication

import (
	"fmt"
	"sync"
	"testing"

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
