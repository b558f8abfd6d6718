package replication

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/kvdstore/kvd/engine"
)

// Consistency is how current a read on a cluster is.
type Consistency int32

const (
	// Linearizable reads see every write acknowledged before they began,
	// on any node: the leader confirms with a quorum that it still leads
	// (confirmations are shared by concurrent reads), and the node
	// serving the read waits until it has applied the leader's commit
	// index.
	Linearizable Consistency = iota
	// Leader reads skip the leader's confirmation: a leader cut off from
	// the others serves what it has until it notices, for up to its lease
	// (LeaderLeaseTimeout) and longer if its process is paused.
	Leader
	// Stale reads are served by the node from what it has applied, with
	// no call to the leader: they may miss recent writes.
	Stale
)

func (c Consistency) String() string {
	switch c {
	case Linearizable:
		return "linearizable"
	case Leader:
		return "leader"
	case Stale:
		return "stale"
	}
	return fmt.Sprintf("Consistency(%d)", int32(c))
}

// ParseConsistency parses "linearizable", "leader" or "stale".
func ParseConsistency(s string) (Consistency, error) {
	for _, c := range []Consistency{Linearizable, Leader, Stale} {
		if s == c.String() {
			return c, nil
		}
	}
	return 0, fmt.Errorf("replication: consistency %q: want linearizable, leader or stale", s)
}

// Store is a Node as a key-value store: what kvd's server serves on a
// cluster (it has the methods of server.Store). Writes go through the
// leader (forwarded when this node is not it) and return once committed
// and applied: committed means a quorum has fsynced the entry when the
// write is sync, written it when async. Reads are served by this node at
// the store's consistency level.
type Store struct {
	n           *Node
	consistency atomic.Int32
	// read, when set, fixes the reads' options (At); nil: the default
	// consistency, with no bound on staleness.
	read *ReadOptions
}

// ReadOptions say how current a read must be.
type ReadOptions struct {
	Consistency Consistency
	// MaxStale refuses a stale or leader read on a follower that has not
	// heard from the leader for longer (ErrTooStale); 0: no bound.
	MaxStale time.Duration
	// MinRev makes a read wait until the node has applied revision MinRev
	// (read-your-writes on a follower with the revision a write
	// returned), at most the apply timeout; 0: no wait.
	MinRev uint64
}

// ErrTooStale: a read's MaxStale was exceeded: the node has not heard from
// the leader for longer.
var ErrTooStale = errors.New("replication: this node has not heard from the leader within max_stale")

// At returns a view of the store whose reads follow o (its writes are the
// store's).
func (s *Store) At(o ReadOptions) *Store {
	v := &Store{n: s.n, read: &o}
	v.consistency.Store(int32(o.Consistency))
	return v
}

// Store returns the node's store, reading at consistency c by default.
func (n *Node) Store(c Consistency) *Store {
	s := &Store{n: n}
	s.consistency.Store(int32(c))
	return s
}

// ClusterStatus returns the node's view of the cluster.
func (s *Store) ClusterStatus() Status { return s.n.Status() }

// Node returns the store's node.
func (s *Store) Node() *Node { return s.n }

// SetConsistency changes the default consistency of reads.
func (s *Store) SetConsistency(c Consistency) { s.consistency.Store(int32(c)) }

// Consistency returns the default consistency of reads.
func (s *Store) Consistency() Consistency { return Consistency(s.consistency.Load()) }

// ReadBarrier returns once a read at consistency c may be served here.
func (s *Store) ReadBarrier(c Consistency) error {
	switch c {
	case Linearizable:
		return s.n.Barrier(true)
	case Leader:
		return s.n.Barrier(false)
	}
	return nil
}

// Barrier returns once a read through s may be served from this node's
// state: what every read through s waits for first.
func (s *Store) Barrier() error { return s.barrier() }

func (s *Store) barrier() error {
	if err := s.n.Diverged(); err != nil {
		return err
	}
	if o := s.read; o != nil {
		if o.MinRev > 0 {
			if err := s.n.waitRevision(o.MinRev, s.n.cfg.ApplyTimeout); err != nil {
				return err
			}
		}
		if o.MaxStale > 0 && o.Consistency != Linearizable && !s.n.IsLeader() {
			if lc := s.n.raft.LastContact(); lc.IsZero() || time.Since(lc) > o.MaxStale {
				return fmt.Errorf("%w (%v)", ErrTooStale, o.MaxStale)
			}
		}
	}
	return s.ReadBarrier(s.Consistency())
}

func (s *Store) GetEntry(key []byte) (engine.Entry, error) {
	if err := s.barrier(); err != nil {
		return engine.Entry{}, err
	}
	return s.n.db.GetEntry(key)
}

func (s *Store) GetEach(keys [][]byte, fn func(i int, value []byte, found bool)) error {
	if err := s.barrier(); err != nil {
		return err
	}
	return s.n.db.GetEach(keys, fn)
}

