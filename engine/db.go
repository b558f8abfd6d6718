package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kvdstore/kvd/wal"
)

// DB is an open kvd store. All its methods are safe for concurrent use.
// Slices passed to a method may be reused by the caller once it returns;
// slices returned belong to the caller.
type DB struct {
	dir  string
	opts Options
	log  *slog.Logger

	lock *os.File
	wal  *wal.Log // nil in a replica
	bdb  *bolt.DB
	// replica is set when the DB is the state machine of a replicated log
	// (replica.go), nil when it owns its log.
	replica *replica

	mode atomic.Int32 // CommitMode

	// wmu orders writers: blind writes hold it shared while they enqueue
	// their record, Update holds it exclusively so that it reads a state
	// with no write in flight.
	wmu    sync.RWMutex
	closed bool // guarded by wmu

	// smu guards the memtables. Writers take it exclusively to apply
	// written records; readers share it.
	smu    sync.RWMutex
	active *memtable
	frozen *memtable // being checkpointed, nil otherwise
	// memRev is the last revision applied to the memtables: written
	// under smu, read without it by WrittenRevision.
	memRev atomic.Uint64
	// applyFailed is set once a written batch could not be applied: the
	// memtables no longer follow the log.
	applyFailed bool
	view        *readView // shared read transaction; nil during a checkpoint commit
	memBytes    atomic.Int64
	hist        history // the change history (history.go)
	// snaps are the Snapshots not yet closed, which a restore cancels.
	snapMu sync.Mutex
	snaps  map[*Snapshot]struct{}
	// noHistory: checkpoints write no history (the stand-in DB that
	// installs a snapshot's delta, which has no changes to record).
	noHistory bool

	applied     atomic.Uint64
	checkpoints atomic.Uint64
	// expiredRemoved counts the expired keys the expirer removed.
	expiredRemoved atomic.Uint64
	fatal          atomic.Pointer[error]
	// checkpointFailures counts checkpoints that failed without failing
	// the DB; checkpointErr is the last one's error, nil once one succeeds.
	checkpointFailures atomic.Uint64
	checkpointErr      atomic.Pointer[error]
	// corruptions counts the reads that found the state file damaged;
	// lastCorruption is the last one (fault.go).
	corruptions    atomic.Uint64
	lastCorruption atomic.Pointer[corruption]

	bpMu   sync.Mutex // backpressure: writers wait on bpCond for a checkpoint
	bpCond *sync.Cond

	expired chan expiredKey // removals queued by reads (expiry.go)

	data stateData // what the state file holds (diskusage.go)

	kick      chan struct{}
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

var (
	bucketKV   = []byte("kv")
	bucketMeta = []byte("meta")
	keyFormat  = []byte("format")
	keyApplied = []byte("applied-revision")
)

// stateFormat is the format of the state file this build writes: 3 since
// value records hold an expiry and bucket "expiry" indexes it (record.go);
// 2 had value records without expiry, 1 stored bare values.
const (
	stateFormat   = "3"
	stateFormatV2 = "2"
	stateFormatV1 = "1"
)

// Open opens (creating if needed) the store in dir: it takes the directory's
// lock, opens the state file, replays the log records newer than the state
// and starts the background flusher and checkpointer.
func Open(dir string, opts Options) (*DB, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	db, err := open(dir, opts, nil, (*DB).recover)
	if err != nil {
		return nil, err
	}
	if !opts.NoExpiryRemoval {
		db.expired = make(chan expiredKey, expiredQueue)
		db.wg.Add(1)
		go db.expirer()
	}
	return db, nil
}

// open is what Open and OpenReplica share: it creates dir, takes its lock,
// recovers the store with recoverFn and starts the checkpointer. rep is the
// replica's state, nil for a DB that owns its log.
func open(dir string, opts Options, rep *replica, recoverFn func(*DB) error) (*DB, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("engine: create data dir: %w", err)
	}
	db := &DB{
		dir:     dir,
		opts:    opts,
		log:     opts.Logger,
		active:  newMemtable(),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		replica: rep,
	}
	db.bpCond = sync.NewCond(&db.bpMu)
	db.mode.Store(int32(opts.CommitMode))
	if rep != nil {
		// Reads queue the expired keys they meet; SweepExpired takes them.
		db.expired = make(chan expiredKey, expiredQueue)
	}
	var err error
	if db.lock, err = lockDir(dir); err != nil {
		return nil, err
	}
	if err := recoverFn(db); err != nil {
		if db.bdb != nil {
			db.bdb.Close()
		}
		db.lock.Close()
		return nil, err
	}
	db.wg.Add(1)
	go db.checkpointer()
	return db, nil
}

