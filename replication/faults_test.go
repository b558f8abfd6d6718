package replication

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/kvtest"
)

// In-process clusters over Raft's in-memory transport, with directed links
// that the tests cut and slow down: Raft's own faults (partitions, a
// removed or transferred leader, members coming and going) without
// processes or sockets. Writes go to whichever node leads; kvd's cluster
// calls (a leader's confirmations, forwarded writes) travel on the same
// links (inmemCaller).

// linkTransport is an in-memory transport whose outgoing calls wait for
// the link's delay. It declines pipelining, so that every AppendEntries
// goes through AppendEntries.
type linkTransport struct {
	*raft.InmemTransport
	net *inmemNet
}

func (t *linkTransport) wait(target raft.ServerAddress) {
	if d := t.net.delay(t.LocalAddr(), target); d > 0 {
		time.Sleep(d)
	}
}

func (t *linkTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

func (t *linkTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, a *raft.AppendEntriesRequest, r *raft.AppendEntriesResponse) error {
	t.wait(target)
	err := t.InmemTransport.AppendEntries(id, target, a, r)
	if err == nil {
		t.net.holdResponse(t.LocalAddr(), target, false)
	}
	return err
}

func (t *linkTransport) RequestVote(id raft.ServerID, target raft.ServerAddress, a *raft.RequestVoteRequest, r *raft.RequestVoteResponse) error {
	t.wait(target)
	return t.InmemTransport.RequestVote(id, target, a, r)
}

// inmemCaller makes a node's cluster calls on the test cluster's network:
// a call on a cut link is lost (it fails after its timeout), and its
// answer is held like an AppendEntries answer while the link's responses
// are held.
type inmemCaller struct {
	c    *faultCluster
	from raft.ServerAddress
}

func (k inmemCaller) call(addr string, op byte, payload []byte, timeout time.Duration) ([]byte, error) {
	to := raft.ServerAddress(addr)
	link := [2]raft.ServerAddress{k.from, to}
	k.c.net.mu.Lock()
	node := k.c.nodes[addr] // a node's address is its ID
	lost := node == nil || k.c.net.cut[link] || k.c.net.cut[[2]raft.ServerAddress{to, k.from}]
	if lost {
		k.c.net.lost[link]++
	}
	k.c.net.mu.Unlock()
	if lost {
		time.Sleep(timeout)
		k.c.net.mu.Lock()
		k.c.net.lost[link]--
		k.c.net.mu.Unlock()
		return nil, fmt.Errorf("call %s: %w", addr, errSentNoAnswer)
	}
	if op == opTerm {
		k.c.net.termCalls.Add(1)
	}
	resp, err := node.handle(op, payload)
	k.c.net.holdResponse(k.from, to, true)
	if err != nil {
		return nil, callError(statusOf(err), err.Error())
	}
	return resp, nil
}

// inmemNet is the network of a test cluster: every node's transport, and
// the directed links that are cut or slow.
type inmemNet struct {
	mu     sync.Mutex
	trans  map[raft.ServerAddress]*linkTransport
	cut    map[[2]raft.ServerAddress]bool
	delays map[[2]raft.ServerAddress]time.Duration
	// holds: a link's AppendEntries and cluster call responses are kept
	// from their sender until the channel is closed (answers in flight on
	// a paused node); held counts those waiting.
	holds     map[[2]raft.ServerAddress]chan struct{}
	held      map[[2]raft.ServerAddress]int
	heldCalls map[[2]raft.ServerAddress]int // of held, the cluster calls'
	// lost counts the cluster calls on a cut link waiting for their
	// timeout.
	lost map[[2]raft.ServerAddress]int
	// termCalls counts the leaders' questions (opTerm) answered.
	termCalls atomic.Int64
}

// holdResponse keeps an answered AppendEntries or cluster call (call)
// from its sender while the link's responses are held.
func (n *inmemNet) holdResponse(from, to raft.ServerAddress, call bool) {
	link := [2]raft.ServerAddress{from, to}
	n.mu.Lock()
	ch := n.holds[link]
	if ch != nil {
		n.held[link]++
		if call {
			n.heldCalls[link]++
		}
	}
	n.mu.Unlock()
	if ch == nil {
		return
	}
	<-ch
	n.mu.Lock()
	n.held[link]--
	if call {
		n.heldCalls[link]--
	}
	n.mu.Unlock()
}

// hold starts holding the responses on the links from one node to others;
// release lets them through.
func (n *inmemNet) hold(from raft.ServerAddress, to ...raft.ServerAddress) (release func()) {
	ch := make(chan struct{})
	n.mu.Lock()
	for _, b := range to {
		n.holds[[2]raft.ServerAddress{from, b}] = ch
	}
	n.mu.Unlock()
	return func() {
		n.mu.Lock()
		for _, b := range to {
			delete(n.holds, [2]raft.ServerAddress{from, b})
		}
		n.mu.Unlock()
		close(ch)
	}
}

func (n *inmemNet) heldOn(from, to raft.ServerAddress) (all, calls int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	link := [2]raft.ServerAddress{from, to}
	return n.held[link], n.heldCalls[link]
}

func (n *inmemNet) delay(from, to raft.ServerAddress) time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.delays[[2]raft.ServerAddress{from, to}]
}