func (s *Store) Scan(o engine.ScanOptions) ([]engine.KV, error) {
	if err := s.barrier(); err != nil {
		return nil, err
	}
	return s.n.db.Scan(o)
}

func (s *Store) Count() (int, error) {
	if err := s.barrier(); err != nil {
		return 0, err
	}
	return s.n.db.Count()
}

// WriteContext proposes b through the leader and waits until it is
// committed and applied (ctx is checked before; once proposed the write
// is not withdrawn, and the apply timeout bounds the wait). b's Results
// then hold its outcome.
func (s *Store) WriteContext(ctx context.Context, b *engine.Batch, wo engine.WriteOptions) (engine.Commit, error) {
	if err := ctx.Err(); err != nil {
		return engine.Commit{}, err
	}
	return await(func(done func(engine.Commit, error)) { s.WriteAsync(b, wo, done) })
}

// WriteAsync is WriteContext without the wait: done is called once b is
// committed and applied, or failed, with b's Results set; on this
// goroutine when b is refused at once, else on another.
func (s *Store) WriteAsync(b *engine.Batch, wo engine.WriteOptions, done func(engine.Commit, error)) {
	sync := wo.Sync(s.CommitMode())
	if err := s.n.Diverged(); err != nil {
		done(engine.Commit{}, err)
		return
	}
	if err := s.n.db.ValidateBatch(b); err != nil {
		done(engine.Commit{}, err)
		return
	}
	if b.Len() == 0 {
		done(engine.AppliedCommit(s.n.db.WrittenRevision(), sync), nil)
		return
	}
	if b.Timestamp() == 0 {
		b.SetTimestamp(time.Now().UnixMilli())
	}
	s.n.ProposeAsync(bytes.Clone(b.Bytes()), sync, func(o engine.Outcome, err error) {
		if err != nil {
			done(engine.AppliedCommit(0, sync), err)
			return
		}
		b.SetOutcome(o)
		done(engine.AppliedCommit(o.Revision, sync), nil)
	})
}

// TrySubmit returns engine.ErrThrottled: a write on a cluster waits for a
// quorum, so the caller commits it with WriteContext where it may block.
func (s *Store) TrySubmit(*engine.Batch, engine.WriteOptions) (engine.Commit, error) {
	return engine.Commit{}, engine.ErrThrottled
}

// Sync returns once a quorum has fsynced every write acknowledged before
// the call.
func (s *Store) Sync() error { return s.n.Sync() }

func (s *Store) SetCommitMode(m engine.CommitMode) {
	if m == engine.CommitSync || m == engine.CommitAsync {
		s.n.mode.Store(int32(m))
	}
}

func (s *Store) CommitMode() engine.CommitMode { return engine.CommitMode(s.n.mode.Load()) }

// SetFlushInterval changes how often this node fsyncs the entries written
// without one.
func (s *Store) SetFlushInterval(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("replication: flush interval %v must be positive", d)
	}
	s.n.logs.SetFlushInterval(d)
	return nil
}

func (s *Store) FlushInterval() time.Duration { return s.n.logs.FlushInterval() }

// WrittenRevision is the last revision this node applied; DurableRevision
// the last whose entry this node's log has fsynced.
func (s *Store) WrittenRevision() uint64 { return s.n.db.WrittenRevision() }
func (s *Store) DurableRevision() uint64 { return s.n.db.DurableRevision() }

// Stats returns the state machine's figures with this node's Raft log's.
func (s *Store) Stats() engine.Stats {
	st := s.n.db.Stats()
	st.CommitMode = s.CommitMode()
	st.ExpiredRemoved = s.n.expiredRemoved.Load()
	ws := s.n.logs.Stats()
	st.Fsyncs, st.RecordsSynced, st.MaxFsync = ws.Fsyncs, ws.RecordsSynced, ws.MaxFsync
	st.FsyncSeconds, st.RecordsPerFsync = ws.FsyncSeconds, ws.RecordsPerFsync
	st.WALSegments = ws.Segments
	st.OldestUnsynced, st.MaxUnsyncedLastMinute, st.MaxUnsyncedSinceOpen = ws.OldestUnsynced, ws.MaxUnsyncedLastMinute, ws.MaxUnsyncedSinceOpen
	st.LogWriteFailures, st.LogRecordsRefused, st.LogWriteErr = ws.WriteFailures, ws.RecordsRefused, ws.LastWriteErr
	return st
}

// Changes, ChangesNotify and OldestRevision are this node's change history
// (engine.DB.Changes): every node applies the same batches at the same
// revisions, so a watch on any node sees the same changes in the same
// order. What a node has applied may lag the leader: a watch from a
// revision it has not applied yet waits for it.
func (s *Store) Changes(from uint64, match func(key []byte) bool, max int, upTo uint64) ([]engine.ChangeSet, uint64, error) {
	return s.n.db.Changes(from, match, max, upTo)
}

func (s *Store) ChangesNotify() <-chan struct{} { return s.n.db.ChangesNotify() }
func (s *Store) OldestRevision() uint64         { return s.n.db.OldestRevision() }
