package replication

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/wal"
)

// Errors of a cluster node.
var (
	// ErrNoLeader: the cluster has no leader that this node knows of (an
	// election is under way, or no quorum is reachable). Nothing was
	// executed.
	ErrNoLeader = errors.New("replication: no leader")
	// ErrLeadershipLost: the write was sent to a leader that lost its
	// leadership, or stopped answering, before it was known committed: it
	// may or may not have been executed. It wraps engine.ErrOutcomeUnknown.
	ErrLeadershipLost = errors.New("replication: leadership lost before the write was known committed")
	// errNotLeader: the node asked is not the leader (any more).
	errNotLeader = errors.New("replication: not the leader")
)

// Flags in the first byte of a command entry's Extensions.
const (
	// flagNoop marks a command that applies nothing: a leader's first
	// command of its term, which its reads wait for, and the barrier of
	// Sync. It gets no revision.
	flagNoop = 2
)

// logCacheEntries is how many of the newest log entries Raft keeps in
// memory (raft.LogCache), so that sending and applying them does not read
// them back from the log file.
const logCacheEntries = 1024

// Config configures a cluster node.
type Config struct {
	// Dir is the node's data directory: its state file, and raft/ for its
	// Raft log, term and vote, and node ID.
	Dir string
	// NodeID names the node in the cluster. Empty: the ID kept in
	// Dir/raft/node-id, or a new random one, kept there.
	NodeID string
	// Listen is the cluster port's address (Raft and kvd's cluster calls);
	// Advertise the address other nodes reach it at (default: the address
	// listened on).
	Listen, Advertise string
	// ServerTLS, if set, puts the cluster port on TLS; it should require
	// and verify client certificates, so that only members connect.
	// DialTLS is then how the node dials the others' cluster ports: it
	// should present the node's certificate and verify theirs. Both or
	// neither.
	ServerTLS, DialTLS *tls.Config
	// Bootstrap starts a new cluster of this node alone, unless the node
	// already has Raft state.
	Bootstrap bool
	// Join lists cluster addresses of members: a node without Raft state
	// asks them, until one answers, to add it as a voter. A node that
	// has Raft state and finds itself at another address in the cluster's
	// configuration (it restarted on a new address) asks them, then the
	// members of that configuration, to readdress it (announceAddress).
	Join []string
	// Engine holds the state machine's options. CommitMode and
	// FlushInterval are the cluster's commit mode and the Raft log's
	// flush interval.
	Engine engine.Options
	// HeartbeatTimeout, ElectionTimeout and LeaderLeaseTimeout override
	// hashicorp/raft's defaults (1 s, 1 s, 500 ms) when not zero.
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout time.Duration
	// SnapshotThreshold is how many entries the log holds beyond the last
	// snapshot before a node takes another (default 65,536), checked every
	// SnapshotInterval (default 2 minutes); TrailingLogs how many entries
	// it keeps below a snapshot, for followers a little behind (default
	// 10,240). A snapshot is the state file (KVDSNAP, see engine.Snapshot):
	// a follower too far behind, or a new member, is sent one instead of
	// the entries the log no longer holds.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// StateCheckInterval is how often the leader compares the members'
	// states (see CheckState); default 10 minutes, negative: never.
	StateCheckInterval time.Duration
	// ApplyTimeout bounds a write's wait for the leader (forwarding, a
	// full queue) and a read's for its read index. Default 10 s.
	ApplyTimeout time.Duration
	// Logger receives the node's messages; nil discards them. RaftLog
	// receives hashicorp/raft's own (warnings and errors, in its format);
	// nil discards them.
	Logger  *slog.Logger
	RaftLog io.Writer

	// transport, set by in-process tests, replaces the cluster port with
	// Raft's transport, and caller makes the cluster calls: without one,
	// such a node's cluster calls fail (a follower cannot forward writes
	// or ask for read indexes, a leader cannot confirm its leadership).
	transport raft.Transport
	caller    caller
}

// caller makes kvd's cluster calls to other nodes: peers over the cluster
// port, or a test's.
type caller interface {
	call(addr string, op byte, payload []byte, timeout time.Duration) ([]byte, error)
}