// ---- reads ----

// Get returns the value of key, or ErrNotFound. It sees every acknowledged
// write.
func (db *DB) Get(key []byte) ([]byte, error) {
	db.smu.RLock()
	defer db.smu.RUnlock()
	return db.getLocked(key)
}

func (db *DB) getLocked(key []byte) ([]byte, error) {
	v, err := db.appendGetLocked(nil, key)
	if err == nil && v == nil {
		v = []byte{} // present, with an empty value
	}
	return v, err
}

// AppendGet appends the value of key to dst and returns the extended
// buffer, or dst and ErrNotFound: Get without allocating, for callers that
// reuse a buffer.
func (db *DB) AppendGet(dst, key []byte) ([]byte, error) {
	db.smu.RLock()
	defer db.smu.RUnlock()
	return db.appendGetLocked(dst, key)
}

func (db *DB) appendGetLocked(dst, key []byte) ([]byte, error) {
	var tx *bolt.Tx
	e, found, err := db.readLocked(key, &tx, false)
	if found {
		dst = append(dst, e.value...)
	}
	if tx != nil {
		tx.Rollback()
	}
	switch {
	case err != nil:
		return dst, err
	case !found:
		return dst, ErrNotFound
	}
	return dst, nil
}

// Entry is a key's value and revisions.
type Entry struct {
	Value []byte
	// CreateRevision is the revision of the write that created the key:
	// the first that gave it a value since it last held none. A key
	// deleted and set again gets a new one. Keys that a state file of
	// format 1 held have the revision that file was checkpointed at,
	// since it did not record theirs (see the package doc, On disk).
	CreateRevision uint64
	// ModRevision is the revision of the write that last set the key, or
	// changed its expiry.
	ModRevision uint64
	// ExpiresAt is the key's expiry time in Unix milliseconds, 0 if it has
	// none (see the package doc, Expiry).
	ExpiresAt int64
}

// GetEntry returns the value and revisions of key, or ErrNotFound. It sees
// every acknowledged write.
func (db *DB) GetEntry(key []byte) (Entry, error) {
	db.smu.RLock()
	defer db.smu.RUnlock()
	var tx *bolt.Tx
	e, found, err := db.readLocked(key, &tx, true)
	var out Entry
	if found {
		out = Entry{Value: append([]byte{}, e.value...), CreateRevision: e.create, ModRevision: e.mod, ExpiresAt: e.expires}
	}
	if tx != nil {
		tx.Rollback()
	}
	switch {
	case err != nil:
		return Entry{}, err
	case !found:
		return Entry{}, ErrNotFound
	}
	return out, nil
}

// GetEach looks keys up in one consistent state: no write is applied
// between two of its lookups, so it never sees part of an atomic batch. It
// calls fn once per key, in order, with the key's value or found false; the
// value is only valid during the call, and fn must not call into db.
func (db *DB) GetEach(keys [][]byte, fn func(i int, value []byte, found bool)) error {
	db.smu.RLock()
	defer db.smu.RUnlock()
	var tx *bolt.Tx
	defer func() {
		if tx != nil {
			tx.Rollback()
		}
	}()
	for i, key := range keys {
		e, found, err := db.readLocked(key, &tx, false)
		if err != nil {
			return err
		}
		fn(i, e.value, found)
	}
	return nil
}

// readLocked is lookupLocked for a read: a key that has expired by the
// local clock is not found, and its removal is queued (see expiry.go).
func (db *DB) readLocked(key []byte, tx **bolt.Tx, revs bool) (memEntry, bool, error) {
	e, found, err := db.lookupLocked(key, tx, revs)
	if found && e.expires != 0 && e.expiredAt(db.now()) { // the clock only for keys that expire
		db.queueExpired(key, e.mod)
		return memEntry{}, false, nil
	}
	return e, found, err
}

