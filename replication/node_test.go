package replication

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/kvtest"
)

// testNodeConfig is a node's config with the short timeouts of tests.
func testNodeConfig(dir string) Config {
	return Config{
		Dir:                dir,
		Listen:             "127.0.0.1:0",
		HeartbeatTimeout:   400 * time.Millisecond,
		ElectionTimeout:    400 * time.Millisecond,
		LeaderLeaseTimeout: 200 * time.Millisecond,
		ApplyTimeout:       10 * time.Second,
		// Small, so that the tests take snapshots, compact the log and
		// send snapshots to followers behind.
		SnapshotThreshold: 64,
		SnapshotInterval:  100 * time.Millisecond,
		TrailingLogs:      16,
		// Small segments, so that compacting the log drops entries.
		Engine: engine.Options{FlushInterval: 5 * time.Millisecond, SegmentSize: 16 << 10},
	}
}

type testCluster struct {
	t     *testing.T
	dirs  []string
	addrs []string
	nodes []*Node // nil while stopped
}

// startCluster starts n nodes: the first bootstraps, the others join it.
func startCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	c := &testCluster{t: t}
	for i := range n {
		dir := filepath.Join(t.TempDir(), fmt.Sprintf("n%d", i+1))
		cfg := testNodeConfig(dir)
		cfg.NodeID = fmt.Sprintf("n%d", i+1)
		if i == 0 {
			cfg.Bootstrap = true
		} else {
			cfg.Join = []string{c.addrs[0]}
		}
		node, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.dirs = append(c.dirs, dir)
		c.addrs = append(c.addrs, node.ClusterAddr())
		c.nodes = append(c.nodes, node)
		t.Cleanup(func() {
			if c.nodes[i] != nil {
				c.nodes[i].Close()
			}
		})
		if i == 0 {
			kvtest.Eventually(t, 10*time.Second, "n1 to lead", node.IsLeader)
		}
	}
	kvtest.Eventually(t, 20*time.Second, "every node to be a member", func() bool {
		ms, err := c.nodes[0].Members()
		return err == nil && len(ms) == n
	})
	return c
}