// Node is one member of a kvd cluster: a Raft node whose log is kvd's
// write-ahead log (LogStore) and whose state machine is an engine replica.
type Node struct {
	cfg       Config
	log       *slog.Logger
	id        raft.ServerID
	advertise string

	db     *engine.DB
	dbp    atomic.Pointer[engine.DB] // db, for the log's hooks, which run before it is set
	logs   *LogStore
	stable *StableStore
	snaps  raft.SnapshotStore
	trans  raft.Transport
	mux    *mux
	raft   *raft.Raft
	peers  peers
	calls  caller // &peers, or Config.caller
	// confirmWait bounds a call of a leader's confirmation: Raft's
	// heartbeat timeout.
	confirmWait time.Duration
	fastVoter   atomic.Value // string: the voter that answered a confirmation first last time

	mode atomic.Int32 // default engine.CommitMode

	// gather queues the leader's writes of each kind (async, sync) while
	// an entry of that kind is in flight (gather.go).
	gather [2]gatherer

	// fsmIndex is the index of the last entry the state machine went
	// through (applied, skipped, or a configuration); fsmCh is closed and
	// replaced each time it moves.
	fsmMu    sync.Mutex
	fsmIndex uint64
	fsmCh    chan struct{}

	readyTerm atomic.Uint64 // the term whose first command this leader applied

	clientAddrs atomic.Pointer[ClientAddrs] // this node's, SetClientAddrs
	leaderAddrs atomic.Pointer[leaderClientAddrs]

	// The state check (statecheck.go): this node's latest hashes, and the
	// latest report of the checks it ran as leader.
	hmu             sync.Mutex
	hashes          []hashResult
	lastCheck       *StateCheck
	stateChecks     atomic.Uint64
	stateMismatches atomic.Uint64

	expiredRemoved atomic.Uint64 // expired keys this node removed as leader
	leaderChanges  atomic.Uint64 // leader changes observed
	observer       *raft.Observer

	// confirms coalesces the leader's checks of its leadership,
	// readIndexes a node's linearizable read indexes (a follower's calls
	// to the leader).
	confirms    coalescer[struct{}]
	readIndexes coalescer[uint64]

	// raftUp is closed once raft is set: the cluster port serves calls
	// from then on.
	raftUp    chan struct{}
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Open starts the node: it opens the state file and the Raft log in
// cfg.Dir, listens on the cluster port, and bootstraps or joins a cluster
// as cfg says.
func Open(cfg Config) (*Node, error) {
	if cfg.Listen == "" && cfg.transport == nil {
		return nil, errors.New("replication: a cluster node needs a listen address")
	}
	if (cfg.ServerTLS == nil) != (cfg.DialTLS == nil) {
		return nil, errors.New("replication: ServerTLS and DialTLS go together")
	}
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = 10 * time.Second
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	n := &Node{cfg: cfg, log: logger, fsmCh: make(chan struct{}), stop: make(chan struct{}), raftUp: make(chan struct{})}
	for i := range n.gather {
		n.gather[i].commit, n.gather[i].maxWait = n.commitGathered, maxGatherWait
	}
	n.confirms.fn = n.confirmQuorum
	n.readIndexes.fn = func() (uint64, error) { return n.readIndex(true) }
	n.mode.Store(int32(cfg.Engine.CommitMode))
	n.calls = &n.peers
	if cfg.caller != nil {
		n.calls = cfg.caller
	}
	raftDir := filepath.Join(cfg.Dir, "raft")
	if err := os.MkdirAll(raftDir, 0o750); err != nil {
		return nil, fmt.Errorf("replication: create %s: %w", raftDir, err)
	}
	id, err := nodeID(raftDir, cfg.NodeID)
	if err != nil {
		return nil, err
	}
	n.id = raft.ServerID(id)

	ok := false
	defer func() {
		if !ok {
			close(n.stop)
			if n.mux != nil {
				n.mux.close()
			}
			n.closeStores()
		}
	}()
	// The Raft log takes the engine's log options.
	walOpts := wal.Options{FlushInterval: cfg.Engine.FlushInterval, FlushBytes: cfg.Engine.FlushBytes,
		SegmentSize: cfg.Engine.SegmentSize, GroupCommitDelay: cfg.Engine.GroupCommitDelay,
		Preallocate: cfg.Engine.Preallocate, Logger: logger,
		// Change feeds that deliver durable revisions only move on.
		OnDurable: func(uint64) {
			if db := n.dbp.Load(); db != nil {
				db.LogDurable()
			}
		}}
	if n.snaps, err = raft.NewFileSnapshotStoreWithLogger(raftDir, 1, hclog.NewNullLogger()); err != nil {
		return nil, fmt.Errorf("replication: snapshot store: %w", err)
	}
	// The log must hold the entries after the newest snapshot; those below
	// it may have been compacted away.
	from := uint64(1)
	if metas, err := n.snaps.List(); err != nil {
		return nil, fmt.Errorf("replication: list snapshots: %w", err)
	} else if len(metas) > 0 {
		from = metas[0].Index + 1
	}
	if n.logs, err = OpenLogStore(filepath.Join(raftDir, "log"), from, walOpts); err != nil {
		return nil, err
	}
	if n.stable, err = OpenStableStore(filepath.Join(raftDir, "stable")); err != nil {
		return nil, err
	}
	engOpts := cfg.Engine
	engOpts.Logger = logger
	if n.db, err = engine.OpenReplica(cfg.Dir, engOpts, n.logs); err != nil {
		return nil, err
	}
	n.dbp.Store(n.db)
	n.fsmIndex = n.db.AppliedIndex()
	n.logs.SetApplied(n.db.AppliedIndex)

	if cfg.transport != nil {
		n.trans, n.advertise = cfg.transport, string(cfg.transport.LocalAddr())
	} else if err := n.listen(&cfg); err != nil {
		return nil, err
	}

	rc := raft.DefaultConfig()
	rc.LocalID = n.id
	rc.NoSnapshotRestoreOnStart = true // the state file is the state machine
	// Not BatchApplyCh: a write queued in its buffer when the leader
	// shuts down (removed from the cluster, say) is never answered, and
	// its writer would wait for ever.
	rc.SnapshotThreshold, rc.SnapshotInterval, rc.TrailingLogs = 65536, 2*time.Minute, 10240
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = cfg.SnapshotInterval
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	rc.Logger = hclog.NewNullLogger()
	if cfg.RaftLog != nil {
		rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: cfg.RaftLog})
	}
	if cfg.HeartbeatTimeout > 0 {
		rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	}
	if cfg.ElectionTimeout > 0 {
		rc.ElectionTimeout = cfg.ElectionTimeout
	}
	if cfg.LeaderLeaseTimeout > 0 {
		rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	}
	n.confirmWait = rc.HeartbeatTimeout
	if err := n.restoreNewerSnapshot(); err != nil {
		return nil, err
	}
	existing, err := raft.HasExistingState(n.logs, n.stable, n.snaps)
	if err != nil {
		return nil, fmt.Errorf("replication: read raft state: %w", err)
	}
	// Raft reads each entry back from its log store: the leader to send it
	// to the followers, a follower to apply it. A cache of the newest
	// entries spares those reads (and their decoding).
	logs, err := raft.NewLogCache(logCacheEntries, n.logs)
	if err != nil {
		return nil, err
	}
	if n.raft, err = raft.NewRaft(rc, (*fsm)(n), logs, n.stable, n.snaps, n.trans); err != nil {
		return nil, fmt.Errorf("replication: start raft: %w", err)
	}
	close(n.raftUp)
	ok = true
	switch {
	case existing:
		if cfg.Bootstrap || len(cfg.Join) > 0 {
			n.log.Info("replication: node has raft state; --bootstrap is ignored, --join used only if it moved", "id", id)
		}
		n.wg.Add(1)
		go n.announceAddress(cfg.Join)
	case cfg.Bootstrap:
		f := n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: n.id, Address: raft.ServerAddress(n.advertise)}}})
		if err := f.Error(); err != nil {
			n.Close()
			return nil, fmt.Errorf("replication: bootstrap: %w", err)
		}
	case len(cfg.Join) > 0:
		n.wg.Add(1)
		go n.joinLoop(cfg.Join)
	}
	obs := make(chan raft.Observation, 16)
	n.observer = raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(n.observer)
	n.wg.Add(2)
	go n.watchLeadership()
	go func() {
		defer n.wg.Done()
		for {
			select {
			case <-n.stop:
				return
			case <-obs:
				n.leaderChanges.Add(1)
			}
		}
	}()
	n.log.Info("replication: node started", "id", id, "cluster", n.advertise, "existing_state", existing)
	return n, nil
}

