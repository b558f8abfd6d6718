// Package replication runs kvd's store on a Raft cluster
// (github.com/hashicorp/raft).
//
// # A node
//
// A Node is one member: a Raft node whose log is kvd's write-ahead log
// (LogStore), whose term and vote are in a file fsynced at every change
// (StableStore), and whose state machine is an engine replica
// (engine.OpenReplica): the state file, checkpointed from the applied
// entries, never past what the local log has fsynced, and holding the
// index of the last entry it has. There is no second log, and no snapshot
// is restored at start: Raft applies again the entries after the state
// file's index, which the replica skips when it has them.
//
// Every write is one command entry holding an encoded engine.Batch; the
// state machine gives each applied batch the next revision, so revisions
// stay gapless while Raft's indexes also count elections and configuration
// changes. A command's first extension byte carries its durability
// (SyncFlag): a sync write is committed once a quorum has fsynced it, an
// async one once a quorum has written it, each node fsyncing within its
// flush interval. A follower forwards writes to the leader over the
// cluster port, which carries Raft's traffic and kvd's own cluster calls
// (forwarded writes, read indexes, joins) told apart by their first byte.
//
// Reads are served by the node asked, at a consistency level (Store):
// linearizable reads get the leader's commit index, confirmed by a quorum
// of voters that answer, asked after the read began, that they are in the
// leader's term (concurrent reads share one confirmation), and wait until
// the node has applied it; a leader counts only once it has applied a
// command of its own term. Raft's snapshots stream the state machine
// (engine.ReplicaSnapshot) to a follower too far behind or a new member,
// and let Raft delete the log entries before them.
//
// # The log store
//
// LogStore is a raft.LogStore over a wal.Log: a Raft entry's index is its
// record's revision, and the record's payload holds the entry's term, type,
// extensions, append time and data (see encodeEntry). It writes an entry
// without an fsync unless the entry asks for one, so that the commit mode
// can travel inside each entry: StoreLogs fsyncs the log before it returns
// if any entry it stores is not a command (a configuration change, a no-op,
// a barrier: Raft's own bookkeeping is always durable) or is a command whose
// first extension byte has SyncFlag set. The fsync covers every entry
// written before it. Other entries are made durable by the log's flusher
// within its flush interval, as async writes on a single node are.
//
// The log is contiguous: it never holds a gap between two entries. Raft
// leaves one in two cases, both after a snapshot that covers every entry
// before the gap: a follower that installed a snapshot from its leader,
// and a node whose user restored a snapshot. LogStore is a
// raft.MonotonicLogStore, so Raft then deletes every entry first, and the
// next append starts the log afresh at its index (wal.Log.Reset); an
// append after a gap in a log that still holds entries does the same. A
// log that ends before the snapshot it is opened with is set aside at
// open (OpenLogStore).
package replication

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/kvdstore/kvd/wal"
)

// SyncFlag, set in the first byte of a command entry's Extensions, asks
// StoreLogs to fsync the log before it returns: the entry is then durable
// on every node that stored it.
const SyncFlag = 1

// entryVersion is the version byte that starts an entry's payload.
const entryVersion = 1

// LogStore is a raft.LogStore and raft.MonotonicLogStore over a wal.Log.
// Its methods are safe for concurrent use: Raft appends and deletes from one
// goroutine and reads from others.
type LogStore struct {
	log *wal.Log

	mu  sync.Mutex // serializes the changes: StoreLogs and DeleteRange
	buf []byte     // guarded by mu

	// applied returns the index of the last entry the state machine has
	// applied (nil: no check); diverged is set once Raft asked to delete
	// an applied entry (see DeleteRange).
	applied  atomic.Pointer[func() uint64]
	diverged atomic.Pointer[error]
	// wipe allows the next deletion of the whole log without the
	// divergence check: Raft's, after it installed a snapshot.
	wipe atomic.Bool
}

