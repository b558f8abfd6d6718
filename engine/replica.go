package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/kvdstore/kvd/wal"
)

// A replica is a DB that is the state machine of a replicated log (a Raft
// log, say) instead of the owner of a log of its own. The replicated log
// orders batches and makes them durable; the replica applies them, in
// order, to its memtable (ApplyEntry) and checkpoints them into its state
// file, which then records the log index of the last entry it holds. There
// is no second log: after a crash the state file is where the replica
// restarts from, and the replicated log's entries after its index are
// applied again.
//
// The state file is never checkpointed past what the replicated log has
// made durable (ReplicaLog.WaitDurable): after a power loss it holds a
// prefix of what survived in the log, as a single node's state file holds
// a prefix of its own log.
//
// A replica's revisions are its own: every applied entry gets the next
// revision, whatever its index, so that they stay gapless while the log's
// indexes skip the entries that are not batches (elections, configuration
// changes). Every replica that applies the same entries assigns the same
// revisions.

// ReplicaLog is the replicated log a replica applies: what it needs to
// know of its durability.
type ReplicaLog interface {
	// Durable returns the last index known to be durable in the log.
	Durable() uint64
	// WaitDurable returns once every entry up to index is durable.
	WaitDurable(index uint64) error
}

// ErrReplica is returned by local writes to a replica, which applies its
// log's entries only (ApplyEntry).
var ErrReplica = errors.New("engine: a replica takes writes from its log only")

// keyAppliedIndex is the state file's meta key for the replicated log index
// of the last entry it holds.
var keyAppliedIndex = []byte("applied-index")

type replica struct {
	log ReplicaLog

	index   uint64        // last index applied; guarded by DB.smu
	written atomic.Uint64 // last revision applied

	sweeper sweeper // SweepExpired's position

	mu      sync.Mutex
	pending []indexRev // applied, not known durable, oldest first
	durable uint64     // last revision known durable; guarded by mu
}

type indexRev struct{ index, rev uint64 }

// OpenReplica opens (creating if needed) the store in dir as the state
// machine of log. It has no log of its own: dir holds the state file only.
// Opening starts from the state file, whose AppliedIndex is the last entry
// it holds; the caller applies the log's entries after it. Expired keys
// are hidden from reads but not removed (Options.NoExpiryRemoval is set):
// whoever orders the log decides their removal (SweepExpired).
func OpenReplica(dir string, opts Options, log ReplicaLog) (*DB, error) {
	if log == nil {
		return nil, errors.New("engine: OpenReplica needs a log")
	}
	opts.NoExpiryRemoval = true
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, "wal")); err == nil {
		return nil, fmt.Errorf("engine: %s holds a single node's log (wal/): a replica's directory must not", dir)
	}
	return open(dir, opts, &replica{log: log}, (*DB).recoverReplica)
}

// recoverReplica opens a replica's state file: there is no log to replay.
func (db *DB) recoverReplica() error {
	applied, err := db.openStateFile()
	if err != nil {
		return err
	}
	index, err := db.stateIndex()
	if err != nil {
		return err
	}
	r := db.replica
	r.index, r.durable = index, applied
	r.written.Store(applied)
	db.applied.Store(applied)
	db.memRev.Store(applied)
	if db.view, err = newReadView(db.bdb); err != nil {
		return fmt.Errorf("engine: begin read view: %w", err)
	}
	db.log.Info("engine: opened replica", "dir", db.dir, "applied", applied, "index", index)
	return nil
}

// stateIndex reads the applied index from the state file's meta.
func (db *DB) stateIndex() (uint64, error) {
	tx, err := db.bdb.Begin(false)
	if err != nil {
		return 0, fmt.Errorf("engine: read state: %w", err)
	}
	defer tx.Rollback()
	v := tx.Bucket(bucketMeta).Get(keyAppliedIndex)
	switch {
	case v == nil:
		if db.applied.Load() != 0 || tx.Bucket(bucketKV).Stats().KeyN != 0 {
			return 0, fmt.Errorf("engine: %s holds a single node's state file, which a replica cannot take over", db.dir)
		}
		return 0, nil
	case len(v) != 8:
		return 0, fmt.Errorf("%w: bad applied index in the state file", ErrCorruptState)
	}
	return binary.BigEndian.Uint64(v), nil
}

// AppliedIndex returns the log index of the last entry a replica applied,
// 0 for a DB that is not a replica.
func (db *DB) AppliedIndex() uint64 {
	if db.replica == nil {
		return 0
	}
	db.smu.RLock()
	defer db.smu.RUnlock()
	return db.replica.index
}

// IsReplica reports whether db was opened with OpenReplica.
func (db *DB) IsReplica() bool { return db.replica != nil }

// Outcome is what applying a batch gave: its revision, the result of each
// of its operations and whether a failed require aborted it (see
// Batch.Results and Batch.Aborted).
type Outcome struct {
	Revision uint64
	Results  []Result
	Aborted  bool
}

