package engine

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/kvdstore/kvd/wal"
)

// The commit pipeline. A write goes through three steps: it is submitted
// (given its revision and queued for the log), written (in the log file,
// applied to the memtable, visible to reads) and made durable (fsynced).
// Submit and TrySubmit do the first and return a Commit, whose waits do the
// other two; Write and WriteContext do all of them. Whether a write is
// acknowledged once written (async) or once durable (sync) is decided here,
// once, when it is submitted: Commit.Sync says which.

// A Commit is a batch submitted to the DB and not yet, or not known to be,
// acknowledged: its revision, and the waits for its acknowledgement. Submit
// and TrySubmit return it. Waiting for the newest of several commits writes
// (or fsyncs) all of them in one go, so that a caller such as a server's
// event loop can commit the writes of many clients together and then ask
// each commit for its own outcome, which is then known at once. A Commit
// refers to its batch: it is valid until the batch is reset or submitted
// again.
type Commit struct {
	db   *DB
	b    *Batch
	rev  uint64
	sync bool
}

// Revision is the revision the batch was given: every write up to it is
// visible once WaitWritten returns nil. For an empty batch, which commits
// nothing, it is the last revision written when it was submitted.
func (c Commit) Revision() uint64 { return c.rev }

// Sync reports whether the write is acknowledged once durable (sync) rather
// than once written (async): its WriteOptions' durability, or the DB's
// commit mode when it was submitted.
func (c Commit) Sync() bool { return c.sync }

// Wait returns once the write is acknowledged, durable if Sync, else
// written, or tells why it will not be (see WaitWritten and WaitDurable).
func (c Commit) Wait() error {
	if c.sync {
		return c.WaitDurable()
	}
	return c.WaitWritten()
}

// WaitWritten returns once the batch is in the log file and visible to
// reads. Otherwise it says why the batch will never be: ErrWriteRefused
// (not executed; the log could not write it), ErrLogFailed (not executed;
// the log failed before the batch reached it), ErrOutcomeUnknown with
// ErrLogFailed (perhaps executed), ErrClosed.
func (c Commit) WaitWritten() error {
	b := c.b
	if b == nil || b.rev == 0 || atomic.LoadUint64(&b.wrote) == b.rev {
		return nil // empty (nothing was queued), or written
	}
	db := c.db
	err := db.wal.WaitWritten(b.rev)
	if atomic.LoadUint64(&b.wrote) == b.rev {
		return nil
	}
	if err == nil {
		if f := db.failure(); f != nil {
			// Written, but the DB failed before it could apply it.
			return fmt.Errorf("%w: %w", ErrOutcomeUnknown, f)
		}
	}
	if err == nil || errors.Is(err, wal.ErrWriteRefused) {
		// Refused after a failed write; its revision may already have
		// gone to a later write, which the log then waited for.
		return db.refused()
	}
	return db.walErr(err)
}

// WaitDurable returns once the batch and every write before it are
// fsynced. Concurrent callers share fsyncs. Its errors are WaitWritten's;
// once the batch is written, a failed fsync gives ErrOutcomeUnknown.
func (c Commit) WaitDurable() error {
	if err := c.WaitWritten(); err != nil || c.b == nil || c.b.rev == 0 {
		return err
	}
	return c.db.walErr(c.db.wal.WaitDurable(c.b.rev))
}

// Write commits every write of b atomically and returns the revision of the
// batch, once it is acknowledged as wo asks. b.Results then holds the
// outcome of each of its operations. An empty batch commits nothing and
// returns the last revision written.
func (db *DB) Write(b *Batch, wo WriteOptions) (uint64, error) {
	c, err := db.WriteContext(context.Background(), b, wo)
	return c.Revision(), err
}

// WriteContext is Write with a context that bounds the wait for the DB to
// have room for the batch (see TrySubmit), returning the batch's Commit
// once acknowledged. If ctx is done first, the batch is not executed and
// WriteContext returns ctx's error. Once submitted, the batch cannot be
// withdrawn: WriteContext then waits for its outcome, which the log bounds,
// and returns its Commit with any error, so that the caller knows the
// revision and mode of a write whose outcome is unknown.
func (db *DB) WriteContext(ctx context.Context, b *Batch, wo WriteOptions) (Commit, error) {
	if err := ctx.Err(); err != nil {
		return Commit{}, err
	}
	c, err := db.submit(b, wo, ctx)
	if err != nil {
		return Commit{}, err
	}
	return c, c.Wait()
}

