package replication

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/kvdstore/kvd/internal/kvtest"
	"github.com/kvdstore/kvd/wal"
)

// listFSM records the data of every command applied, in order.
type listFSM struct {
	mu  sync.Mutex
	cmd []string
}

func (f *listFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmd = append(f.cmd, string(l.Data))
	return len(f.cmd)
}

func (f *listFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return listSnapshot(slices.Clone(f.cmd)), nil
}

func (f *listFSM) Restore(r io.ReadCloser) error {
	defer r.Close()
	var cmd []string
	if err := json.NewDecoder(r).Decode(&cmd); err != nil {
		return err
	}
	f.mu.Lock()
	f.cmd = cmd
	f.mu.Unlock()
	return nil
}

func (f *listFSM) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.cmd)
}

type listSnapshot []string

func (s listSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode([]string(s)); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (listSnapshot) Release() {}

// node is one member of a test cluster: its stores live in dir and
// survive a stop.
type node struct {
	c     *cluster
	id    raft.ServerID
	dir   string
	trans *raft.InmemTransport
	fsm   *listFSM
	logs  *LogStore
	r     *raft.Raft
}

func testConfig(id raft.ServerID) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = id
	c.HeartbeatTimeout = 100 * time.Millisecond
	c.ElectionTimeout = 100 * time.Millisecond
	c.LeaderLeaseTimeout = 100 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.SnapshotInterval = time.Hour // snapshots are taken by the test
	c.SnapshotThreshold = 1 << 30
	c.TrailingLogs = 16
	c.Logger = hclog.New(&hclog.LoggerOptions{Level: hclog.Off})
	return c
}

// start opens n's stores and runs Raft on them, with a new FSM that Raft
// fills from the newest snapshot and the log.
func (n *node) start(t *testing.T) {
	t.Helper()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(n.dir, 2, hclog.New(&hclog.LoggerOptions{Level: hclog.Off}))
	if err != nil {
		t.Fatal(err)
	}
	from := uint64(1)
	if metas, err := snaps.List(); err != nil {
		t.Fatal(err)
	} else if len(metas) > 0 {
		from = metas[0].Index + 1
	}
	if n.logs, err = OpenLogStore(filepath.Join(n.dir, "log"), from, wal.Options{FlushInterval: 5 * time.Millisecond, SegmentSize: 1024}); err != nil {
		t.Fatal(err)
	}
	stable, err := OpenStableStore(filepath.Join(n.dir, "stable"))
	if err != nil {
		t.Fatal(err)
	}
	// Raft's Shutdown closed the transport, which dropped its peers.
	for _, p := range n.c.nodes {
		if p != n {
			n.trans.Connect(p.trans.LocalAddr(), p.trans)
		}
	}
	n.fsm = &listFSM{}
	if n.r, err = raft.NewRaft(testConfig(n.id), n.fsm, n.logs, stable, snaps, n.trans); err != nil {
		t.Fatal(err)
	}
}

func (n *node) stop(t *testing.T) {
	t.Helper()
	if n.r == nil {
		return
	}
	if err := n.r.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	if err := n.logs.Close(); err != nil {
		t.Fatal(err)
	}
	n.r = nil
}

type cluster struct {
	nodes []*node
}

// newCluster starts n nodes connected by in-memory transports and
// bootstraps them as one cluster.
func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := &cluster{}
	var servers []raft.Server
	for i := range n {
		id := raft.ServerID(fmt.Sprintf("node%d", i))
		addr, trans := raft.NewInmemTransport(raft.ServerAddress(id))
		c.nodes = append(c.nodes, &node{c: c, id: id, dir: t.TempDir(), trans: trans})
		servers = append(servers, raft.Server{ID: id, Address: addr})
	}
	for _, nd := range c.nodes {
		nd.start(t)
		t.Cleanup(func() { nd.stop(t) })
	}
	if err := c.nodes[0].r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatal(err)
	}
	return c
}

// leader waits for a leader among the running nodes and returns it.
func (c *cluster) leader(t *testing.T) *node {
	t.Helper()
	var l *node
	kvtest.Eventually(t, 10*time.Second, "a leader", func() bool {
		for _, n := range c.nodes {
			if n.r != nil && n.r.State() == raft.Leader {
				l = n
				return true
			}
		}
		return false
	})
	return l
}