// listen opens the cluster port: the mux that carries Raft's transport and
// the cluster calls.
func (n *Node) listen(cfg *Config) error {
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("replication: listen on %s: %w", cfg.Listen, err)
	}
	if cfg.Advertise == "" {
		cfg.Advertise = ln.Addr().String()
	}
	n.advertise = cfg.Advertise
	adv, err := net.ResolveTCPAddr("tcp", cfg.Advertise)
	if err != nil {
		ln.Close()
		return fmt.Errorf("replication: advertise address %q: %w", cfg.Advertise, err)
	}
	if adv.IP == nil || adv.IP.IsUnspecified() {
		ln.Close()
		return fmt.Errorf("replication: advertise address %q: other nodes need an address they can reach", cfg.Advertise)
	}
	if cfg.ServerTLS != nil {
		ln = tls.NewListener(ln, cfg.ServerTLS)
	}
	n.mux = newMux(ln, adv, cfg.DialTLS, n.log, n.serveCluster)
	n.peers.local = n.mux.local
	n.peers.tls = cfg.DialTLS
	n.trans = serialTransport{raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  raftLayer{n.mux},
		MaxPool: 4,
		Timeout: 10 * time.Second,
		Logger:  hclog.NewNullLogger(),
	})}
	return nil
}

// serialTransport is Raft's network transport without its heartbeat fast
// path: every RPC, heartbeats too, reaches Raft's main goroutine.
//
// hashicorp/raft v1.7.2 handles a heartbeat on the transport's goroutine,
// and a heartbeat from a newer leader sets the node's term there while
// its leader loop may be appending a write: the write is then stored with
// the new term, at an index where the new leader has another entry of
// that term. Raft's log matching no longer holds, and the old leader keeps
// and applies its own entry when it follows the new one (hashicorp/raft
// issue #695, "Data divergence (Safety violation) due to Async
// Heartbeat"). TestPauseLeader (tests/cluster) caught it: after a SIGSTOP
// of the leader, its log held at index 22 a write in the new term where
// the others had the new leader's no-op, and it applied 1 to 4 more
// revisions than they did, in 8 of 600 rounds; none of 200 after this.
// The second window (a new leader's replication set up with a
// term that a heartbeat changed meanwhile) closes with the same change:
// in v1.7.2 the heartbeat handler is the only caller of setCurrentTerm
// off the main goroutine (the others: NewRaft before it starts any, and
// bootstrap, the candidate's election and vote counting, and the handlers
// of appendEntries, requestVote and installSnapshot, all on it).
// On the main goroutine a heartbeat waits behind the RPC being handled:
// an A/B of cluster SETs showed no cost, and the long run of every
// cluster scenario (elections under kill -9, pauses, partitions) passed
// with it (README, "Cluster faults, tested").
type serialTransport struct{ *raft.NetworkTransport }

// SetHeartbeatHandler ignores the handler: see serialTransport.
func (serialTransport) SetHeartbeatHandler(func(raft.RPC)) {}

// nodeID returns the node's ID: given, else kept in dir/node-id, else a
// new random one, kept there (an address change is not an identity change).
func nodeID(dir, given string) (string, error) {
	path := filepath.Join(dir, "node-id")
	kept, err := os.ReadFile(path)
	switch {
	case err == nil:
		k := strings.TrimSpace(string(kept))
		if given != "" && given != k {
			return "", fmt.Errorf("replication: --node-id %q, but this data directory belongs to node %q", given, k)
		}
		return k, nil
	case !errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("replication: read node ID: %w", err)
	}
	id := given
	if id == "" {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		id = hex.EncodeToString(b[:])
	}
	if err := wal.WriteFileDurably(path, []byte(id+"\n"), 0o640); err != nil {
		return "", fmt.Errorf("replication: keep node ID: %w", err)
	}
	return id, nil
}

// ID returns the node's ID; ClusterAddr the address other nodes reach it at.
func (n *Node) ID() string          { return string(n.id) }
func (n *Node) ClusterAddr() string { return n.advertise }

// DB returns the node's state machine, for reads.
func (n *Node) DB() *engine.DB { return n.db }

// Leader returns the leader's ID and cluster address, empty if unknown.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// IsLeader reports whether this node is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// watchLeadership applies a no-op command at the start of each term this
// node leads: linearizable reads wait until it is applied (see readIndex).
func (n *Node) watchLeadership() {
	defer n.wg.Done()
	ch := n.raft.LeaderCh()
	for {
		select {
		case <-n.stop:
			return
		case leader := <-ch:
			if leader {
				n.wg.Add(3)
				go func() {
					defer n.wg.Done()
					n.becomeReady()
				}()
				go func() {
					defer n.wg.Done()
					n.checkStates()
				}()
				go func() {
					defer n.wg.Done()
					n.removeExpired()
				}()
			}
		}
	}
}