// expectWipe allows the next deletion of the whole log (after a snapshot
// is installed, the state machine holds every entry, and Raft deletes
// them all).
func (s *LogStore) expectWipe() { s.wipe.Store(true) }

// ErrDiverged: this node's log or state holds entries that the cluster's
// leader does not: after a power loss of a majority in async mode, a node
// may have applied entries the others lost. The node stops serving; it
// must be rebuilt from the others (see README, "Rebuilding a diverged
// node").
var ErrDiverged = errors.New("replication: this node has diverged from the cluster")

// SetApplied gives the store the state machine's applied index, so that
// DeleteRange refuses to delete an applied entry.
func (s *LogStore) SetApplied(f func() uint64) { s.applied.Store(&f) }

// Diverged returns the divergence DeleteRange found, nil if none.
func (s *LogStore) Diverged() error {
	if p := s.diverged.Load(); p != nil {
		return *p
	}
	return nil
}

// OpenLogStore opens (or creates) the Raft log in dir, a directory of its
// own. from is the first index the log must hold, one past the last index
// of the newest snapshot (1 without one): entries below it may be cut to
// recover from a crash, as a single node's log cuts records below its
// checkpoint. opts are the write-ahead log's options (flush interval,
// segment size...); their OnWritten must be nil.
func OpenLogStore(dir string, from uint64, opts wal.Options) (*LogStore, error) {
	if opts.OnWritten != nil {
		return nil, errors.New("replication: the log store's wal.Options must not have an OnWritten hook")
	}
	if err := os.RemoveAll(dir + oldSuffix); err != nil {
		return nil, fmt.Errorf("replication: remove an old raft log: %w", err)
	}
	l, err := wal.Open(dir, from, opts, nil)
	if errors.Is(err, wal.ErrShort) {
		// Every entry the log holds is in the snapshot (a user restore
		// deletes them all and burns an index): start a new log. The old
		// one is renamed away first, so that a crash leaves one or the
		// other.
		if err := os.Rename(dir, dir+oldSuffix); err != nil {
			return nil, fmt.Errorf("replication: set aside a raft log that ends before %d: %w", from, err)
		}
		if err := wal.SyncDir(filepath.Dir(dir)); err != nil {
			return nil, fmt.Errorf("replication: set aside a raft log that ends before %d: %w", from, err)
		}
		if err := os.RemoveAll(dir + oldSuffix); err != nil {
			return nil, fmt.Errorf("replication: remove an old raft log: %w", err)
		}
		l, err = wal.Open(dir, from, opts, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("replication: open the raft log: %w", err)
	}
	return &LogStore{log: l}, nil
}

// oldSuffix names a raft log set aside by OpenLogStore until it is removed.
const oldSuffix = ".old"

// Close closes the log. Entries written and not yet fsynced stay in the
// file system's cache: a process that exits loses none of them.
func (s *LogStore) Close() error { return s.log.Close() }

// Stats returns the write-ahead log's counters (fsyncs, durable index...).
func (s *LogStore) Stats() wal.Stats { return s.log.Stats() }

// DurableIndex returns the last index known to be fsynced.
func (s *LogStore) DurableIndex() uint64 { return s.log.DurableIndex() }

// Durable returns the last index known to be fsynced, and WaitDurable
// returns once the entries up to index are: the log as an engine replica
// sees it (engine.ReplicaLog).
func (s *LogStore) Durable() uint64                { return s.log.DurableIndex() }
func (s *LogStore) WaitDurable(index uint64) error { return s.log.WaitDurable(index) }

// SetFlushInterval changes how often entries written without an fsync are
// fsynced; FlushInterval returns it.
func (s *LogStore) SetFlushInterval(d time.Duration) { s.log.SetFlushInterval(d) }
func (s *LogStore) FlushInterval() time.Duration     { return s.log.FlushInterval() }

// Sync returns once every entry stored so far is durable.
func (s *LogStore) Sync() error { return s.log.Sync() }

// IsMonotonic reports true: the log holds no gaps (see the package doc).
func (s *LogStore) IsMonotonic() bool { return true }

// bounds returns the first and last index the log holds, 0, 0 if none.
func (s *LogStore) bounds() (first, last uint64) {
	last = s.log.WrittenIndex()
	first = s.log.FirstIndex()
	if first > last {
		return 0, 0
	}
	return first, last
}

// FirstIndex returns the first index the log holds, 0 if it holds none.
func (s *LogStore) FirstIndex() (uint64, error) {
	first, _ := s.bounds()
	return first, nil
}

// LastIndex returns the last index the log holds, 0 if it holds none.
func (s *LogStore) LastIndex() (uint64, error) {
	_, last := s.bounds()
	return last, nil
}

// GetLog reads the entry at index into out, or returns raft.ErrLogNotFound.
func (s *LogStore) GetLog(index uint64, out *raft.Log) error {
	p, err := s.log.Read(index)
	switch {
	case errors.Is(err, wal.ErrCompacted), errors.Is(err, wal.ErrNotFound):
		return raft.ErrLogNotFound
	case err != nil:
		return fmt.Errorf("replication: read raft log entry %d: %w", index, err)
	}
	if err := decodeEntry(p, out); err != nil {
		return fmt.Errorf("replication: raft log entry %d: %w", index, err)
	}
	out.Index = index
	return nil
}

// StoreLog stores one entry (see StoreLogs).
func (s *LogStore) StoreLog(e *raft.Log) error { return s.StoreLogs([]*raft.Log{e}) }

// StoreLogs appends entries, whose indexes must follow one another, and
// returns once they are written, and fsynced if any of them asks for it
// (see the package doc). The first must follow the log's last entry, or
// come after a gap (the log then starts afresh at it); an entry that
// would replace one the log holds is refused: Raft deletes a conflicting
// suffix with DeleteRange first.
func (s *LogStore) StoreLogs(entries []*raft.Log) error {
	if len(entries) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wipe.Store(false) // a wipe comes before the next append, or not at all
	next := entries[0].Index
	for i, e := range entries {
		if e.Index != next+uint64(i) {
			return fmt.Errorf("replication: entries to store are not contiguous: index %d after %d", e.Index, next+uint64(i)-1)
		}
	}
	first, last := s.bounds()
	switch {
	case next == 0:
		return errors.New("replication: raft log entry with index 0")
	case first == 0 && next != s.log.WrittenIndex()+1, first != 0 && next > last+1:
		// After a snapshot that covers everything before next.
		if err := s.log.Reset(next); err != nil {
			return fmt.Errorf("replication: start the raft log at %d: %w", next, err)
		}
	case first != 0 && next <= last:
		return fmt.Errorf("replication: entry %d would overwrite the log, which ends at %d (delete the conflicting entries first)", next, last)
	}
	if at := s.log.LastEnqueued() + 1; at != next {
		return fmt.Errorf("replication: entry %d would be stored at index %d", next, at)
	}
	sync := false
	for _, e := range entries {
		sync = sync || wantsSync(e)
	}
	var rev uint64
	for i, e := range entries {
		s.buf = encodeEntry(s.buf[:0], e)
		var err error
		if sync && i == len(entries)-1 {
			rev, err = s.log.EnqueueSync(s.buf, nil)
		} else {
			rev, err = s.log.Enqueue(s.buf, nil)
		}
		if err != nil {
			return fmt.Errorf("replication: append raft log entry %d: %w", e.Index, err)
		}
		if rev != e.Index {
			return fmt.Errorf("replication: raft log entry %d was given revision %d", e.Index, rev)
		}
	}
	if err := s.log.WaitWritten(rev); err != nil {
		return fmt.Errorf("replication: write raft log entries %d..%d: %w", next, rev, err)
	}
	return nil
}

// wantsSync reports whether e must be durable before StoreLogs returns.
func wantsSync(e *raft.Log) bool {
	if e.Type != raft.LogCommand {
		return true
	}
	return len(e.Extensions) > 0 && e.Extensions[0]&SyncFlag != 0
}

// DeleteRange deletes the entries min..max. Raft deletes a prefix after a
// snapshot, a conflicting suffix when a new leader overrides it, and
// everything after a user restore. A prefix is dropped in whole segments
// (entries below max may stay readable until their segment goes); a
// suffix and the whole log go at once, durably.
//
// A committed entry is never deleted from a node's end in Raft, and an
// applied entry is committed: a deletion of the log's end that reaches an
// applied entry (see SetApplied) can only mean that this node holds what
// the cluster lost. It is refused with ErrDiverged, and the store stays
// diverged (Diverged).
func (s *LogStore) DeleteRange(min, max uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	first, last := s.bounds()
	wipe := min <= first && max >= last && s.wipe.Swap(false)
	if f := s.applied.Load(); f != nil && !wipe && first != 0 && max >= last && min <= last {
		if applied := (*f)(); min <= applied {
			err := fmt.Errorf("%w: the leader replaces entries %d..%d, and entries up to %d are applied here", ErrDiverged, min, last, applied)
			s.diverged.CompareAndSwap(nil, &err)
			return err
		}
	}
	switch {
	case first == 0 || min > max || max < first || min > last:
		return nil // nothing held in the range
	case min <= first && max >= last:
		if err := s.log.Reset(last + 1); err != nil {
			return fmt.Errorf("replication: delete raft log entries %d..%d: %w", min, max, err)
		}
	case min <= first:
		if err := s.log.TruncateFront(max + 1); err != nil {
			return fmt.Errorf("replication: delete raft log entries %d..%d: %w", min, max, err)
		}
	case max >= last:
		if err := s.log.TruncateBack(min - 1); err != nil {
			return fmt.Errorf("replication: delete raft log entries %d..%d: %w", min, max, err)
		}
	default:
		return fmt.Errorf("replication: cannot delete raft log entries %d..%d from the middle of %d..%d", min, max, first, last)
	}
	return nil
}

// encodeEntry appends the payload of e's record to dst:
//
//	version 1 | uvarint term | type byte | varint append time (unix ns, 0: none) |
//	uvarint extensions length | extensions | data (the rest)
//
// The index is the record's revision.
func encodeEntry(dst []byte, e *raft.Log) []byte {
	dst = append(dst, entryVersion)
	dst = binary.AppendUvarint(dst, e.Term)
	dst = append(dst, byte(e.Type))
	var at int64
	if !e.AppendedAt.IsZero() {
		at = e.AppendedAt.UnixNano()
	}
	dst = binary.AppendVarint(dst, at)
	dst = binary.AppendUvarint(dst, uint64(len(e.Extensions)))
	dst = append(dst, e.Extensions...)
	return append(dst, e.Data...)
}

var errBadEntry = errors.New("malformed entry")

// decodeEntry decodes a record's payload into out, which takes copies of
// its slices. out.Index is left for the caller.
func decodeEntry(p []byte, out *raft.Log) error {
	if len(p) == 0 || p[0] != entryVersion {
		return fmt.Errorf("%w: unknown version", errBadEntry)
	}
	p = p[1:]
	term, n := binary.Uvarint(p)
	if n <= 0 || len(p) < n+1 {
		return errBadEntry
	}
	p = p[n:]
	typ := raft.LogType(p[0])
	p = p[1:]
	at, n := binary.Varint(p)
	if n <= 0 {
		return errBadEntry
	}
	p = p[n:]
	extLen, n := binary.Uvarint(p)
	if n <= 0 || uint64(len(p)-n) < extLen {
		return errBadEntry
	}
	p = p[n:]
	*out = raft.Log{Term: term, Type: typ}
	if extLen > 0 {
		out.Extensions = append([]byte(nil), p[:extLen]...)
	}
	if data := p[extLen:]; len(data) > 0 {
		out.Data = append([]byte(nil), data...)
	}
	if at != 0 {
		out.AppendedAt = time.Unix(0, at)
	}
	return nil
}