// SetOutcome gives b the outcome of its application elsewhere (by a
// replica, on another node): Results and Aborted then report it, as after
// a local write.
func (b *Batch) SetOutcome(o Outcome) {
	b.rev, b.results, b.aborted = o.Revision, o.Results, o.Aborted
}

// AppliedCommit is the Commit of a batch that was applied elsewhere and is
// acknowledged already: its waits return at once.
func AppliedCommit(rev uint64, sync bool) Commit { return Commit{rev: rev, sync: sync} }

// ApplyEntry applies payload, an encoded batch (Batch.Bytes), as the entry
// at index of the replica's log, and returns its outcome: the revision it
// gets and the result of each of its operations. Entries are applied in index order,
// with gaps where the log holds entries that are not batches. An index the
// replica already holds (at or below AppliedIndex) is skipped with
// ErrAlreadyApplied: after a restart the log applies again entries that
// the state file holds. The batch keeps the timestamp it was encoded with.
//
// A batch that fails to apply (ErrBadBatch, a limit, a damaged state file
// read) changes nothing and gets no revision; as every replica decides
// alike, the log moves on. The entry's index is recorded all the same.
func (db *DB) ApplyEntry(index uint64, payload []byte) (Outcome, error) {
	var out [1]Outcome
	var errs [1]error
	if err := db.ApplyEntries(index, [][]byte{payload}, out[:], errs[:]); err != nil {
		return Outcome{}, err
	}
	return out[0], errs[0]
}

// ApplyEntries is ApplyEntry for an entry that holds several batches (the
// writes of many clients, gathered by the log's leader): they are applied
// in order, each at a revision of its own, as one step that reads see
// whole. outs[i] and errs[i] receive the outcome of payloads[i], or why it
// failed to apply: a batch that fails changes nothing and gets no
// revision, and the others apply all the same. The returned error is the
// entry's: ErrAlreadyApplied, ErrClosed, a failure of the store; then
// nothing is applied.
func (db *DB) ApplyEntries(index uint64, payloads [][]byte, outs []Outcome, errs []error) error {
	r := db.replica
	if r == nil {
		return errors.New("engine: ApplyEntries on a DB that is not a replica")
	}
	if len(outs) < len(payloads) || len(errs) < len(payloads) {
		return errors.New("engine: ApplyEntries needs an outcome and an error for every batch")
	}
	batches := make([]*Batch, len(payloads))
	for i, p := range payloads {
		b, err := decodeBatch(p)
		if err == nil {
			err = b.check(&db.opts)
		}
		batches[i], outs[i], errs[i] = b, Outcome{}, err
	}
	if err := db.waitForRoom(context.Background()); err != nil {
		return err
	}
	db.wmu.Lock()
	defer db.wmu.Unlock()
	if db.closed {
		return ErrClosed
	}
	if err := db.failure(); err != nil {
		return err
	}
	db.smu.Lock()
	if index <= r.index {
		last := r.index
		db.smu.Unlock()
		return fmt.Errorf("%w: index %d, the replica has %d", ErrAlreadyApplied, index, last)
	}
	before := db.active.bytes
	first := db.memRev.Load()
	rev := first
	for i, b := range batches {
		if errs[i] != nil {
			continue
		}
		if err := db.applyBatch(rev+1, b); err != nil {
			db.smu.Unlock()
			// The state file could not be read: the replica cannot follow its
			// log any more.
			return db.setFatal(fmt.Errorf("engine: apply index %d: %w", index, err))
		}
		rev++
		db.active.logBytes += int64(len(payloads[i]))
		db.memRev.Store(rev)
		outs[i] = Outcome{Revision: rev, Results: b.results, Aborted: b.aborted}
	}
	r.index = index
	grown := db.active.bytes - before
	size, logged := db.active.bytes, db.active.logBytes
	db.smu.Unlock()
	if rev == first {
		return nil // no batch applied
	}
	r.written.Store(rev)
	r.mu.Lock()
	r.pending = append(r.pending, indexRev{index, rev})
	r.mu.Unlock()
	db.hist.advanced()
	db.memBytes.Add(grown)
	if size >= db.opts.CheckpointBytes || logged >= db.opts.CheckpointLogBytes {
		db.kickCheckpoint()
	}
	return nil
}

// LogDurable tells a replica that its log has made more entries durable,
// so that change feeds that deliver durable revisions only move on (see
// ChangesNotify). The replica's owner calls it from its log's
// wal.Options.OnDurable.
func (db *DB) LogDurable() { db.hist.advanced() }

// durableRev is the replica's last revision known durable in its log.
func (r *replica) durableRev() uint64 {
	d := r.log.Durable()
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for n < len(r.pending) && r.pending[n].index <= d {
		r.durable = r.pending[n].rev
		n++
	}
	if n > 0 {
		r.pending = append(r.pending[:0], r.pending[n:]...)
	}
	return r.durable
}

// sync returns once every entry applied is durable in the log.
func (db *DB) replicaSync() error {
	return db.replica.log.WaitDurable(db.AppliedIndex())
}