func (n *Node) becomeReady() {
	for n.IsLeader() {
		term := n.raft.CurrentTerm()
		f := n.raft.ApplyLog(raft.Log{Data: nil, Extensions: []byte{flagNoop}}, n.cfg.ApplyTimeout)
		if err := f.Error(); err == nil {
			if n.raft.CurrentTerm() == term {
				n.readyTerm.Store(term)
			}
			return
		}
		select {
		case <-n.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// expirySweep is how often a leader looks for expired keys to remove.
const expirySweep = 100 * time.Millisecond

// removeExpired runs while this node leads: it removes the expired keys
// that reads and the sweep find, with a batch of compare-and-deletes on
// the mod revisions seen, through the log like any write, so that every
// node removes the same keys at the same revision (a key written again
// meanwhile stays).
func (n *Node) removeExpired() {
	t := time.NewTicker(expirySweep)
	defer t.Stop()
	for n.IsLeader() {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		keys := n.db.SweepExpired()
		if len(keys) == 0 {
			continue
		}
		var b engine.Batch
		for _, k := range keys {
			b.CompareAndDelete(k.Key, k.ModRevision)
		}
		b.SetTimestamp(time.Now().UnixMilli())
		o, err := n.apply(b.Bytes(), 0)
		if err != nil {
			continue // found again later
		}
		removed := 0
		for _, r := range o.Results {
			if r.Applied {
				removed++
			}
		}
		n.expiredRemoved.Add(uint64(removed))
	}
}

// ---- the state machine ----

// fsm is the Node as Raft's state machine. Its Apply, Snapshot and
// Restore run on Raft's state machine goroutine, one at a time.
type fsm Node

// applied is the answer of the state machine to a command.
type applied struct {
	o   engine.Outcome
	err error
}

func (f *fsm) Apply(l *raft.Log) any {
	n := (*Node)(f)
	defer n.advance(l.Index)
	if len(l.Extensions) > 0 && l.Extensions[0]&flagNoop != 0 {
		if l.Extensions[0]&flagHash != 0 {
			n.startHash(l.Index)
		}
		return applied{}
	}
	if len(l.Extensions) > 0 && l.Extensions[0]&flagMulti != 0 {
		return n.applyMulti(l)
	}
	o, err := n.db.ApplyEntry(l.Index, l.Data)
	if errors.Is(err, engine.ErrAlreadyApplied) {
		// Applied before a restart: the state file holds it.
		return applied{err: err}
	}
	if err != nil && !errors.Is(err, engine.ErrBadBatch) {
		n.log.Error("replication: apply failed", "index", l.Index, "err", err)
	}
	return applied{o: o, err: err}
}

// StoreConfiguration makes the node a raft.ConfigurationStore, so that the
// index of a configuration entry reaches fsmIndex too.
func (f *fsm) StoreConfiguration(index uint64, _ raft.Configuration) { (*Node)(f).advance(index) }

// Snapshot captures the state machine, cheaply (engine.ReplicaSnapshot:
// the memtables' entries and a read transaction of the state file), with
// the log index it holds in the snapshot's metadata; Persist streams it.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	s, index, err := f.db.ReplicaSnapshot()
	if err != nil {
		return nil, err
	}
	if err := s.SetMetadata(binary.BigEndian.AppendUint64(nil, index)); err != nil {
		s.Close()
		return nil, err
	}
	return fsmSnapshot{s}, nil
}

// Restore replaces the state machine with a snapshot from the leader (a
// follower too far behind, a new member) or from the store at start.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	n := (*Node)(f)
	// Raft deletes the whole log after installing a snapshot: not a
	// divergence, though the state machine then holds every entry.
	n.logs.expectWipe()
	info, err := n.db.RestoreReplica(rc, snapshotIndex)
	if err != nil {
		return err
	}
	n.advance(n.db.AppliedIndex())
	n.log.Info("replication: installed a snapshot", "revision", info.Revision, "index", n.db.AppliedIndex())
	return nil
}

// snapshotIndex reads the log index from a snapshot's metadata.
func snapshotIndex(meta []byte) (uint64, error) {
	if len(meta) != 8 {
		return 0, fmt.Errorf("replication: snapshot metadata of %d bytes, want the 8 of a log index", len(meta))
	}
	return binary.BigEndian.Uint64(meta), nil
}

type fsmSnapshot struct{ s *engine.Snapshot }

func (s fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.s.WriteTo(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s fsmSnapshot) Release() { s.s.Close() }

// restoreNewerSnapshot runs at start: if the newest snapshot holds more
// than the state file (a restart after the log below the snapshot was
// compacted, before the state file caught up), the state file is
// restored from it, since Raft applies only the entries after a snapshot.
func (n *Node) restoreNewerSnapshot() error {
	metas, err := n.snaps.List()
	if err != nil || len(metas) == 0 {
		return err
	}
	if metas[0].Index <= n.db.AppliedIndex() {
		return nil
	}
	_, rc, err := n.snaps.Open(metas[0].ID)
	if err != nil {
		return fmt.Errorf("replication: open snapshot %s: %w", metas[0].ID, err)
	}
	defer rc.Close()
	if _, err := n.db.RestoreReplica(rc, snapshotIndex); err != nil {
		return fmt.Errorf("replication: restore the state from snapshot %s: %w", metas[0].ID, err)
	}
	n.fsmIndex = n.db.AppliedIndex()
	return nil
}

func (n *Node) advance(index uint64) {
	n.fsmMu.Lock()
	if index > n.fsmIndex {
		n.fsmIndex = index
		close(n.fsmCh)
		n.fsmCh = make(chan struct{})
	}
	n.fsmMu.Unlock()
}

// waitApplied waits until the state machine has gone through index.
func (n *Node) waitApplied(index uint64, timeout time.Duration) error {
	return n.waitFSM("index", index, timeout, func() uint64 {
		n.fsmMu.Lock()
		defer n.fsmMu.Unlock()
		return n.fsmIndex
	})
}

// waitRevision waits until the state machine has applied revision rev.
func (n *Node) waitRevision(rev uint64, timeout time.Duration) error {
	return n.waitFSM("revision", rev, timeout, n.db.WrittenRevision)
}

// waitFSM waits until at() reaches want, woken each time the state machine
// moves (fsmCh), for at most timeout.
func (n *Node) waitFSM(what string, want uint64, timeout time.Duration, at func() uint64) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		n.fsmMu.Lock()
		ch := n.fsmCh
		n.fsmMu.Unlock()
		if at() >= want {
			return nil
		}
		select {
		case <-ch:
		case <-t.C:
			return fmt.Errorf("replication: timed out waiting to apply %s %d (at %d)", what, want, at())
		case <-n.stop:
			return engine.ErrClosed
		}
	}
}

// ---- writes ----

// apply proposes an encoded batch on the leader (this node) as an entry
// of its own and returns its outcome once committed and applied here.
func (n *Node) apply(data []byte, flags byte) (engine.Outcome, error) {
	f := n.raft.ApplyLog(raft.Log{Data: data, Extensions: []byte{flags}}, n.cfg.ApplyTimeout)
	if err := applyError(f.Error()); err != nil {
		return engine.Outcome{}, err
	}
	return outcome(f.Index(), f.Response().(applied))
}

// applyError says what Raft's error for a proposed entry means for the
// writes in it.
func applyError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// Not appended: another leader will take it.
		return errNotLeader
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w: %w", ErrLeadershipLost, engine.ErrOutcomeUnknown)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("replication: the leader's queue is full: %w", engine.ErrWriteRefused)
	case errors.Is(err, raft.ErrRaftShutdown):
		return engine.ErrClosed
	}
	return err
}

// outcome is a write's outcome from what the state machine returned for
// it in the entry at index.
func outcome(index uint64, r applied) (engine.Outcome, error) {
	if errors.Is(r.err, engine.ErrAlreadyApplied) {
		// Cannot happen for a new entry: the state file is behind the log.
		return engine.Outcome{}, fmt.Errorf("replication: entry %d was applied before it was proposed: %w", index, engine.ErrOutcomeUnknown)
	}
	return r.o, r.err
}

// Propose commits an encoded batch through the leader, forwarding it when
// this node is not the leader, and returns its outcome. sync asks for a
// quorum to have fsynced it before it counts as committed.
func (n *Node) Propose(data []byte, sync bool) (engine.Outcome, error) {
	flags := commandFlags(sync)
	return onLeader(n, func() (engine.Outcome, error) { return n.propose(data, flags) }, opApply, append([]byte{flags}, data...), decodeOutcome)
}

// commandFlags is the first byte of a write's Extensions: SyncFlag when
// it asks for a quorum to fsync it.
func commandFlags(sync bool) byte {
	if sync {
		return SyncFlag
	}
	return 0
}

// ProposeAsync is Propose without the wait: done is called with the
// outcome, on another goroutine. On the leader the write joins the
// gathering (gather.go) and no goroutine waits for it; on a follower, or
// when the leader turns out not to be this node, a goroutine makes
// Propose's call.
func (n *Node) ProposeAsync(data []byte, sync bool, done func(engine.Outcome, error)) {
	if n.IsLeader() {
		n.proposeAsync(data, commandFlags(sync), func(o engine.Outcome, err error) {
			if errors.Is(err, errNotLeader) {
				go func() { done(n.Propose(data, sync)) }()
				return
			}
			done(o, err)
		})
		return
	}
	go func() { done(n.Propose(data, sync)) }()
}