// lookupLocked finds key's entry without copying its value: the value stays
// valid while db.smu is held and, when lookupLocked had to begin a read
// transaction on the state file (*tx, for the caller to roll back; only
// while a checkpoint is committing), until that ends. With revs it
// resolves the entry's create revision (see memEntry); without, create may
// be unresolved.
func (db *DB) lookupLocked(key []byte, tx **bolt.Tx, revs bool) (memEntry, bool, error) {
	if db.active == nil {
		return memEntry{}, false, ErrClosed
	}
	var top memEntry
	found := false
	for _, t := range [2]*memtable{db.active, db.frozen} {
		if t == nil {
			continue
		}
		e, ok := t.get(key)
		switch {
		case !ok:
			continue
		case !found:
			if e.del {
				return memEntry{}, false, nil
			}
			top, found = e, true
		case !top.inheritsFrom(e):
			top.inherit = false
		default:
			top.create, top.inherit, top.at = e.create, e.inherit, e.at
		}
		if !revs || !top.inherit {
			return top, true, nil
		}
	}
	e, ok, err := db.stateLookup(key, tx)
	if err != nil || !found {
		return e, ok, err
	}
	if ok && top.inheritsFrom(e) {
		top.create = e.create
	}
	top.inherit = false
	return top, true, nil
}

// memGet finds key in the memtables.
func (db *DB) memGet(key []byte) (memEntry, bool) {
	if e, ok := db.active.get(key); ok {
		return e, true
	}
	if db.frozen != nil {
		return db.frozen.get(key)
	}
	return memEntry{}, false
}

// stateLookup finds key in the state file, as lookupLocked does. A damaged
// page gives ErrCorruptState (see fault.go); the value record it returns
// was read whole to check it, so that using it later cannot fault.
func (db *DB) stateLookup(key []byte, tx **bolt.Tx) (e memEntry, ok bool, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			e, ok, err = memEntry{}, false, db.recoveredState(key, r)
		}
	}()
	var rec []byte
	if db.view != nil {
		v, ok := db.view.lookup(key)
		if !ok {
			return memEntry{}, false, nil
		}
		rec = v
	} else {
		if *tx == nil {
			t, err := db.bdb.Begin(false)
			if err != nil {
				return memEntry{}, false, fmt.Errorf("engine: read state: %w", err)
			}
			*tx = t
		}
		k, v := (*tx).Bucket(bucketKV).Cursor().Seek(key)
		if k == nil || !bytes.Equal(k, key) {
			return memEntry{}, false, nil
		}
		rec = v
	}
	e, ok = decodeRecord(key, rec)
	if !ok {
		return memEntry{}, false, db.corruptValue(key)
	}
	return e, true, nil
}

// ---- writes ----

const binaryLen = 10 // max uvarint length

// Put sets key to value and returns the write's revision.
func (db *DB) Put(key, value []byte, wo WriteOptions) (uint64, error) {
	b := &Batch{owned: true}
	b.data = make([]byte, 0, headerLen+1+2*binaryLen+len(key)+len(value))
	b.ops = make([]batchOp, 0, 1)
	b.Put(key, value)
	return db.Write(b, wo)
}

// Delete removes key (deleting a missing key still commits a revision).
func (db *DB) Delete(key []byte, wo WriteOptions) (uint64, error) {
	b := &Batch{owned: true}
	b.Delete(key)
	return db.Write(b, wo)
}

func (db *DB) walErr(err error) error {
	switch {
	case errors.Is(err, wal.ErrClosed):
		return ErrClosed
	case errors.Is(err, wal.ErrWriteRefused):
		return fmt.Errorf("%w: %w", ErrWriteRefused, err)
	case errors.Is(err, wal.ErrOutcomeUnknown):
		return fmt.Errorf("%w: %w: %w", ErrOutcomeUnknown, ErrLogFailed, err)
	case errors.Is(err, wal.ErrFailed):
		return fmt.Errorf("%w: %w", ErrLogFailed, err)
	}
	return err
}

