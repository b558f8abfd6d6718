package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kvdstore/kvd/wal"
)

func (db *DB) kickCheckpoint() {
	select {
	case db.kick <- struct{}{}:
	default:
	}
}

// checkpointer moves committed writes into the state file every
// CheckpointInterval, or sooner when the memtable or the log written since
// the last checkpoint is large. After a checkpoint that failed for want of
// space it waits for the next interval: a kick per write would retry a
// large commit on a full disk as fast as writes come.
func (db *DB) checkpointer() {
	defer db.wg.Done()
	t := time.NewTicker(db.opts.CheckpointInterval)
	defer t.Stop()
	rel := newMemReleaser(db.memBytes.Load) // memory.go
	defer rel.stop()
	backoff := false
	for {
		select {
		case <-db.stop:
			return
		case <-t.C:
		case now := <-rel.due():
			rel.release(now)
			continue
		case <-db.kick:
			if backoff {
				continue
			}
		}
		if db.failure() != nil {
			continue
		}
		held, cps := db.memBytes.Load(), db.checkpoints.Load()
		err := db.checkpoint()
		if db.opts.ReleaseMemory && db.checkpoints.Load() != cps {
			// What the memtables hold less: less than the checkpoint
			// dropped when writes went on meanwhile, exact once they stop.
			rel.checkpointed(held-db.memBytes.Load(), time.Now())
		}
		backoff = err != nil
		if err != nil && db.failure() != nil {
			db.log.Error("engine: checkpoint failed; writes refused until restart", "err", err)
		}
	}
}

// checkpoint freezes the active memtable, waits until its last revision is
// durable in the log, writes it and the applied revision to the state file
// in one fsynced transaction, then drops it from memory and truncates the
// log. The state file therefore always holds a durable prefix of the log.
// Only the checkpointer goroutine (or Open and Close, when it is not
// running) calls it.
//
// A commit that fails in a write of the state file (for want of space,
// say), which bbolt rolls back, is not fatal: the frozen memtable goes back
// into the active one, the failure is counted and logged, and a later
// checkpoint tries again. Writes go on meanwhile, until the memtables reach
// MaxMemtableBytes. A failed fsync of the state file, or anything else, is
// fatal. A log truncation that could not be written is retried by the next
// checkpoint.
func (db *DB) checkpoint() error {
	db.smu.Lock()
	if db.frozen != nil {
		db.smu.Unlock()
		return fmt.Errorf("engine: checkpoint: a previous checkpoint did not finish")
	}
	if db.active.len() == 0 {
		db.smu.Unlock()
		return nil
	}
	frozen, rev := db.active, db.memRev.Load()
	var index uint64 // a replica's log index at rev
	if db.replica != nil {
		index = db.replica.index
	}
	db.frozen, db.active = frozen, newMemtable()
	// Readers fall back to their own transactions until the commit is done.
	view := db.view
	db.view = nil
	db.smu.Unlock()
	view.close()

	if db.wal != nil {
		if err := db.wal.WaitDurable(rev); err != nil {
			return db.setFatal(fmt.Errorf("engine: checkpoint at revision %d: %w", rev, err))
		}
	}
	if db.replica != nil {
		// Never past what the replicated log has made durable.
		if err := db.replica.log.WaitDurable(index); err != nil {
			db.unfreeze(frozen)
			return db.checkpointFailed(fmt.Errorf("engine: checkpoint at index %d: %w", index, err))
		}
	}
	start := time.Now()
	// The change history first: the log must hold every change set
	// through the state file's applied revision.
	newOldest, err := db.persistHistory(rev)
	if err != nil {
		db.unfreeze(frozen)
		return db.checkpointFailed(fmt.Errorf("engine: checkpoint at revision %d: %w", rev, err))
	}
	db.hist.newOldest = newOldest
	// The transaction reads pages of the state file (the old records, for
	// their create revisions, and the pages it rewrites): a damaged one
	// gives ErrCorruptState, which fails the DB (see fault.go).
	var keys, n int64 // what the checkpoint adds to the state file's data
	gerr := db.readState(nil, func() { err = db.bdb.Update(db.checkpointTx(frozen, rev, index, &keys, &n)) })
	if gerr != nil {
		err = gerr
	}
	if err != nil {
		err = fmt.Errorf("engine: checkpoint at revision %d: %w", rev, err)
		if !retryableCommitError(err) {
			return db.setFatal(err)
		}
		db.unfreeze(frozen)
		return db.checkpointFailed(err)
	}
	view, verr := newReadView(db.bdb)
	db.smu.Lock()
	db.frozen = nil
	db.view = view
	db.smu.Unlock()
	if verr != nil {
		return db.setFatal(fmt.Errorf("engine: begin read view: %w", verr))
	}
	db.memBytes.Add(-frozen.bytes)
	db.data.keys.Add(keys)
	db.data.bytes.Add(n)
	db.applied.Store(rev)
	db.hist.checkpointed(rev, db.hist.newOldest)
	if err := db.hist.log.truncate(db.hist.log.generation(), db.OldestRevision()); err != nil {
		db.log.Warn("engine: cut the change history's log", "err", err) // the next checkpoint cuts it
	}
	db.checkpoints.Add(1)
	db.checkpointErr.Store(nil)
	db.bpMu.Lock()
	db.bpCond.Broadcast()
	db.bpMu.Unlock()
	db.log.Debug("engine: checkpoint", "rev", rev, "keys", frozen.len(), "took", time.Since(start))

	if db.wal != nil {
		keep := uint64(1)
		if rev+1 > db.opts.WALRetain {
			keep = rev + 1 - db.opts.WALRetain
		}
		if err := db.wal.TruncateFront(keep); err != nil {
			err = fmt.Errorf("engine: truncate log: %w", err)
			if errors.Is(err, wal.ErrFailed) {
				return db.setFatal(err)
			}
			return db.checkpointFailed(err)
		}
	}
	return nil
}