// restart starts node i again on its data directory and address.
func (c *testCluster) restart(i int) {
	c.t.Helper()
	cfg := testNodeConfig(c.dirs[i])
	cfg.Listen = c.addrs[i]
	node, err := Open(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.nodes[i] = node
}

func (c *testCluster) leader() int {
	c.t.Helper()
	var at int
	kvtest.Eventually(c.t, 20*time.Second, "a leader", func() bool {
		for i, n := range c.nodes {
			if n != nil && n.IsLeader() {
				at = i
				return true
			}
		}
		return false
	})
	return at
}

func put(t *testing.T, s *Store, key, value string, d engine.Durability) uint64 {
	t.Helper()
	var b engine.Batch
	b.Put([]byte(key), []byte(value))
	cm, err := s.WriteContext(t.Context(), &b, engine.WriteOptions{Durability: d})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return cm.Revision()
}

// TestClusterWritesAndReads: writes sent to any node (followers forward
// them) get gapless revisions, across a leader's stop and restart and an
// election; a linearizable read on any node sees every write acknowledged
// before it; the nodes end with the same state.
func TestClusterWritesAndReads(t *testing.T) {
	c := startCluster(t, 3)
	var revs []uint64
	for i := range 30 {
		n := c.nodes[i%3]
		d := engine.DurabilitySync
		if i%2 == 1 {
			d = engine.DurabilityAsync
		}
		key := fmt.Sprintf("k%02d", i)
		revs = append(revs, put(t, n.Store(Linearizable), key, fmt.Sprint(i), d))
		// Read it back at once on another node.
		other := c.nodes[(i+1)%3].Store(Linearizable)
		e, err := other.GetEntry([]byte(key))
		if err != nil || string(e.Value) != fmt.Sprint(i) || e.ModRevision != revs[i] {
			t.Fatalf("linearizable read of %s on node %d: %q rev %d, %v; want %d at rev %d", key, (i+1)%3+1, e.Value, e.ModRevision, err, i, revs[i])
		}
	}

	// Stop the leader: the others elect a new one and go on.
	l := c.leader()
	if err := c.nodes[l].Close(); err != nil {
		t.Fatal(err)
	}
	c.nodes[l] = nil
	for i := 30; i < 40; i++ {
		n := c.nodes[(l+1+i%2)%3]
		revs = append(revs, put(t, n.Store(Linearizable), fmt.Sprintf("k%02d", i), fmt.Sprint(i), engine.DurabilitySync))
	}
	c.restart(l)
	if err := c.nodes[l].Store(Linearizable).Sync(); err != nil {
		t.Fatal(err)
	}
	want := make([]uint64, 40)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	if !slices.Equal(revs, want) {
		t.Fatalf("revisions of 40 writes across an election: %v, want 1..40", revs)
	}
	for i, n := range c.nodes {
		s := n.Store(Linearizable)
		kvs, err := s.Scan(engine.ScanOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(kvs) != 40 {
			t.Fatalf("node %d holds %d keys, want 40", i+1, len(kvs))
		}
		for j, kv := range kvs {
			if string(kv.Value) != fmt.Sprint(j) {
				t.Fatalf("node %d: %s = %q, want %d", i+1, kv.Key, kv.Value, j)
			}
		}
	}
}

// TestClusterConcurrentWrites: concurrent writers on every node; every
// acknowledged write is present on every node, with its revision, and no
// two writes share a revision. A write whose outcome is unknown (the
// leader lost its leadership, as it may on a loaded machine) is left out.
func TestClusterConcurrentWrites(t *testing.T) {
	c := startCluster(t, 3)
	const writers, each = 6, 40
	var mu sync.Mutex
	var unknown atomic.Int64
	got := map[uint64]string{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := c.nodes[w%3].Store(Linearizable)
			for i := range each {
				key := fmt.Sprintf("w%d-%d", w, i)
				var b engine.Batch
				b.Put([]byte(key), []byte(key))
				d := engine.DurabilityAsync
				if i%3 == 0 {
					d = engine.DurabilitySync
				}
				cm, err := s.WriteContext(t.Context(), &b, engine.WriteOptions{Durability: d})
				if errors.Is(err, engine.ErrOutcomeUnknown) || errors.Is(err, ErrNoLeader) {
					unknown.Add(1)
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if old, dup := got[cm.Revision()]; dup {
					t.Errorf("revision %d given to %s and %s", cm.Revision(), old, key)
				}
				got[cm.Revision()] = key
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if unknown.Load() == 0 {
		// With every outcome known, the revisions are exactly 1..N.
		for r := uint64(1); r <= writers*each; r++ {
			if _, ok := got[r]; !ok {
				t.Fatalf("no write got revision %d of 1..%d", r, writers*each)
			}
		}
	}
	for i, n := range c.nodes {
		s := n.Store(Linearizable)
		for rev, key := range got {
			e, err := s.GetEntry([]byte(key))
			if err != nil || e.ModRevision != rev {
				t.Fatalf("node %d: %s at revision %d, %v; want revision %d", i+1, key, e.ModRevision, err, rev)
			}
		}
	}
}

// TestClusterNoLeader: with a majority gone, writes and linearizable reads
// fail with ErrNoLeader, and stale reads still answer.
func TestClusterNoLeader(t *testing.T) {
	c := startCluster(t, 3)
	put(t, c.nodes[0].Store(Linearizable), "k", "v", engine.DurabilitySync)
	kvtest.Eventually(t, 10*time.Second, "every node to apply k", func() bool {
		for _, n := range c.nodes {
			if _, err := n.DB().Get([]byte("k")); err != nil {
				return false
			}
		}
		return true
	})
	for _, i := range []int{1, 2} {
		c.nodes[i].Close()
		c.nodes[i] = nil
	}
	n := c.nodes[0]
	n.cfg.ApplyTimeout = 2 * time.Second
	s := n.Store(Linearizable)
	var b engine.Batch
	b.Put([]byte("k2"), []byte("v"))
	if _, err := s.WriteContext(t.Context(), &b, engine.WriteOptions{}); !errors.Is(err, ErrNoLeader) && !errors.Is(err, engine.ErrOutcomeUnknown) {
		t.Fatalf("write without a quorum: %v, want ErrNoLeader or an unknown outcome", err)
	}
	if _, err := s.GetEntry([]byte("k")); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("linearizable read without a quorum: %v, want ErrNoLeader", err)
	}
	if e, err := n.Store(Stale).GetEntry([]byte("k")); err != nil || string(e.Value) != "v" {
		t.Fatalf("stale read without a quorum: %q, %v", e.Value, err)
	}
}

// TestClusterExpiry: keys with a TTL expire on every node, are removed by
// the leader through the log (the same revision everywhere), and a key
// written again before its removal stays.
func TestClusterExpiry(t *testing.T) {
	c := startCluster(t, 3)
	l := c.nodes[c.leader()].Store(Linearizable)
	var b engine.Batch
	soon := time.Now().Add(300 * time.Millisecond).UnixMilli()
	for i := range 20 {
		b.PutExpiresAt([]byte(fmt.Sprintf("ttl%d", i)), []byte("v"), 0, soon)
	}
	b.Put([]byte("keep"), []byte("v"))
	if _, err := l.WriteContext(t.Context(), &b, engine.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The leader removes them through the log: every node applies the
	// removal at the same revision.
	kvtest.Eventually(t, 10*time.Second, "the leader to remove the 20 expired keys", func() bool {
		return l.Stats().ExpiredRemoved == 20
	})
	want := c.nodes[c.leader()].DB().WrittenRevision()
	kvtest.Eventually(t, 10*time.Second, "every node to apply the removal", func() bool {
		for _, n := range c.nodes {
			if n.DB().WrittenRevision() != want {
				return false
			}
		}
		return want >= 2
	})
	for i, n := range c.nodes {
		if cnt, err := n.DB().Count(); err != nil || cnt != 1 {
			t.Fatalf("node %d holds %d keys (%v), want 1", i+1, cnt, err)
		}
	}
}

// TestClusterNodeMoves: a follower restarted on a new address keeps its ID
// and gets its new address into the configuration, and then takes part
// again: it receives writes made while it was away and after.
func TestClusterNodeMoves(t *testing.T) {
	c := startCluster(t, 3)
	l := c.leader()
	f := (l + 1) % 3
	put(t, c.nodes[l].Store(Linearizable), "before", "1", engine.DurabilitySync)
	if err := c.nodes[f].Close(); err != nil {
		t.Fatal(err)
	}
	c.nodes[f] = nil
	put(t, c.nodes[l].Store(Linearizable), "away", "2", engine.DurabilitySync)

	old := c.addrs[f]
	c.addrs[f] = "127.0.0.1:0" // a new port
	c.restart(f)
	moved := c.nodes[f].ClusterAddr()
	if moved == old {
		t.Fatalf("restarted on the same address %s", old)
	}
	kvtest.Eventually(t, 20*time.Second, "the configuration to hold the new address", func() bool {
		ms, err := c.nodes[l].Members()
		if err != nil {
			return false
		}
		for _, m := range ms {
			if m.ID == c.nodes[f].ID() {
				return m.Address == moved && m.Voter
			}
		}
		return false
	})
	put(t, c.nodes[f].Store(Linearizable), "after", "3", engine.DurabilitySync)
	s := c.nodes[f].Store(Stale)
	kvtest.Eventually(t, 10*time.Second, "the moved node to hold every write", func() bool {
		for _, k := range []string{"before", "away", "after"} {
			if _, err := s.GetEntry([]byte(k)); err != nil {
				return false
			}
		}
		return true
	})
}

// TestRecoverLostQuorum: two of three nodes are lost for good; the
// survivor, recovered offline with itself as the only peer, starts, leads
// and keeps every write.
func TestRecoverLostQuorum(t *testing.T) {
	c := startCluster(t, 3)
	l := c.leader()
	for i := range 10 {
		put(t, c.nodes[l].Store(Linearizable), fmt.Sprintf("k%d", i), "v", engine.DurabilitySync)
	}
	survivor := (l + 1) % 3
	kvtest.Eventually(t, 10*time.Second, "the survivor to apply every write", func() bool {
		return c.nodes[survivor].DB().WrittenRevision() == 10
	})
	for i := range c.nodes {
		c.nodes[i].Close()
		c.nodes[i] = nil
	}
	if err := Recover(c.dirs[survivor], []Peer{{ID: fmt.Sprintf("n%d", survivor+1), Address: c.addrs[survivor]}}); err != nil {
		t.Fatal(err)
	}
	c.restart(survivor)
	n := c.nodes[survivor]
	kvtest.Eventually(t, 20*time.Second, "the survivor to lead", n.IsLeader)
	s := n.Store(Linearizable)
	put(t, s, "after", "v", engine.DurabilitySync)
	if cnt, err := s.Count(); err != nil || cnt != 11 {
		t.Fatalf("the recovered node holds %d keys (%v), want 11", cnt, err)
	}
	if ms, _ := n.Members(); len(ms) != 1 {
		t.Fatalf("the recovered cluster has members %+v, want the survivor alone", ms)
	}
}

// TestClusterSnapshotCatchUp: a follower stopped while the others write
// and compact their logs past what it has gets a snapshot when it comes
// back, and ends with every write; the leader's own restart starts from
// its state file and snapshot.
func TestClusterSnapshotCatchUp(t *testing.T) {
	c := startCluster(t, 3)
	l := c.leader()
	f := (l + 1) % 3
	put(t, c.nodes[l].Store(Linearizable), "first", "v", engine.DurabilitySync)
	kvtest.Eventually(t, 10*time.Second, "the follower to apply the first write", func() bool {
		return c.nodes[f].DB().WrittenRevision() == 1
	})
	c.nodes[f].Close()
	c.nodes[f] = nil
	s := c.nodes[l].Store(Linearizable)
	for i := range 400 {
		put(t, s, fmt.Sprintf("k%03d", i), fmt.Sprint(i), engine.DurabilityAsync)
	}
	kvtest.Eventually(t, 20*time.Second, "the leader to compact its log past the follower", func() bool {
		first, _ := c.nodes[l].logs.FirstIndex()
		return first > 100 && len(c.nodes[l].snapshots()) > 0
	})
	c.restart(f)
	kvtest.Eventually(t, 30*time.Second, "the follower to catch up", func() bool {
		return c.nodes[f].DB().WrittenRevision() == 401
	})
	for _, i := range []int{0, 199, 399} {
		e, err := c.nodes[f].DB().GetEntry([]byte(fmt.Sprintf("k%03d", i)))
		if err != nil || string(e.Value) != fmt.Sprint(i) || e.ModRevision != uint64(i+2) {
			t.Fatalf("k%03d on the caught-up follower: %q at %d, %v", i, e.Value, e.ModRevision, err)
		}
	}
	// Every node restarts from its state file (and its snapshot) and keeps
	// taking writes.
	for i := range c.nodes {
		c.nodes[i].Close()
		c.nodes[i] = nil
	}
	for i := range c.nodes {
		c.restart(i)
	}
	l = c.leader()
	put(t, c.nodes[l].Store(Linearizable), "after", "v", engine.DurabilitySync)
	for i, n := range c.nodes {
		st := n.Store(Linearizable)
		if cnt, err := st.Count(); err != nil || cnt != 402 {
			t.Fatalf("node %d holds %d keys after the restart (%v), want 402", i+1, cnt, err)
		}
	}
}

func (n *Node) snapshots() []*raft.SnapshotMeta {
	metas, _ := n.snaps.List()
	return metas
}