func (db *DB) isClosed() bool {
	db.wmu.RLock()
	defer db.wmu.RUnlock()
	return db.closed
}

// Txn is the view and write set of one Update call. It is only valid inside
// the function passed to Update.
type Txn struct {
	db *DB
	b  Batch
}

// Get returns the value of key as of the latest committed write, including
// the writes this Txn made so far, or ErrNotFound.
func (t *Txn) Get(key []byte) ([]byte, error) {
	for i := len(t.b.ops) - 1; i >= 0; i-- {
		op := t.b.ops[i]
		if bytes.Equal(t.b.key(op), key) {
			if op.kind == opDelete {
				return nil, ErrNotFound
			}
			return bytes.Clone(t.b.value(op)), nil
		}
	}
	t.db.smu.RLock()
	defer t.db.smu.RUnlock()
	return t.db.getLocked(key)
}

// Put adds a write of value under key; the Txn copies both.
func (t *Txn) Put(key, value []byte) { t.b.Put(key, value) }

// Delete adds a deletion of key.
func (t *Txn) Delete(key []byte) { t.b.Delete(key) }

// Update runs fn with a view of the latest state — every write committed so
// far, none in flight — and commits what fn wrote as one atomic batch. Writes
// wait while fn runs, so fn must be short and must not call other DB
// methods. If fn returns an error nothing is written and Update returns it.
// If fn writes nothing, Update returns the last committed revision.
func (db *DB) Update(wo WriteOptions, fn func(*Txn) error) (uint64, error) {
	if err := db.waitForRoom(context.Background()); err != nil {
		return 0, err
	}
	db.wmu.Lock()
	if db.closed {
		db.wmu.Unlock()
		return 0, ErrClosed
	}
	if err := db.failure(); err != nil {
		db.wmu.Unlock()
		return 0, err
	}
	if db.replica != nil {
		db.wmu.Unlock()
		return 0, ErrReplica
	}
	// Let every enqueued record reach the memtable, or be refused.
	if err := db.settle(); err != nil {
		db.wmu.Unlock()
		return 0, err
	}
	t := &Txn{db: db}
	if err := fn(t); err != nil {
		db.wmu.Unlock()
		return 0, err
	}
	if t.b.Len() == 0 {
		db.wmu.Unlock()
		return db.committed(), nil
	}
	if err := t.b.check(&db.opts); err != nil {
		db.wmu.Unlock()
		return 0, err
	}
	t.b.owned = true
	t.b.stamp(db.now())
	rev, err := db.enqueue(&t.b)
	db.wmu.Unlock()
	if err != nil {
		return 0, err
	}
	return rev, db.commitOf(&t.b, wo).Wait()
}

// settle returns once every record enqueued is written or refused. Called
// with wmu held exclusively, so that nothing is enqueued meanwhile.
func (db *DB) settle() error {
	for {
		err := db.wal.WaitWritten(db.wal.LastEnqueued())
		if !errors.Is(err, wal.ErrWriteRefused) {
			return db.walErr(err)
		}
	}
}

// Sync is a durability barrier: it returns once every write acknowledged
// before the call is durable.
func (db *DB) Sync() error {
	if db.isClosed() {
		return ErrClosed
	}
	if db.replica != nil {
		return db.replicaSync()
	}
	return db.walErr(db.wal.Sync())
}

// SetCommitMode changes the default commit mode of later writes.
func (db *DB) SetCommitMode(m CommitMode) {
	if m == CommitSync || m == CommitAsync {
		db.mode.Store(int32(m))
	}
}

// CommitMode returns the default commit mode.
func (db *DB) CommitMode() CommitMode { return CommitMode(db.mode.Load()) }

// SetFlushInterval changes how often async writes are fsynced.
func (db *DB) SetFlushInterval(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("engine: flush interval %v must be positive", d)
	}
	if db.replica != nil {
		return errors.New("engine: a replica's flush interval is its log's")
	}
	db.wal.SetFlushInterval(d)
	return nil
}

// FlushInterval returns how often async writes are fsynced.
func (db *DB) FlushInterval() time.Duration {
	if db.replica != nil {
		return db.opts.FlushInterval // the log's owner sets its own
	}
	return db.wal.FlushInterval()
}