// replicaStats fills the parts of s that a replica knows.
func (db *DB) replicaStats(s *Stats) {
	s.WrittenRevision = db.replica.written.Load()
	s.DurableRevision = db.replica.durableRev()
}

// ValidateBatch checks b against the DB's limits (key and value sizes,
// the operations' arguments) as a write would: what a node checks before it
// proposes a batch to a replicated log.
func (db *DB) ValidateBatch(b *Batch) error { return b.check(&db.opts) }

// ExpiredKey is a key found expired, with the mod revision it had then.
type ExpiredKey struct {
	Key         []byte
	ModRevision uint64
}

// SweepExpired returns up to the sweep's limit of expired keys that a
// replica's reads and its sweep of the expiry indexes found, for the node
// that decides removals (the leader) to remove with CompareAndDelete on
// their mod revisions, through the log: a replica removes nothing itself.
// Called by one goroutine at a time.
func (db *DB) SweepExpired() []ExpiredKey {
	r := db.replica
	if r == nil {
		return nil
	}
	var out []ExpiredKey
	seen := map[string]bool{}
	add := func(k expiredKey) {
		if !seen[string(k.key)] {
			seen[string(k.key)] = true
			out = append(out, ExpiredKey{Key: k.key, ModRevision: k.mod})
		}
	}
drain:
	for len(out) < db.opts.sweepLimit {
		select {
		case k := <-db.expired:
			add(k)
		default:
			break drain
		}
	}
	for _, k := range r.sweeper.sweep(db) {
		add(k)
	}
	return out
}

// LockDir takes the lock of the data directory dir, as Open does, for a
// tool that changes a stopped store's files (such as a cluster node's
// recovery): ErrLocked while a process has the store open. Close the
// returned file to release it.
func LockDir(dir string) (*os.File, error) { return lockDir(dir) }

// ReplicaSnapshot is Snapshot for a replica: it also returns the log index
// of the last entry the snapshot holds. Call it where no entry is being
// applied (Raft's state machine goroutine).
func (db *DB) ReplicaSnapshot() (*Snapshot, uint64, error) {
	if db.replica == nil {
		return nil, 0, errors.New("engine: ReplicaSnapshot on a DB that is not a replica")
	}
	s, err := db.Snapshot()
	if err != nil {
		return nil, 0, err
	}
	return s, db.AppliedIndex(), nil
}

// RestoreReplica replaces a replica's content with the snapshot read from
// r, staged as DB.Restore stages one (a crash at any point leaves the old
// store or the new one), and records the log index that indexOf reads
// from the snapshot's metadata (where ReplicaSnapshot's caller put it) as
// the last entry the replica holds: the log's entries after it are applied
// next. A damaged or torn snapshot gives ErrBadSnapshot and changes
// nothing. If the swap itself fails, the replica fails (ErrLogFailed).
func (db *DB) RestoreReplica(r io.Reader, indexOf func(meta []byte) (uint64, error)) (SnapshotInfo, error) {
	if db.replica == nil {
		return SnapshotInfo{}, errors.New("engine: RestoreReplica on a DB that is not a replica")
	}
	staged, sr, mark, err := db.stageRestore(r, indexOf)
	if err != nil {
		return SnapshotInfo{}, err
	}
	db.wmu.Lock()
	defer db.wmu.Unlock()
	if db.closed {
		os.Remove(staged)
		return SnapshotInfo{}, ErrClosed
	}
	close(db.stop)
	db.wg.Wait()
	db.smu.Lock()
	defer db.smu.Unlock()
	db.view.close()
	db.view = nil
	db.cancelSnapshots() // else Close waits for their transactions
	var errs []error
	if err := db.bdb.Close(); err != nil {
		errs = append(errs, fmt.Errorf("engine: close state: %w", err))
	}
	db.bdb = nil
	if err := db.hist.log.close(); err != nil {
		errs = append(errs, fmt.Errorf("engine: close history log: %w", err))
	}
	if len(errs) == 0 {
		if err := wal.WriteFileDurably(filepath.Join(db.dir, restoreMarker), mark, 0o640); err != nil {
			errs = append(errs, err)
		}
	}
	// What the memtables held is in the snapshot, or replaced by it.
	db.active, db.frozen, db.applyFailed = newMemtable(), nil, false
	db.memRev.Store(0)
	db.memBytes.Store(0)
	r2 := db.replica
	r2.mu.Lock()
	r2.pending = nil
	r2.mu.Unlock()
	if err := db.recoverReplica(); err != nil {
		errs = append(errs, err)
	}
	db.stop = make(chan struct{})
	if len(errs) > 0 {
		if db.bdb == nil || db.view == nil {
			db.active = nil // nothing to serve reads from
		}
		return SnapshotInfo{}, db.setFatal(fmt.Errorf("engine: restore replica: %w", errors.Join(errs...)))
	}
	db.wg.Add(1)
	go db.checkpointer()
	db.log.Info("engine: replica restored from a snapshot", "rev", sr.info.Revision, "index", db.replica.index)
	return sr.info, nil
}