// Sync returns once a quorum has fsynced every entry committed before the
// call: a sync-flagged no-op through the leader.
func (n *Node) Sync() error {
	_, err := onLeader(n, func() (struct{}, error) {
		_, err := n.apply(nil, flagNoop|SyncFlag)
		return struct{}{}, err
	}, opSync, nil, func([]byte) (struct{}, error) { return struct{}{}, nil })
	return err
}

// onLeader runs local on the leader, or makes the call op on the leader
// when this node is not it, retrying while the leader changes, within the
// apply timeout.
func onLeader[T any](n *Node, local func() (T, error), op byte, payload []byte, decode func([]byte) (T, error)) (T, error) {
	var zero T
	deadline := time.Now().Add(n.cfg.ApplyTimeout)
	for {
		var err error
		if n.IsLeader() {
			var v T
			if v, err = local(); err == nil {
				return v, nil
			}
		} else if _, addr := n.Leader(); addr == "" {
			err = ErrNoLeader
		} else {
			var resp []byte
			if resp, err = n.calls.call(addr, op, payload, time.Until(deadline)); err == nil {
				return decode(resp)
			}
			if errors.Is(err, errSentNoAnswer) && op == opApply {
				return zero, fmt.Errorf("%w: %w: %w", ErrLeadershipLost, engine.ErrOutcomeUnknown, err)
			}
		}
		// A leader that could not be reached (errNotSent) did nothing:
		// retried, and CLUSTERDOWN in the end, as when there is no leader.
		if !errors.Is(err, errNotLeader) && !errors.Is(err, ErrNoLeader) && !errors.Is(err, errSentNoAnswer) && !errors.Is(err, errNotSent) {
			return zero, err
		}
		if time.Now().After(deadline) {
			if errors.Is(err, errNotLeader) || errors.Is(err, errNotSent) {
				err = fmt.Errorf("%w: %w", ErrNoLeader, err)
			}
			return zero, err
		}
		select {
		case <-n.stop:
			return zero, engine.ErrClosed
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ---- reads ----

// ReadIndex returns an index that a linearizable read must wait for this
// node to apply: the leader's commit index, confirmed by a quorum still
// following it. With verify false, the leader does not confirm its
// leadership (the leader consistency level: it may be stale while a
// deposed leader has not noticed). Concurrent linearizable reads share a
// read index that was asked for after they began.
func (n *Node) ReadIndex(verify bool) (uint64, error) {
	if verify {
		return n.readIndexes.do()
	}
	return n.readIndex(false)
}

func (n *Node) readIndex(verify bool) (uint64, error) {
	payload := []byte{0}
	if verify {
		// The term this node is in now, after the reads this index serves
		// began: the leader counts it as this voter's answer to its
		// confirmation (leaderReadIndex).
		payload[0] = 1
		payload = binary.AppendUvarint(payload, n.raft.CurrentTerm())
		payload = appendBytes(payload, []byte(n.id))
	}
	return onLeader(n, func() (uint64, error) { return n.leaderReadIndex(verify, nil) }, opReadIndex, payload,
		func(p []byte) (uint64, error) {
			d := &decoder{p: p}
			i := d.uvarint()
			return i, d.err
		})
}

// vouch is a voter's term, taken after the reads it asks for began: in the
// leader's term, it is that voter's answer to the leader's confirmation.
type vouch struct {
	id   raft.ServerID
	term uint64
}

// leaderReadIndex returns the commit index for a linearizable read
// (confirmed by a quorum if verify). A follower asking for its reads may
// vouch for the leader: when the leader and it make a quorum (three
// voters), the leader asks no one else. That is the answer the leader
// would have got from it to opTerm, only given earlier, still after its
// reads began (see confirmLeadership).
func (n *Node) leaderReadIndex(verify bool, v *vouch) (uint64, error) {
	term := n.raft.CurrentTerm()
	if !n.IsLeader() {
		return 0, errNotLeader
	}
	if n.readyTerm.Load() != n.raft.CurrentTerm() {
		// This leader has not yet applied a command of its term: its
		// commit index may lag the previous leader's.
		if err := n.waitReady(); err != nil {
			return 0, err
		}
	}
	index := n.raft.CommitIndex()
	if verify && !n.vouched(term, v) {
		if err := n.confirmLeadership(); err != nil {
			if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
				return 0, errNotLeader
			}
			return 0, err
		}
	}
	return index, nil
}

// vouched reports whether v, with this leader in its term, makes a quorum.
func (n *Node) vouched(term uint64, v *vouch) bool {
	if v == nil || v.term != term || v.id == n.id {
		return false
	}
	voters, self, other := 0, false, false
	for _, s := range n.raft.GetConfiguration().Configuration().Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		self = self || s.ID == n.id
		other = other || s.ID == v.id
	}
	return self && other && 2 >= voters/2+1
}

func (n *Node) waitReady() error {
	deadline := time.Now().Add(n.cfg.ApplyTimeout)
	for n.readyTerm.Load() != n.raft.CurrentTerm() {
		if !n.IsLeader() {
			return errNotLeader
		}
		if time.Now().After(deadline) {
			return ErrNoLeader
		}
		select {
		case <-n.stop:
			return engine.ErrClosed
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// confirmLeadership confirms that a quorum still follows this leader:
// asked after the call began, a quorum of the voters is in this leader's
// term. Reads that ask while a confirmation is under way share the next
// one.
//
// Why that suffices (the Raft paper's read index, section 6.4 of Ongaro's
// thesis): a write acknowledged before the read began was committed by a
// leader whose term a quorum had reached before then; terms only grow, and
// any two quorums share a voter, so a quorum answering this leader's term
// after the read began means that no later term had a leader before it
// began, and this leader's commit index (taken before asking, after it
// applied a command of its term) holds the write.
//
// Not raft.VerifyLeader: it counts any AppendEntries answer that arrives
// after it starts, also answers to requests sent before, when the leader
// may already have been deposed (answers that waited in the socket of a
// paused process, or on a slow link), and then confirms a deposed leader.
// Each call here is sent after the confirmation began, and its answer read
// from its own connection. A follower's term carried by its read index
// call (vouch) is such an answer too: taken after its reads began.
// TestDeposedLeaderReadIndex fails with VerifyLeader, and with a read that
// shares a confirmation begun before it.
func (n *Node) confirmLeadership() error {
	_, err := n.confirms.do()
	return err
}

// confirmQuorum asks the other voters for their term (opTerm) until a
// quorum, this node with them, answers this leader's term, a voter answers
// a later one, or the apply timeout passes. It asks as many as a quorum
// needs first, the one that answered first last time among them, and the
// others too if one fails or confirmHedge passes without a quorum: on
// three nodes, one question per confirmation rather than two.
func (n *Node) confirmQuorum() (struct{}, error) {
	term := n.raft.CurrentTerm()
	if !n.IsLeader() || n.raft.CurrentTerm() != term {
		return struct{}{}, errNotLeader
	}
	var others []string
	voters, self := 0, 0
	fast, _ := n.fastVoter.Load().(string)
	for _, s := range n.raft.GetConfiguration().Configuration().Servers {
		switch {
		case s.Suffrage != raft.Voter:
		case s.ID == n.id:
			voters, self = voters+1, 1
		default:
			voters++
			others = append(others, string(s.Address))
			if string(s.Address) == fast {
				last := len(others) - 1
				others[0], others[last] = others[last], others[0]
			}
		}
	}
	need := voters/2 + 1 - self // answers from others that make a quorum
	if need <= 0 {
		return struct{}{}, nil
	}
	type answer struct {
		addr string
		term uint64 // 0: no answer
	}
	deadline := time.Now().Add(n.cfg.ApplyTimeout)
	for {
		answers := make(chan answer, len(others))
		asked := 0
		ask := func() {
			addr := others[asked]
			asked++
			go func() {
				var t uint64
				if p, err := n.calls.call(addr, opTerm, nil, n.confirmWait); err == nil {
					d := &decoder{p: p}
					if t = d.uvarint(); d.err != nil {
						t = 0
					}
				}
				answers <- answer{addr, t}
			}()
		}
		for asked < need {
			ask()
		}
		hedge := time.NewTimer(confirmHedge)
		got, pending := 0, asked
		for got < need && pending > 0 {
			select {
			case a := <-answers:
				pending--
				switch {
				case a.term == term:
					if got == 0 {
						n.fastVoter.Store(a.addr)
					}
					got++
				case a.term > term:
					// A later term began: another leader may be elected.
					hedge.Stop()
					return struct{}{}, errNotLeader
				case asked < len(others):
					ask()
					pending++
				}
			case <-hedge.C:
				for asked < len(others) {
					ask()
					pending++
				}
			}
		}
		hedge.Stop()
		if got >= need {
			return struct{}{}, nil
		}
		if !n.IsLeader() || n.raft.CurrentTerm() != term {
			return struct{}{}, errNotLeader
		}
		if time.Now().After(deadline) {
			return struct{}{}, fmt.Errorf("replication: a quorum did not confirm this leader within %v: %w", n.cfg.ApplyTimeout, ErrNoLeader)
		}
		select {
		case <-n.stop:
			return struct{}{}, engine.ErrClosed
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// confirmHedge is how long a confirmation waits for the voters it asked
// first before it asks the others as well.
const confirmHedge = 5 * time.Millisecond

// coalescer runs fn for concurrent callers, who share its result: a caller
// joins the next run, which starts after it asked (never one already under
// way), so that what it returns is as recent as the call. One run goes on
// at a time: two at once cost more CPU than the waits they save (measured
// with linearizable GETs on a 3-node cluster).
type coalescer[T any] struct {
	fn      func() (T, error)
	mu      sync.Mutex
	next    *sharedCall[T]
	running bool
}

type sharedCall[T any] struct {
	done chan struct{}
	v    T
	err  error
}

func (c *coalescer[T]) do() (T, error) {
	c.mu.Lock()
	if c.next == nil {
		c.next = &sharedCall[T]{done: make(chan struct{})}
	}
	call := c.next
	if !c.running {
		c.running = true
		go c.run()
	}
	c.mu.Unlock()
	<-call.done
	return call.v, call.err
}

func (c *coalescer[T]) run() {
	for {
		c.mu.Lock()
		call := c.next
		c.next = nil
		if call == nil {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		call.v, call.err = c.fn()
		close(call.done)
	}
}

// Barrier makes a read linearizable: it returns once this node has
// applied every write committed before the call. With verify false (the
// leader level) the leader does not confirm its leadership first.
func (n *Node) Barrier(verify bool) error {
	index, err := n.ReadIndex(verify)
	if err != nil {
		return err
	}
	return n.waitApplied(index, n.cfg.ApplyTimeout)
}

// ErrCatchingUp: the node has not yet applied what the leader has
// committed (Ready).
var ErrCatchingUp = errors.New("replication: catching up with the leader")

// Ready returns nil once the node can serve linearizable reads at once: it
// has not diverged, a leader confirms its leadership, and this node has
// applied the leader's commit index. Else it says why.
func (n *Node) Ready() error {
	if err := n.Diverged(); err != nil {
		return err
	}
	index, err := n.ReadIndex(true)
	if err != nil {
		return err
	}
	// The leader's commit index may hold entries committed in the last
	// round (a write's, a state check's) that a node which has the rest
	// applies within a round trip: it is ready.
	if n.waitApplied(index, readyWait) != nil {
		n.fsmMu.Lock()
		applied := n.fsmIndex
		n.fsmMu.Unlock()
		return fmt.Errorf("%w: applied index %d of the leader's commit index %d", ErrCatchingUp, applied, index)
	}
	return nil
}

// readyWait is how long Ready waits for this node to apply the leader's
// commit index.
const readyWait = 250 * time.Millisecond

// ---- membership ----

func (n *Node) joinLoop(addrs []string) {
	defer n.wg.Done()
	payload := appendBytes(appendBytes(nil, []byte(n.id)), []byte(n.advertise))
	backoff := 100 * time.Millisecond
	for {
		for _, a := range addrs {
			if _, err := n.calls.call(a, opJoin, payload, 5*time.Second); err == nil {
				n.log.Info("replication: joined the cluster", "through", a)
				return
			} else {
				n.log.Warn("replication: join failed; retrying", "through", a, "err", err)
			}
		}
		select {
		case <-n.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// announceAddress runs at the start of a node with Raft state: if the
// configuration it knows has it at another address than the one it now
// advertises (it moved), it asks join's addresses and the other members',
// until one answers, to give it its new address, keeping its ID and
// suffrage: an address change is not an identity change.
func (n *Node) announceAddress(join []string) {
	defer n.wg.Done()
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	var self *raft.Server
	others := append([]string(nil), join...)
	for _, s := range f.Configuration().Servers {
		if s.ID == n.id {
			self = &s
		} else {
			others = append(others, string(s.Address))
		}
	}
	if self == nil || string(self.Address) == n.advertise {
		return
	}
	n.log.Info("replication: this node moved; telling the cluster", "id", n.id, "was", self.Address, "now", n.advertise)
	var payload []byte
	op := opJoin
	if self.Suffrage == raft.Voter {
		payload = appendBytes(appendBytes(nil, []byte(n.id)), []byte(n.advertise))
	} else {
		op = opMember
		payload = appendBytes(appendBytes([]byte{memberNonvoter}, []byte(n.id)), []byte(n.advertise))
	}
	backoff := 100 * time.Millisecond
	for {
		for _, a := range others {
			if _, err := n.calls.call(a, op, payload, 5*time.Second); err == nil {
				n.log.Info("replication: the cluster has this node's new address", "through", a)
				return
			}
		}
		select {
		case <-n.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// AddVoter adds (or readdresses) a voting member, through the leader.
func (n *Node) AddVoter(id, addr string) error {
	payload := appendBytes(appendBytes(nil, []byte(id)), []byte(addr))
	_, err := onLeader(n, func() (struct{}, error) { return struct{}{}, n.addVoter(id, addr) }, opJoin, payload,
		func([]byte) (struct{}, error) { return struct{}{}, nil })
	return err
}

func (n *Node) addVoter(id, addr string) error {
	if !n.IsLeader() {
		return errNotLeader
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == raft.ServerID(id) && s.Address == raft.ServerAddress(addr) && s.Suffrage == raft.Voter {
			return nil // a voter already
		}
		if s.Address == raft.ServerAddress(addr) && s.ID != raft.ServerID(id) {
			// Another ID at that address: a node rebuilt in place.
			if err := n.raft.RemoveServer(s.ID, 0, n.cfg.ApplyTimeout).Error(); err != nil {
				return err
			}
		}
	}
	err := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, n.cfg.ApplyTimeout).Error()
	if errors.Is(err, raft.ErrNotLeader) {
		return errNotLeader
	}
	return err
}

// RemoveServer removes a member, through the leader.
func (n *Node) RemoveServer(id string) error {
	_, err := onLeader(n, func() (struct{}, error) {
		if !n.IsLeader() {
			return struct{}{}, errNotLeader
		}
		err := n.raft.RemoveServer(raft.ServerID(id), 0, n.cfg.ApplyTimeout).Error()
		if errors.Is(err, raft.ErrNotLeader) {
			err = errNotLeader
		}
		return struct{}{}, err
	}, opRemove, []byte(id), func([]byte) (struct{}, error) { return struct{}{}, nil })
	return err
}

// Kinds of membership change for opMember.
const (
	memberNonvoter byte = 1
	memberDemote   byte = 2
)

// AddNonvoter adds a member that receives the log but does not vote: a
// read replica, or a new node to promote (AddVoter) once it caught up.
func (n *Node) AddNonvoter(id, addr string) error {
	return n.changeMember(memberNonvoter, id, addr)
}

// Demote makes a voter a nonvoter.
func (n *Node) Demote(id string) error { return n.changeMember(memberDemote, id, "") }

func (n *Node) changeMember(kind byte, id, addr string) error {
	payload := appendBytes(appendBytes([]byte{kind}, []byte(id)), []byte(addr))
	_, err := onLeader(n, func() (struct{}, error) { return struct{}{}, n.changeMemberLocal(kind, id, addr) }, opMember, payload,
		func([]byte) (struct{}, error) { return struct{}{}, nil })
	return err
}

func (n *Node) changeMemberLocal(kind byte, id, addr string) error {
	if !n.IsLeader() {
		return errNotLeader
	}
	var f raft.IndexFuture
	switch kind {
	case memberNonvoter:
		f = n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, n.cfg.ApplyTimeout)
	case memberDemote:
		f = n.raft.DemoteVoter(raft.ServerID(id), 0, n.cfg.ApplyTimeout)
	default:
		return fmt.Errorf("replication: unknown membership change %d", kind)
	}
	err := f.Error()
	if errors.Is(err, raft.ErrNotLeader) {
		err = errNotLeader
	}
	return err
}

// TransferLeadership hands the leadership to the member id, or to the
// most up-to-date follower when id is empty.
func (n *Node) TransferLeadership(id string) error {
	_, err := onLeader(n, func() (struct{}, error) { return struct{}{}, n.transferLocal(id) }, opTransfer, []byte(id),
		func([]byte) (struct{}, error) { return struct{}{}, nil })
	return err
}

func (n *Node) transferLocal(id string) error {
	if !n.IsLeader() {
		return errNotLeader
	}
	if id == "" {
		return n.raft.LeadershipTransfer().Error()
	}
	ms, err := n.Members()
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.ID == id {
			if m.Leader {
				return nil
			}
			return n.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(m.Address)).Error()
		}
	}
	return fmt.Errorf("replication: no member %q", id)
}

// Member is one member of the cluster's configuration.
type Member struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
	Leader  bool   `json:"leader"`
}

// Members returns the cluster's configuration as this node knows it.
func (n *Node) Members() ([]Member, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	_, leader := n.raft.LeaderWithID()
	var ms []Member
	for _, s := range f.Configuration().Servers {
		ms = append(ms, Member{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter, Leader: s.ID == leader})
	}
	return ms, nil
}

// Diverged returns ErrDiverged, with what was found, once this node has
// found that it holds applied entries the cluster does not: it then
// refuses reads and writes until it is rebuilt.
func (n *Node) Diverged() error { return n.logs.Diverged() }

// Status is a node's view of the cluster.
type Status struct {
	ID            string        `json:"id"`
	Address       string        `json:"address"`
	State         string        `json:"state"`
	Term          uint64        `json:"term"`
	LeaderID      string        `json:"leader_id"`
	LeaderAddress string        `json:"leader_address"`
	CommitIndex   uint64        `json:"commit_index"`
	AppliedIndex  uint64        `json:"applied_index"`
	LastIndex     uint64        `json:"last_index"`
	DurableIndex  uint64        `json:"durable_index"`
	Revision      uint64        `json:"applied_revision"`
	LastContact   time.Duration `json:"last_contact_ns"`
	LeaderChanges uint64        `json:"leader_changes"`
	Diverged      string        `json:"diverged,omitempty"`
	Members       []Member      `json:"members"`
	// StateCheck is the latest comparison of the members' states this
	// node ran as leader (CheckState), if any.
	StateCheck *StateCheck `json:"state_check,omitempty"`
}

// Status returns the node's view of the cluster.
func (n *Node) Status() Status {
	lid, laddr := n.Leader()
	n.fsmMu.Lock()
	applied := n.fsmIndex
	n.fsmMu.Unlock()
	s := Status{
		ID: string(n.id), Address: n.advertise, State: n.raft.State().String(), Term: n.raft.CurrentTerm(),
		LeaderID: lid, LeaderAddress: laddr, CommitIndex: n.raft.CommitIndex(), AppliedIndex: applied,
		LastIndex: n.raft.LastIndex(), DurableIndex: n.logs.DurableIndex(), Revision: n.db.WrittenRevision(),
		LeaderChanges: n.leaderChanges.Load(),
	}
	if !n.IsLeader() {
		if lc := n.raft.LastContact(); !lc.IsZero() {
			s.LastContact = time.Since(lc)
		}
	}
	s.Members, _ = n.Members()
	if err := n.Diverged(); err != nil {
		s.Diverged = err.Error()
	}
	s.StateCheck = n.lastStateCheck()
	return s
}

// ClientAddrs are the addresses clients reach a node at.
type ClientAddrs struct {
	RESP string `json:"resp"`
	HTTP string `json:"http,omitempty"`
}

type leaderClientAddrs struct {
	id    string
	addrs ClientAddrs
}

// SetClientAddrs sets the addresses clients reach this node at, which
// other nodes give clients they redirect to it (LeaderClientAddrs).
func (n *Node) SetClientAddrs(a ClientAddrs) { n.clientAddrs.Store(&a) }

// LeaderClientAddrs returns the addresses clients reach the leader at,
// and whether this node is the leader (then it returns its own). The
// leader is asked once per leader.
func (n *Node) LeaderClientAddrs() (ClientAddrs, bool, error) {
	if n.IsLeader() {
		if a := n.clientAddrs.Load(); a != nil {
			return *a, true, nil
		}
		return ClientAddrs{}, true, nil
	}
	id, addr := n.Leader()
	if addr == "" {
		return ClientAddrs{}, false, ErrNoLeader
	}
	if c := n.leaderAddrs.Load(); c != nil && c.id == id {
		return c.addrs, false, nil
	}
	p, err := n.calls.call(addr, opAddrs, nil, n.cfg.ApplyTimeout)
	if err != nil {
		return ClientAddrs{}, false, err
	}
	var a ClientAddrs
	if err := json.Unmarshal(p, &a); err != nil {
		return ClientAddrs{}, false, fmt.Errorf("replication: the leader's client addresses: %w", err)
	}
	n.leaderAddrs.Store(&leaderClientAddrs{id: id, addrs: a})
	return a, false, nil
}

// ---- the cluster calls' server ----

func (n *Node) serveCluster(c net.Conn) {
	defer c.Close()
	// The port listens before Raft starts: calls wait for it.
	select {
	case <-n.raftUp:
	case <-n.stop:
		return
	}
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	for {
		op, p, err := readFrame(r)
		if err != nil {
			return
		}
		resp, err := n.handle(op, p)
		status := statusOK
		if err != nil {
			status, resp = statusOf(err), []byte(err.Error())
		}
		if err := writeFrame(w, status, resp); err != nil {
			return
		}
	}
}

func (n *Node) handle(op byte, p []byte) ([]byte, error) {
	switch op {
	case opApply:
		if len(p) < 1 {
			return nil, errors.New("replication: empty apply call")
		}
		if !n.IsLeader() {
			return nil, errNotLeader
		}
		o, err := n.propose(p[1:], p[0])
		if err != nil {
			return nil, err
		}
		return encodeOutcome(nil, o), nil
	case opReadIndex:
		var v *vouch
		if len(p) > 1 {
			d := &decoder{p: p[1:]}
			term, id := d.uvarint(), d.bytes()
			if d.err != nil {
				return nil, errors.New("replication: malformed read index call")
			}
			v = &vouch{raft.ServerID(id), term}
		}
		i, err := n.leaderReadIndex(len(p) > 0 && p[0] == 1, v)
		if err != nil {
			return nil, err
		}
		return binaryUvarint(i), nil
	case opSync:
		if !n.IsLeader() {
			return nil, errNotLeader
		}
		_, err := n.apply(nil, flagNoop|SyncFlag)
		return nil, err
	case opJoin:
		d := &decoder{p: p}
		id, addr := string(d.bytes()), string(d.bytes())
		if d.err != nil || id == "" || addr == "" {
			return nil, errors.New("replication: malformed join call")
		}
		if !n.IsLeader() {
			// Joins go through: the joiner may know any member.
			return nil, n.AddVoter(id, addr)
		}
		return nil, n.addVoter(id, addr)
	case opRemove:
		if !n.IsLeader() {
			return nil, errNotLeader
		}
		return nil, n.RemoveServer(string(p))
	case opStatus:
		return json.Marshal(n.Status())
	case opMember:
		if len(p) < 1 {
			return nil, errors.New("replication: malformed membership call")
		}
		d := &decoder{p: p[1:]}
		id, addr := string(d.bytes()), string(d.bytes())
		if d.err != nil || id == "" {
			return nil, errors.New("replication: malformed membership call")
		}
		return nil, n.changeMemberLocal(p[0], id, addr)
	case opTransfer:
		return nil, n.transferLocal(string(p))
	case opTerm:
		// A leader confirming its leadership (confirmQuorum).
		return binaryUvarint(n.raft.CurrentTerm()), nil
	case opStateHash:
		i, k := binary.Uvarint(p)
		if k <= 0 {
			return nil, errors.New("replication: malformed state hash call")
		}
		return json.Marshal(n.localHash(i))
	case opAddrs:
		a := n.clientAddrs.Load()
		if a == nil {
			return nil, errors.New("replication: this node's client addresses are not known yet")
		}
		return json.Marshal(a)
	}
	return nil, fmt.Errorf("replication: unknown cluster call %d", op)
}

func binaryUvarint(i uint64) []byte { return binary.AppendUvarint(nil, i) }

// ---- shutdown ----

// Close stops the node: Raft first (a leader hands its leadership over
// first), then its state machine, which checkpoints, then its log.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		if n.raft != nil && n.IsLeader() {
			if err := n.raft.LeadershipTransfer().Error(); err != nil {
				n.log.Info("replication: leadership transfer before shutdown failed", "err", err)
			} else {
				id, _ := n.Leader()
				n.log.Info("replication: leadership transferred before shutdown", "to", id)
			}
		}
		close(n.stop)
		if n.observer != nil {
			n.raft.DeregisterObserver(n.observer)
		}
		var errs []error
		if n.raft != nil {
			errs = append(errs, n.raft.Shutdown().Error())
		}
		if c, ok := n.trans.(raft.WithClose); ok {
			c.Close()
		}
		if n.mux != nil {
			n.mux.close()
		}
		n.wg.Wait()
		n.peers.close()
		errs = append(errs, n.closeStores())
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

func (n *Node) closeStores() error {
	var errs []error
	if n.db != nil {
		errs = append(errs, n.db.Close())
	}
	if n.logs != nil {
		errs = append(errs, n.logs.Close())
	}
	return errors.Join(errs...)
}