func (db *DB) committed() uint64 {
	if db.replica != nil {
		return db.replica.written.Load()
	}
	return db.wal.Written()
}

func (db *DB) failure() error {
	if p := db.fatal.Load(); p != nil {
		return *p
	}
	return nil
}

// Stats reports the DB's revisions and counters.
type Stats struct {
	CommitMode           CommitMode
	WrittenRevision      uint64        // last revision written to the log: visible to reads
	DurableRevision      uint64        // last revision known to be fsynced
	CheckpointedRevision uint64        // last revision checkpointed into the state file
	Fsyncs               uint64        // log fsyncs since Open
	RecordsSynced        uint64        // records those fsyncs made durable
	MaxFsync             time.Duration // slowest log fsync since Open
	FsyncSeconds         Histogram     // log fsync durations since Open, in seconds
	RecordsPerFsync      Histogram     // records made durable by each of those fsyncs
	WALBytes             int64         // bytes in log segment files on disk, the tail's zero fill included
	WALSegments          int
	// MemtableBytes is the memory the memtables hold (writes not yet
	// checkpointed, as the engine estimates it); MaxMemtableBytes is its
	// bound (Options.MaxMemtableBytes), past which writers wait.
	MemtableBytes    int64
	MaxMemtableBytes int64
	Checkpoints      uint64
	// ExpiredRemoved counts the expired keys that this DB removed since
	// Open (see the package doc, Expiry).
	ExpiredRemoved uint64
	// CheckpointFailures counts checkpoints that failed for want of space
	// (or another failed write of the state file) and will be tried again;
	// CheckpointErr is the last one's error, nil once a checkpoint succeeds.
	CheckpointFailures uint64
	CheckpointErr      error
	// LogWriteFailures counts the log writes that failed and were refused
	// (ErrWriteRefused) without failing the log, LogRecordsRefused the
	// writes refused with them; LogWriteErr is the latest such error.
	LogWriteFailures  uint64
	LogRecordsRefused uint64
	LogWriteErr       error
	Err               error // why writes are refused, once they are
	// Corruptions counts the reads of the state file that found it
	// damaged since Open: a value record whose checksum does not match
	// (ErrCorruptValue) or a damaged page (ErrCorruptState). Once it is
	// not zero the store is degraded: reads of the damaged keys fail
	// (others still work), and a restart does not repair it (see
	// Check). CorruptionErr is the last one's error, CorruptionTime when
	// it was found.
	Corruptions    uint64
	CorruptionErr  error
	CorruptionTime time.Time
	// Recovery is what opening the store cut from the log to recover from a
	// crash or from damage the state no longer needed (wal.Recovery).
	Recovery RecoveryStats

	// How long log records stay written but not fsynced (wal.Stats): the
	// age now of the oldest, and the longest over the last minute and
	// since Open. Counted for every record from its write, sync or async:
	// an upper bound on how old the acknowledged async writes a power loss
	// would take are.
	OldestUnsynced        time.Duration
	MaxUnsyncedLastMinute time.Duration
	MaxUnsyncedSinceOpen  time.Duration
}

// Histogram counts observations in buckets of fixed upper bounds, as a
// Prometheus histogram does (see wal.Histogram).
type Histogram = wal.Histogram

// RecoveryStats sum up the cuts that the last Open made to the log.
type RecoveryStats struct {
	Cuts    int    // stretches cut
	Bytes   int64  // bytes cut
	Records int    // valid records cut (found after a hole no fsync covered)
	Reason  string // why the first cut was made; empty without a cut
}

// WrittenRevision returns the last revision written to the log: every
// write up to it is visible to reads. It is the last revision applied to
// the memtables, which the log's writer applies once the records are in
// the file and before the log itself counts them as written: a watcher
// woken by the apply (the history's notice comes from it) finds them.
func (db *DB) WrittenRevision() uint64 {
	if db.replica != nil {
		return db.committed()
	}
	return db.memRev.Load()
}

// DurableRevision returns the last revision known to be fsynced. Cheaper
// than Stats.
func (db *DB) DurableRevision() uint64 {
	if db.replica != nil {
		return db.replica.durableRev()
	}
	return db.wal.Durable()
}