// checkpointTx is the transaction of a checkpoint: it writes frozen's
// entries as value records, rev as the applied revision (and, for a
// replica, index as the applied log index), and counts in *keys and *n the
// keys and bytes it adds to the state file's data (both may be negative;
// diskusage.go).
func (db *DB) checkpointTx(frozen *memtable, rev, index uint64, keys, n *int64) func(*bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		kv := tx.Bucket(bucketKV)
		*keys, *n = 0, 0
		if first, _, ok := frozen.ordered().Min(); ok {
			kv.FillPercent = db.fillPercent(kv, first)
		}
		var err error
		var arena []byte // bbolt keeps the keys and records until the commit
		exp := tx.Bucket(bucketExpiry)
		var ekey []byte
		// A key after the state file's last one replaces no record: the
		// keys of a bulk load often are, and then cost one search of the
		// tree each instead of two.
		var last []byte
		if k, _ := kv.Cursor().Last(); k != nil {
			last = bytes.Clone(k)
		}
		frozen.ordered().Scan(func(k string, e *memEntry) bool {
			if need := recordHeaderLen + len(e.value) + 8 + 2*len(k); cap(arena)-len(arena) < need {
				arena = make([]byte, 0, max(need, 1<<20))
			}
			k0 := len(arena)
			arena = append(arena, k...)
			key := arena[k0:len(arena):len(arena)]
			// The record replaced: its create revision may be inherited,
			// its expiry's index entry goes.
			var below memEntry
			var old []byte
			if last != nil && bytes.Compare(key, last) <= 0 {
				old = kv.Get(key)
			}
			if old != nil {
				var ok bool
				if below, ok = decodeRecord(key, old); !ok {
					err = db.corruptValue(key)
					return false
				}
				if below.expires != 0 && (e.del || below.expires != e.expires) {
					ekey = expiryKey(ekey[:0], below.expires, key)
					if err = exp.Delete(ekey); err != nil {
						return false
					}
				}
			} else {
				below.del = true
			}
			if !below.del {
				*keys--
				*n -= int64(len(key) + len(below.value))
			}
			if e.del {
				err = kv.Delete(key)
				return err == nil
			}
			*keys++
			*n += int64(len(key) + len(e.value))
			create := e.create
			if e.inherit && e.inheritsFrom(below) {
				create = below.create
			}
			r0 := len(arena)
			arena = appendRecord(arena, key, create, e.mod, e.expires, e.value)
			if err = kv.Put(key, arena[r0:]); err != nil {
				return false
			}
			if e.expires != 0 && below.expires != e.expires {
				k0 := len(arena)
				arena = expiryKey(arena, e.expires, key)
				err = exp.Put(arena[k0:], nil)
			}
			return err == nil
		})
		if err != nil {
			return err
		}
		if err := db.putStateData(tx, rev, *keys, *n); err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		if !db.noHistory {
			// A compaction may have moved the oldest revision since
			// persistHistory read it: it never goes back.
			db.hist.newOldest = max(db.hist.newOldest, getUint64(meta, keyHistoryOldest))
			if err := meta.Put(keyHistoryOldest, binary.BigEndian.AppendUint64(nil, db.hist.newOldest)); err != nil {
				return err
			}
			if err := meta.Put(keyHistoryLast, binary.BigEndian.AppendUint64(nil, db.hist.log.last)); err != nil {
				return err
			}
		}
		if db.replica != nil {
			if err := meta.Put(keyAppliedIndex, binary.BigEndian.AppendUint64(nil, index)); err != nil {
				return err
			}
		}
		return meta.Put(keyApplied, binary.BigEndian.AppendUint64(nil, rev))
	}
}