// apply commits count commands through the leader, every third one asking
// for an fsync.
func (c *cluster) apply(t *testing.T, first, count int) {
	t.Helper()
	for i := first; i < first+count; i++ {
		l := c.leader(t)
		e := raft.Log{Data: fmt.Appendf(nil, "cmd %d", i)}
		if i%3 == 0 {
			e.Extensions = []byte{SyncFlag}
		}
		if err := l.r.ApplyLog(e, 5*time.Second).Error(); err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
	}
}

// converged waits until every running node's FSM holds the commands
// 0..count-1 in order.
func (c *cluster) converged(t *testing.T, count int) {
	t.Helper()
	want := make([]string, count)
	for i := range want {
		want[i] = fmt.Sprintf("cmd %d", i)
	}
	for _, n := range c.nodes {
		if n.r == nil {
			continue
		}
		kvtest.Eventually(t, 10*time.Second, fmt.Sprintf("%s applies %d commands", n.id, count), func() bool {
			return slices.Equal(n.fsm.commands(), want)
		})
	}
}

// TestRaftCluster runs hashicorp/raft on LogStore and StableStore: three
// nodes commit commands; a follower stopped while the leader snapshots
// and compacts its log comes back and catches up through the snapshot (an
// append after a gap); a restarted leader rebuilds its FSM from its
// snapshot and log; and the whole cluster, stopped and restarted, agrees.
func TestRaftCluster(t *testing.T) {
	c := newCluster(t, 3)
	c.apply(t, 0, 50)
	c.converged(t, 50)

	// A follower misses commands that the leader's snapshot then covers.
	l := c.leader(t)
	var f *node
	for _, n := range c.nodes {
		if n != l {
			f = n
			break
		}
	}
	f.stop(t)
	c.apply(t, 50, 100)
	if err := l.r.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	c.apply(t, 150, 20)
	if first, _ := l.logs.FirstIndex(); first <= 50 {
		t.Fatalf("the leader's log still starts at %d after its snapshot", first)
	}
	f.start(t)
	c.converged(t, 170)
	if first, _ := f.logs.FirstIndex(); first <= 50 {
		t.Fatalf("the follower caught up without the snapshot: its log starts at %d", first)
	}

	// The leader restarts: another is elected, and it catches up.
	l = c.leader(t)
	l.stop(t)
	c.apply(t, 170, 30)
	l.start(t)
	c.converged(t, 200)

	// Every node restarts from its own disk.
	for _, n := range c.nodes {
		n.stop(t)
	}
	for _, n := range c.nodes {
		n.start(t)
	}
	c.apply(t, 200, 10)
	c.converged(t, 210)
	c.sameLogs(t)
	for _, n := range c.nodes {
		if d, w := n.logs.DurableIndex(), n.logs.log.WrittenIndex(); d+16 < w {
			t.Errorf("%s: durable index %d far behind written %d with a 5ms flush interval", n.id, d, w)
		}
	}
}

// sameLogs checks that every entry each node's log holds is stored at its
// own index, with the term and data the other nodes hold at that index.
func (c *cluster) sameLogs(t *testing.T) {
	t.Helper()
	byIndex := map[uint64]raft.Log{}
	for _, n := range c.nodes {
		first, _ := n.logs.FirstIndex()
		last, _ := n.logs.LastIndex()
		if first == 0 {
			t.Fatalf("%s holds no entries", n.id)
		}
		for i := first; i <= last; i++ {
			var e raft.Log
			if err := n.logs.GetLog(i, &e); err != nil {
				t.Fatalf("%s: GetLog(%d): %v", n.id, i, err)
			}
			if e.Index != i {
				t.Fatalf("%s: entry %d read back with index %d", n.id, i, e.Index)
			}
			if o, ok := byIndex[i]; ok && (o.Term != e.Term || o.Type != e.Type || string(o.Data) != string(e.Data)) {
				t.Fatalf("%s: entry %d is term %d %q, another node holds term %d %q", n.id, i, e.Term, e.Data, o.Term, o.Data)
			}
			byIndex[i] = e
		}
	}
}