// Stats returns the DB's current revisions and counters. It lists the log
// directory to size it: call it for status, not on every request.
func (db *DB) Stats() Stats {
	if db.replica != nil {
		return db.statsWith(wal.Stats{}, 0)
	}
	return db.statsWith(db.wal.Stats(), db.wal.Size())
}

func (db *DB) statsWith(ws wal.Stats, walBytes int64) Stats {
	s := Stats{
		CommitMode:           db.CommitMode(),
		WrittenRevision:      ws.Written,
		DurableRevision:      ws.Durable,
		CheckpointedRevision: db.applied.Load(),
		Fsyncs:               ws.Fsyncs,
		RecordsSynced:        ws.RecordsSynced,
		MaxFsync:             ws.MaxFsync,
		FsyncSeconds:         ws.FsyncSeconds,
		RecordsPerFsync:      ws.RecordsPerFsync,
		WALBytes:             walBytes,
		WALSegments:          ws.Segments,
		MemtableBytes:        db.memBytes.Load(),
		MaxMemtableBytes:     db.opts.MaxMemtableBytes,
		Checkpoints:          db.checkpoints.Load(),
		ExpiredRemoved:       db.expiredRemoved.Load(),
		CheckpointFailures:   db.checkpointFailures.Load(),
		LogWriteFailures:     ws.WriteFailures,
		LogRecordsRefused:    ws.RecordsRefused,
		LogWriteErr:          ws.LastWriteErr,
		Err:                  db.failure(),

		OldestUnsynced:        ws.OldestUnsynced,
		MaxUnsyncedLastMinute: ws.MaxUnsyncedLastMinute,
		MaxUnsyncedSinceOpen:  ws.MaxUnsyncedSinceOpen,
	}
	if p := db.checkpointErr.Load(); p != nil {
		s.CheckpointErr = *p
	}
	if c := db.lastCorruption.Load(); c != nil {
		s.Corruptions = db.corruptions.Load()
		s.CorruptionErr, s.CorruptionTime = c.err, c.at
	}
	if db.replica != nil {
		db.replicaStats(&s)
		return s
	}
	if r := db.wal.Recovery(); len(r.Cuts) > 0 {
		s.Recovery = RecoveryStats{Cuts: len(r.Cuts), Bytes: r.Bytes(), Records: r.Records(), Reason: r.Cuts[0].Reason}
	}
	if s.Err == nil && ws.Err != nil {
		s.Err = fmt.Errorf("%w: %w", ErrLogFailed, ws.Err)
	}
	return s
}

// Close stops accepting writes, waits for those in flight, fsyncs the log,
// checkpoints everything into the state file and releases the directory. It
// is idempotent; calls after it return ErrClosed.
func (db *DB) Close() error {
	db.closeOnce.Do(func() { db.closeErr = db.close(true) })
	return db.closeErr
}

func (db *DB) close(checkpoint bool) error {
	db.wmu.Lock()
	db.closed = true
	db.wmu.Unlock()
	db.bpMu.Lock()
	db.bpCond.Broadcast()
	db.bpMu.Unlock()

	close(db.stop)
	db.wg.Wait()
	var errs []error
	if db.wal != nil {
		if err := db.wal.Drain(); err != nil {
			errs = append(errs, db.walErr(err))
		}
	}
	if checkpoint && db.failure() == nil && len(errs) == 0 {
		if err := db.checkpoint(); err != nil {
			errs = append(errs, err)
		}
	}
	if db.wal != nil {
		if err := db.wal.Close(); err != nil && len(errs) == 0 {
			errs = append(errs, db.walErr(err))
		}
	}
	db.smu.Lock()
	db.active, db.frozen = nil, nil
	db.view.close()
	db.view = nil
	db.smu.Unlock()
	if err := db.bdb.Close(); err != nil {
		errs = append(errs, fmt.Errorf("engine: close state: %w", err))
	}
	if err := db.hist.log.close(); err != nil {
		errs = append(errs, fmt.Errorf("engine: close history log: %w", err))
	}
	db.lock.Close()
	return errors.Join(errs...)
}

func lockPath(dir string) string { return filepath.Join(dir, "LOCK") }