// rewire connects every pair of transports whose link is not cut.
func (n *inmemNet) rewire() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for a, ta := range n.trans {
		ta.DisconnectAll()
		for b, tb := range n.trans {
			if a != b && !n.cut[[2]raft.ServerAddress{a, b}] {
				ta.Connect(b, tb.InmemTransport)
			}
		}
	}
}

type faultCluster struct {
	t     *testing.T
	tune  func(id string, cfg *Config) // nil, or changes a node's configuration
	base  string
	net   *inmemNet
	dirs  map[string]string
	nodes map[string]*Node
}

func newFaultCluster(t *testing.T, n int) *faultCluster { return newFaultClusterWith(t, n, nil) }

// newFaultClusterWith starts a cluster whose nodes' configurations tune
// changes.
func newFaultClusterWith(t *testing.T, n int, tune func(id string, cfg *Config)) *faultCluster {
	// The directories first: cleanups run last-registered first, and the
	// nodes must stop before their directories go.
	c := &faultCluster{t: t, tune: tune, base: t.TempDir(), dirs: map[string]string{}, nodes: map[string]*Node{},
		net: &inmemNet{trans: map[raft.ServerAddress]*linkTransport{}, cut: map[[2]raft.ServerAddress]bool{}, delays: map[[2]raft.ServerAddress]time.Duration{},
			holds: map[[2]raft.ServerAddress]chan struct{}{}, held: map[[2]raft.ServerAddress]int{}, heldCalls: map[[2]raft.ServerAddress]int{},
			lost: map[[2]raft.ServerAddress]int{}}}
	t.Cleanup(func() {
		for _, node := range c.nodes {
			node.Close()
		}
	})
	for i := range n {
		c.start(fmt.Sprintf("n%d", i+1), i == 0)
	}
	l := c.leader()
	for i := 1; i < n; i++ {
		id := fmt.Sprintf("n%d", i+1)
		if err := l.AddVoter(id, id); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// start starts (or restarts) node id; the first one bootstraps.
func (c *faultCluster) start(id string, bootstrap bool) *Node {
	c.t.Helper()
	if c.dirs[id] == "" {
		c.dirs[id] = filepath.Join(c.base, id)
	}
	_, it := raft.NewInmemTransport(raft.ServerAddress(id))
	tr := &linkTransport{InmemTransport: it, net: c.net}
	c.net.mu.Lock()
	c.net.trans[raft.ServerAddress(id)] = tr
	c.net.mu.Unlock()
	c.net.rewire()
	cfg := testNodeConfig(c.dirs[id])
	cfg.NodeID, cfg.Bootstrap, cfg.transport = id, bootstrap, tr
	cfg.caller = inmemCaller{c, raft.ServerAddress(id)}
	if c.tune != nil {
		c.tune(id, &cfg)
	}
	node, err := Open(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.net.mu.Lock() // the writers read c.nodes under it
	c.nodes[id] = node
	c.net.mu.Unlock()
	return node
}

// stop stops node id and takes it off the network.
func (c *faultCluster) stop(id string) {
	c.t.Helper()
	if err := c.nodes[id].Close(); err != nil {
		c.t.Logf("close %s: %v", id, err)
	}
	c.net.mu.Lock()
	delete(c.nodes, id)
	delete(c.net.trans, raft.ServerAddress(id))
	c.net.mu.Unlock()
	c.net.rewire()
}

// leader waits for a node that leads and has applied a command of its term.
func (c *faultCluster) leader() *Node {
	c.t.Helper()
	var l *Node
	kvtest.Eventually(c.t, 20*time.Second, "a leader", func() bool {
		for _, n := range c.nodes {
			if n.IsLeader() && n.readyTerm.Load() == n.raft.CurrentTerm() {
				l = n
				return true
			}
		}
		return false
	})
	return l
}

// isolate cuts every link to and from the nodes in ids from the others.
func (c *faultCluster) isolate(ids ...string) {
	in := map[raft.ServerAddress]bool{}
	for _, id := range ids {
		in[raft.ServerAddress(id)] = true
	}
	c.net.mu.Lock()
	for a := range c.net.trans {
		for b := range c.net.trans {
			if in[a] != in[b] {
				c.net.cut[[2]raft.ServerAddress{a, b}] = true
			}
		}
	}
	c.net.mu.Unlock()
	c.net.rewire()
}

func (c *faultCluster) heal() {
	c.net.mu.Lock()
	clear(c.net.cut)
	clear(c.net.delays)
	c.net.mu.Unlock()
	c.net.rewire()
}

// faultWriter writes unique keys to whichever node leads, recording what
// was acknowledged.
type faultWriter struct {
	mu      sync.Mutex
	acked   map[string]uint64 // key → revision
	failed  atomic.Int64
	stop    chan struct{}
	wg      sync.WaitGroup
	cluster *faultCluster
}

func (c *faultCluster) write(writers int) *faultWriter {
	w := &faultWriter{acked: map[string]uint64{}, stop: make(chan struct{}), cluster: c}
	for i := range writers {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for seq := 0; ; seq++ {
				select {
				case <-w.stop:
					return
				default:
				}
				var l *Node
				c.net.mu.Lock() // start and stop change c.nodes under it
				for _, n := range c.nodes {
					if n.IsLeader() {
						l = n
					}
				}
				c.net.mu.Unlock()
				if l == nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				key := fmt.Sprintf("w%d-%d", i, seq)
				var b engine.Batch
				b.Put([]byte(key), []byte(key))
				b.SetTimestamp(time.Now().UnixMilli())
				d := seq%2 == 0
				o, err := l.apply(b.Bytes(), map[bool]byte{true: SyncFlag, false: 0}[d])
				if err != nil {
					w.failed.Add(1)
					time.Sleep(5 * time.Millisecond)
					continue
				}
				w.mu.Lock()
				w.acked[key] = o.Revision
				w.mu.Unlock()
			}
		}()
	}
	return w
}

func (w *faultWriter) finish() {
	close(w.stop)
	w.wg.Wait()
	if len(w.acked) == 0 {
		w.cluster.t.Fatalf("no write was acknowledged (%d failed)", w.failed.Load())
	}
}

// converge heals the network and checks, once every node has applied the
// same revision: every acknowledged write is on every node at its
// revision, the nodes' states hash alike, and their logs hold the same
// entries.
func (c *faultCluster) converge(w *faultWriter) {
	t := c.t
	t.Helper()
	c.heal()
	l := c.leader()
	if err := l.Sync(); err != nil { // commits a barrier of the last term
		t.Fatal(err)
	}
	want := l.db.WrittenRevision()
	applied := kvtest.WaitFor(30*time.Second, 10*time.Millisecond, func() bool {
		for _, n := range c.nodes {
			if n.db.WrittenRevision() != want {
				return false
			}
		}
		return true
	})
	if !applied {
		for id, n := range c.nodes {
			st := n.raft.Stats()
			t.Logf("%s: revision %d, %s in term %s, last log index %s, commit index %s, applied index %s", id, n.db.WrittenRevision(), st["state"], st["term"], st["last_log_index"], st["commit_index"], st["applied_index"])
		}
		t.Fatalf("timed out waiting for every node to apply revision %d", want)
	}
	revs := map[uint64]string{}
	for key, rev := range w.acked {
		if other, dup := revs[rev]; dup {
			t.Fatalf("revision %d acknowledged for %s and %s", rev, other, key)
		}
		revs[rev] = key
	}
	var hashes []string
	for id, n := range c.nodes {
		for key, rev := range w.acked {
			e, err := n.db.GetEntry([]byte(key))
			if err != nil || e.ModRevision != rev {
				t.Fatalf("%s: acknowledged write %s at revision %d: got revision %d, %v", id, key, rev, e.ModRevision, err)
			}
		}
		kvs, err := n.db.Scan(engine.ScanOptions{})
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		for _, kv := range kvs {
			e, _ := n.db.GetEntry(kv.Key)
			fmt.Fprintf(h, "%q=%q@%d/%d;", kv.Key, kv.Value, e.CreateRevision, e.ModRevision)
		}
		hashes = append(hashes, fmt.Sprintf("%x", h.Sum(nil)))
	}
	for _, h := range hashes[1:] {
		if h != hashes[0] {
			t.Fatalf("the nodes' states differ: %v", hashes)
		}
	}
	c.sameLogs()
}

// sameLogs checks that the nodes' logs hold the same entries at every index
// they all hold, up to the commit index.
func (c *faultCluster) sameLogs() {
	t := c.t
	var first, last uint64
	for _, n := range c.nodes {
		f, _ := n.logs.FirstIndex()
		l := n.raft.CommitIndex()
		first, last = max(first, f), min(l, last)
		if last == 0 {
			last = l
		}
	}
	var ref *Node
	for _, n := range c.nodes {
		if ref == nil {
			ref = n
			continue
		}
		for i := first; i <= last; i++ {
			var a, b raft.Log
			// A snapshot may compact either log meanwhile: compare the
			// entries both still hold.
			errA, errB := ref.logs.GetLog(i, &a), n.logs.GetLog(i, &b)
			if errors.Is(errA, raft.ErrLogNotFound) || errors.Is(errB, raft.ErrLogNotFound) {
				continue
			}
			if err := errors.Join(errA, errB); err != nil {
				t.Fatalf("entry %d: %v", i, err)
			}
			if a.Term != b.Term || a.Type != b.Type || !bytes.Equal(a.Data, b.Data) || !bytes.Equal(a.Extensions, b.Extensions) {
				t.Fatalf("entry %d differs: %s has term %d type %v, %s has term %d type %v", i, ref.ID(), a.Term, a.Type, n.ID(), b.Term, b.Type)
			}
		}
	}
}

// TestFaultLeaderPartition: the leader of three is cut off while writes
// run; the other two elect a leader and go on; after healing, the old
// leader's uncommitted entries are replaced and every node converges.
func TestFaultLeaderPartition(t *testing.T) {
	c := newFaultCluster(t, 3)
	w := c.write(4)
	time.Sleep(300 * time.Millisecond)
	old := c.leader()
	c.isolate(old.ID())
	kvtest.Eventually(t, 20*time.Second, "a new leader on the majority side", func() bool {
		for id, n := range c.nodes {
			if id != old.ID() && n.IsLeader() {
				return true
			}
		}
		return false
	})
	time.Sleep(300 * time.Millisecond)
	w.finish()
	c.converge(w)
}

// TestFaultMinorityLeader: five nodes split three / two with the leader
// among the two; writes go on with the three, and all converge after.
func TestFaultMinorityLeader(t *testing.T) {
	c := newFaultCluster(t, 5)
	w := c.write(4)
	time.Sleep(300 * time.Millisecond)
	l := c.leader()
	var other string
	for id := range c.nodes {
		if id != l.ID() {
			other = id
			break
		}
	}
	c.isolate(l.ID(), other)
	kvtest.Eventually(t, 20*time.Second, "a leader among the three", func() bool {
		for id, n := range c.nodes {
			if id != l.ID() && id != other && n.IsLeader() {
				return true
			}
		}
		return false
	})
	time.Sleep(300 * time.Millisecond)
	w.finish()
	c.converge(w)
}

// TestFaultSlowLinks: links from the leader slowed down while writes run;
// nothing is lost and the nodes converge.
func TestFaultSlowLinks(t *testing.T) {
	c := newFaultCluster(t, 3)
	l := c.leader()
	c.net.mu.Lock()
	for a := range c.net.trans {
		if a != raft.ServerAddress(l.ID()) {
			c.net.delays[[2]raft.ServerAddress{raft.ServerAddress(l.ID()), a}] = 30 * time.Millisecond
		}
	}
	c.net.mu.Unlock()
	w := c.write(4)
	time.Sleep(500 * time.Millisecond)
	w.finish()
	c.converge(w)
}

// TestFaultMembership: under writes, the leader is removed (another takes
// over), two members join, one leaves, and the leadership is transferred
// to a named member; every acknowledged write survives on every member.
func TestFaultMembership(t *testing.T) {
	c := newFaultCluster(t, 3)
	w := c.write(4)
	time.Sleep(200 * time.Millisecond)

	l := c.leader()
	if err := l.RemoveServer(l.ID()); err != nil {
		t.Fatal(err)
	}
	kvtest.Eventually(t, 20*time.Second, "a leader after removing the old one", func() bool {
		for id, n := range c.nodes {
			if id != l.ID() && n.IsLeader() {
				return true
			}
		}
		return false
	})
	c.stop(l.ID())

	for _, id := range []string{"n4", "n5"} {
		c.start(id, false)
		if err := c.leader().AddVoter(id, id); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	var gone string
	for id, n := range c.nodes {
		if !n.IsLeader() {
			gone = id
			break
		}
	}
	if err := c.leader().RemoveServer(gone); err != nil {
		t.Fatal(err)
	}
	c.stop(gone)

	var to string
	for id, n := range c.nodes {
		if !n.IsLeader() {
			to = id
			break
		}
	}
	if err := c.leader().TransferLeadership(to); err != nil && !errors.Is(err, raft.ErrLeadershipTransferInProgress) {
		t.Fatal(err)
	}
	kvtest.Eventually(t, 20*time.Second, to+" to lead", func() bool { return c.nodes[to].IsLeader() })
	time.Sleep(200 * time.Millisecond)
	w.finish()
	if ms, err := c.leader().Members(); err != nil || len(ms) != 3 {
		t.Fatalf("members after the changes: %+v, %v; want 3", ms, err)
	}
	c.converge(w)
}

// TestDeposedLeaderReadIndex: a leader whose followers' answers were in
// flight when it stopped hearing from them (a paused process, a slow
// network) must not count those answers, sent before a read, as a quorum
// confirming its leadership for the read. n3 leads with a lease of 8 s;
// its followers' answers (AppendEntries, and the confirmation of a first
// read) are held while it is cut off; n1 and n2 elect a leader and commit
// a write; n3, still leading in its own view, is asked for a second
// linearizable read, then the held answers reach it. The second read must
// fail or see the write. It fails with raft.VerifyLeader as the
// confirmation (it counts the held AppendEntries answers), and with a
// confirmation that a read may join once under way (the first read's).
func TestDeposedLeaderReadIndex(t *testing.T) {
	c := newFaultClusterWith(t, 3, func(id string, cfg *Config) {
		d := 2 * time.Second
		if id == "n3" {
			// The paused leader: it keeps its lease longer than the
			// others take to elect a leader.
			d = 8 * time.Second
			cfg.ApplyTimeout = 3 * time.Second
		}
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = d, d, d
	})
	old := c.nodes["n3"]
	kvtest.Eventually(t, 30*time.Second, "n3 leading", func() bool {
		if old.IsLeader() {
			return old.readyTerm.Load() == old.raft.CurrentTerm()
		}
		for _, n := range c.nodes {
			if n.IsLeader() {
				if err := n.TransferLeadership("n3"); err != nil {
					t.Logf("transfer to n3: %v", err)
				}
			}
		}
		return false
	})

	release := c.net.hold("n3", "n1", "n2")
	var once sync.Once
	t.Cleanup(func() { once.Do(release) }) // the nodes close only once their answers go
	first := make(chan error, 1)
	go func() { first <- old.Barrier(true) }()
	start := time.Now()
	kvtest.Eventually(t, 10*time.Second, "AppendEntries answers to n3 held on each link, and the first read's confirmation", func() bool {
		all1, calls1 := c.net.heldOn("n3", "n1")
		all2, calls2 := c.net.heldOn("n3", "n2")
		// A confirmation that makes no cluster calls (VerifyLeader's)
		// is given a second.
		return all1 > calls1 && all2 > calls2 && (calls1 > 0 && calls2 > 0 || time.Since(start) > time.Second)
	})
	c.isolate("n3")
	var nl *Node
	kvtest.Eventually(t, 20*time.Second, "a leader among n1 and n2", func() bool {
		for _, id := range []string{"n1", "n2"} {
			if n := c.nodes[id]; n.IsLeader() && n.readyTerm.Load() == n.raft.CurrentTerm() {
				nl = n
				return true
			}
		}
		return false
	})
	var b engine.Batch
	b.Put([]byte("k"), []byte("new"))
	b.SetTimestamp(time.Now().UnixMilli())
	o, err := nl.apply(b.Bytes(), SyncFlag)
	if err != nil {
		t.Fatal(err)
	}
	if !old.IsLeader() {
		t.Fatal("n3 stepped down before the read: the test's timing did not hold")
	}

	read := make(chan error, 1)
	go func() { read <- old.Barrier(true) }()
	time.Sleep(200 * time.Millisecond) // the read waits for its confirmation
	once.Do(release)
	time.Sleep(200 * time.Millisecond) // the held answers arrive
	c.heal()
	// The first read began before the write: it may or may not see it.
	t.Logf("the first read, begun before the write: %v", <-first)
	if err := <-read; err != nil {
		t.Logf("the read on the deposed leader failed, as it may: %v", err)
		return
	}
	e, err := old.db.GetEntry([]byte("k"))
	if err != nil || e.ModRevision != o.Revision {
		t.Fatalf("stale read: the deposed leader confirmed a linearizable read without the write at revision %d (it has revision %d, %v)", o.Revision, e.ModRevision, err)
	}
}

// TestConfirmationAsksAnotherVoter: a leader confirms a read with as few
// questions as a quorum needs, the voter that answered first last time
// asked first; when that voter stops answering, the leader asks the others
// after confirmHedge, and the read goes on with their answers while the
// question to the silent voter still waits for its timeout (2 s here).
func TestConfirmationAsksAnotherVoter(t *testing.T) {
	c := newFaultClusterWith(t, 3, func(id string, cfg *Config) {
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 2*time.Second, 2*time.Second, 2*time.Second
	})
	l := c.leader()
	if err := l.Barrier(true); err != nil {
		t.Fatal(err)
	}
	fast, _ := l.fastVoter.Load().(string)
	if fast == "" || fast == string(l.id) {
		t.Fatalf("first voter to answer: %q", fast)
	}
	link := [2]raft.ServerAddress{raft.ServerAddress(l.id), raft.ServerAddress(fast)}
	c.net.mu.Lock()
	c.net.cut[link] = true
	c.net.mu.Unlock()
	c.net.rewire()
	if err := l.Barrier(true); err != nil {
		t.Fatal(err)
	}
	c.net.mu.Lock()
	waiting := c.net.lost[link]
	c.net.mu.Unlock()
	if waiting == 0 {
		t.Fatalf("the read returned after the question to %s, which does not answer, timed out: it waited for it", fast)
	}
	if now, _ := l.fastVoter.Load().(string); now == fast || now == "" {
		t.Fatalf("first voter to answer after %s stopped: %q", fast, now)
	}
}

// TestFollowerVouchesForLeader: a follower asking the leader for a read
// index gives its term, and when the two make a quorum the leader asks no
// other voter. A read index asked with a term other than the leader's, in
// the leader's own name, a nonvoter's or that of a node not in the
// configuration makes the leader ask.
func TestFollowerVouchesForLeader(t *testing.T) {
	c := newFaultCluster(t, 3)
	l := c.leader()
	var f *Node
	for _, n := range c.nodes {
		if n != l {
			f = n
			break
		}
	}
	learner := c.start("n4", false)
	if err := l.AddNonvoter("n4", "n4"); err != nil {
		t.Fatal(err)
	}
	rev := put(t, l.Store(Linearizable), "k", "v", engine.DurabilitySync)
	// Nothing else reads: every question counted is one of these.
	asked := func(what string, read func() error) int64 {
		t.Helper()
		before := c.net.termCalls.Load()
		if err := read(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return c.net.termCalls.Load() - before
	}
	if n := asked("a follower's read", func() error { return f.Barrier(true) }); n != 0 {
		t.Errorf("a follower's read made the leader ask %d questions; want none", n)
	}
	if e, err := f.db.GetEntry([]byte("k")); err != nil || e.ModRevision != rev {
		t.Fatalf("the follower's read index did not cover the write at revision %d: %+v, %v", rev, e, err)
	}
	if n := asked("a nonvoter's read", func() error { return learner.Barrier(true) }); n == 0 {
		t.Error("a nonvoter's read was confirmed without a question")
	}
	term := l.raft.CurrentTerm()
	for _, tc := range []struct {
		name string
		id   raft.ServerID
		term uint64
	}{
		{"an earlier term", f.id, term - 1},
		{"a later term", f.id, term + 1},
		{"the leader's own ID", l.id, term},
		{"a nonvoter's ID", learner.id, term},
		{"an ID not in the configuration", "n9", term},
	} {
		p := appendBytes(binary.AppendUvarint([]byte{1}, tc.term), []byte(tc.id))
		if n := asked(tc.name, func() error { _, err := l.handle(opReadIndex, p); return err }); n == 0 {
			t.Errorf("a read index asked with %s was confirmed without a question", tc.name)
		}
	}
	p := appendBytes(binary.AppendUvarint([]byte{1}, term), []byte(f.id))
	if n := asked("the follower's term", func() error { _, err := l.handle(opReadIndex, p); return err }); n != 0 {
		t.Errorf("a read index asked with the follower's term made %d questions; want none", n)
	}
	if _, err := l.handle(opReadIndex, []byte{1, 0x80}); err == nil {
		t.Error("a malformed read index call was answered")
	}
}