// Submit queues b for commit without waiting for it and returns its Commit.
// The write is not yet visible, acknowledged or durable: see the Commit's
// waits. b must not be changed until the Commit's WaitWritten returns. It
// blocks only while the memtables are over their bound (see TrySubmit).
func (db *DB) Submit(b *Batch, wo WriteOptions) (Commit, error) {
	return db.submit(b, wo, context.Background())
}

// TrySubmit is Submit for a caller that must never block, such as an event
// loop that also serves reads: while the memtables are over
// Options.MaxMemtableBytes it starts a checkpoint and returns ErrThrottled
// instead of waiting for it. The caller can then wait elsewhere (Write waits
// for room) or retry later.
func (db *DB) TrySubmit(b *Batch, wo WriteOptions) (Commit, error) {
	return db.submit(b, wo, nil)
}

// submit checks b, waits for room (with ctx; a nil ctx does not wait), and
// queues b.
func (db *DB) submit(b *Batch, wo WriteOptions, ctx context.Context) (Commit, error) {
	if db.replica != nil {
		return Commit{}, ErrReplica
	}
	if err := b.check(&db.opts); err != nil {
		return Commit{}, err
	}
	if b.Len() == 0 {
		return Commit{rev: db.committed()}, nil
	}
	if db.memBytes.Load() >= db.opts.MaxMemtableBytes {
		if ctx == nil {
			db.kickCheckpoint()
			return Commit{}, ErrThrottled
		}
		if err := db.waitForRoom(ctx); err != nil {
			return Commit{}, err
		}
	}
	b.stamp(db.now())
	db.wmu.RLock()
	if db.closed {
		db.wmu.RUnlock()
		return Commit{}, ErrClosed
	}
	if err := db.failure(); err != nil {
		db.wmu.RUnlock()
		return Commit{}, err
	}
	_, err := db.enqueue(b)
	db.wmu.RUnlock()
	if err != nil {
		return Commit{}, err
	}
	return db.commitOf(b, wo), nil
}

// commitOf is the Commit of b, just enqueued: the one place that decides
// whether a write is acknowledged once durable or once written.
func (db *DB) commitOf(b *Batch, wo WriteOptions) Commit {
	return Commit{db: db, b: b, rev: b.rev, sync: wo.Sync(CommitMode(db.mode.Load()))}
}

// Sync reports whether a write with these options is acknowledged once
// durable (true) or once written, under the default commit mode m: its
// Durability, or m when it has none. The one rule, for a DB's writes
// (Commit.Sync) and for those a cluster replicates.
func (wo WriteOptions) Sync(m CommitMode) bool {
	switch wo.Durability {
	case DurabilitySync:
		return true
	case DurabilityAsync:
		return false
	}
	return m == CommitSync
}

// enqueue hands b to the log. Called with wmu held.
func (db *DB) enqueue(b *Batch) (uint64, error) {
	atomic.StoreUint64(&b.wrote, 0)
	b.rev = 0
	b.clearResults()
	rev, err := db.wal.Enqueue(b.data, b)
	if err != nil {
		return 0, db.walErr(err)
	}
	b.rev = rev
	return rev, nil
}

// refused is the error of a write the log refused.
func (db *DB) refused() error {
	if cause := db.wal.Stats().LastWriteErr; cause != nil {
		return fmt.Errorf("%w: %w", ErrWriteRefused, cause)
	}
	return ErrWriteRefused
}

// waitForRoom makes a writer wait while the memtables are over their bound,
// after starting a checkpoint to free them, until ctx is done.
func (db *DB) waitForRoom(ctx context.Context) error {
	if db.memBytes.Load() < db.opts.MaxMemtableBytes {
		return nil
	}
	db.kickCheckpoint()
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() {
			db.bpMu.Lock()
			db.bpCond.Broadcast()
			db.bpMu.Unlock()
		})
		defer stop()
	}
	db.bpMu.Lock()
	defer db.bpMu.Unlock()
	for db.memBytes.Load() >= db.opts.MaxMemtableBytes {
		if err := db.failure(); err != nil {
			return err
		}
		if db.isClosed() {
			return ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		db.bpCond.Wait()
	}
	return nil
}
