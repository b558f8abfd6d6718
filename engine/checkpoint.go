package engine

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

func (db *DB) kickCheckpoint() {
	select {
	case db.kick <- struct{}{}:
	default:
	}
}

// checkpointer moves committed writes into the state file every
// CheckpointInterval, or sooner when the memtable or the log written since
// the last checkpoint is large.
func (db *DB) checkpointer() {
	defer db.wg.Done()
	t := time.NewTicker(db.opts.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-db.stop:
			return
		case <-t.C:
		case <-db.kick:
		}
		if db.failure() != nil {
			continue
		}
		if err := db.checkpoint(); err != nil {
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
	frozen, rev := db.active, db.memRev
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
	start := time.Now()
	err := db.bdb.Update(func(tx *bolt.Tx) error {
		kv := tx.Bucket(bucketKV)
		var err error
		frozen.ordered().Scan(func(k string, e *memEntry) bool {
			if e.del {
				err = kv.Delete([]byte(k))
			} else {
				err = kv.Put([]byte(k), e.value)
			}
			return err == nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keyApplied, binary.BigEndian.AppendUint64(nil, rev))
	})
	if err != nil {
		return db.setFatal(fmt.Errorf("engine: checkpoint at revision %d: %w", rev, err))
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
	db.applied.Store(rev)
	db.checkpoints.Add(1)
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
			return db.setFatal(fmt.Errorf("engine: truncate log: %w", err))
		}
	}
	return nil
}

func (db *DB) setFatal(err error) error {
	werr := fmt.Errorf("%w: %w", ErrLogFailed, err)
	db.fatal.CompareAndSwap(nil, &werr)
	db.bpMu.Lock()
	db.bpCond.Broadcast()
	db.bpMu.Unlock()
	return werr
}