// retryableCommitError reports whether err, from a failed commit of the
// state file, is a failed pwrite of its pages or meta page, which bbolt
// rolls back, leaving the file as it was (the meta page it may have torn is
// the older of two, and checksummed). A failed fdatasync (which bbolt
// returns as a bare errno) or fsync is not, nor is anything this cannot
// classify, such as a failed ftruncate growing the file (bbolt formats
// that one with %s: its cause is lost).
func retryableCommitError(err error) bool {
	var pe *os.PathError
	return errors.As(err, &pe) && pe.Op == "write"
}

// unfreeze puts the memtable of a failed checkpoint back: the writes
// applied since it was frozen are newer and win.
func (db *DB) unfreeze(frozen *memtable) {
	view, verr := newReadView(db.bdb)
	db.smu.Lock()
	active := db.active
	before := frozen.bytes + active.bytes
	for k, e := range active.byKey {
		frozen.set([]byte(k), *e)
	}
	frozen.logBytes += active.logBytes
	db.active, db.frozen, db.view = frozen, nil, view
	after := frozen.bytes
	db.smu.Unlock()
	db.memBytes.Add(after - before)
	db.bpMu.Lock()
	db.bpCond.Broadcast()
	db.bpMu.Unlock()
	if verr != nil {
		db.setFatal(fmt.Errorf("engine: begin read view: %w", verr))
	}
}

// checkpointFailed counts and logs a checkpoint that failed without making
// the DB fail, and returns err.
func (db *DB) checkpointFailed(err error) error {
	n := db.checkpointFailures.Add(1)
	db.checkpointErr.Store(&err)
	db.log.Warn("engine: checkpoint failed; writes go on, trying again later", "failures", n, "err", err)
	return err
}

func (db *DB) setFatal(err error) error {
	werr := fmt.Errorf("%w: %w", ErrLogFailed, err)
	db.fatal.CompareAndSwap(nil, &werr)
	db.bpMu.Lock()
	db.bpCond.Broadcast()
	db.bpMu.Unlock()
	return werr
}
