package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kvdstore/kvd/wal"
)

// Maintenance of an open store that reads the state file as a snapshot
// does, in one read transaction: Verify, and the log compaction beside it.

// VerifyReport is what Verify found.
type VerifyReport struct {
	Keys     int      // value records checked
	Problems []string // damage found; empty when the state file is sound
}

// Verify checks the open store's state file in one read transaction:
// bbolt's consistency check (free and reachable pages, key order) and the
// checksum of every value record. Damage marks the store degraded, as a
// read that finds it does (Stats.Corruptions). progress, if not nil, is
// called every 4096 records with the number checked so far; an error it
// returns stops the check. It runs in a writing transaction that it rolls
// back (bbolt's check is not safe beside one otherwise): checkpoints wait
// for it, and writes go on into the memtable up to MaxMemtableBytes.
func (db *DB) Verify(progress func(keys int) error) (VerifyReport, error) {
	var rep VerifyReport
	if db.isClosed() {
		return rep, ErrClosed
	}
	db.smu.RLock()
	if db.active == nil {
		db.smu.RUnlock()
		return rep, ErrClosed
	}
	// bbolt's check is not safe beside a writing transaction unless it
	// runs in one: checkpoints wait for it, writes go on into the memtable.
	tx, err := db.bdb.Begin(true)
	db.smu.RUnlock()
	if err != nil {
		return rep, fmt.Errorf("engine: verify: %w", err)
	}
	defer tx.Rollback()
	var stop error
	err = db.readState(nil, func() {
		for cerr := range tx.Check(bolt.WithKVStringer(hexStringer{})) {
			rep.Problems = append(rep.Problems, cerr.Error())
			if len(rep.Problems) >= 1000 {
				break
			}
		}
		kv := tx.Bucket(bucketKV)
		if kv == nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("no bucket %q", bucketKV))
			return
		}
		c := kv.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if _, ok := decodeRecord(k, v); !ok {
				rep.Problems = append(rep.Problems, db.corruptValue(k).Error())
			}
			rep.Keys++
			if progress != nil && rep.Keys%4096 == 0 {
				if stop = progress(rep.Keys); stop != nil {
					return
				}
			}
		}
	})
	if err != nil {
		rep.Problems = append(rep.Problems, err.Error())
		return rep, nil
	}
	if stop != nil {
		return rep, stop
	}
	if len(rep.Problems) > 0 {
		db.sawCorruption(fmt.Errorf("%w: verify found %d problems, the first: %s", ErrCorruptState, len(rep.Problems), rep.Problems[0]))
	}
	return rep, nil
}

// hexStringer prints keys and values in bbolt's check messages as their
// lengths only: they are users' data.
type hexStringer struct{}

func (hexStringer) KeyToString(k []byte) string   { return fmt.Sprintf("<key of %d bytes>", len(k)) }
func (hexStringer) ValueToString(v []byte) string { return fmt.Sprintf("<value of %d bytes>", len(v)) }

// CompactLog drops the log's records below rev, keeping at least every
// record not yet checkpointed into the state file (those are needed to
// recover). It returns the first revision the log still holds records
// from. Only the log's history is dropped: the log is the only history the
// engine keeps today.
func (db *DB) CompactLog(rev uint64) (uint64, error) {
	if db.isClosed() {
		return 0, ErrClosed
	}
	keep := min(rev, db.applied.Load()+1)
	if keep < 1 {
		keep = 1
	}
	if err := db.wal.TruncateFront(keep); err != nil {
		return 0, fmt.Errorf("engine: compact log below revision %d: %w", keep, err)
	}
	return keep, nil
}

// defragStaged is the fresh state file a defragmentation writes before it
// swaps it in; Open removes one a crash left.
const defragStaged = "state.db.defrag"

// DefragReport is what Defrag did.
type DefragReport struct {
	Before, After int64 // sizes of the state file, in bytes
}

// Defrag rewrites the state file into a fresh, compact one and swaps it in:
// space freed by deletions (which bbolt keeps in the file) is given back.
// Checkpoints pause while it copies; writes go on into the memtable (up to
// MaxMemtableBytes, where they wait); reads go on, and wait only for the
// swap, which also waits for open snapshots to be closed. A crash leaves
// the old file or the new one, which hold the same checkpoint (the staged
// copy is removed at the next Open).
func (db *DB) Defrag() (DefragReport, error) {
	var rep DefragReport
	if db.isClosed() {
		return rep, ErrClosed
	}
	statePath := filepath.Join(db.dir, "state.db")
	staged := filepath.Join(db.dir, defragStaged)
	// Pause checkpoints: an empty frozen memtable makes the checkpointer
	// wait, and reads and scans see nothing in it.
	pause := newMemtable()
	for {
		db.smu.Lock()
		if db.active == nil {
			db.smu.Unlock()
			return rep, ErrClosed
		}
		if db.frozen == nil {
			db.frozen = pause
			db.smu.Unlock()
			break
		}
		db.smu.Unlock()
		time.Sleep(10 * time.Millisecond) // a checkpoint is committing
	}
	resume := func() {
		db.smu.Lock()
		if db.frozen == pause {
			db.frozen = nil
		}
		db.smu.Unlock()
		db.bpMu.Lock()
		db.bpCond.Broadcast()
		db.bpMu.Unlock()
		db.kickCheckpoint()
	}
	if fi, err := os.Stat(statePath); err == nil {
		rep.Before = fi.Size()
	}
	os.Remove(staged)
	dst, err := bolt.Open(staged, 0o640, &bolt.Options{FreelistType: bolt.FreelistMapType})
	if err != nil {
		resume()
		return rep, fmt.Errorf("engine: defrag: %w", err)
	}
	var cerr error
	if err := db.readState(nil, func() { cerr = bolt.Compact(dst, db.bdb, 64<<20) }); err != nil {
		cerr = err
	}
	if err := dst.Close(); err != nil && cerr == nil {
		cerr = err
	}
	if cerr != nil {
		os.Remove(staged)
		resume()
		return rep, fmt.Errorf("engine: defrag: %w", cerr)
	}
	// Swap: no reader may use the state file meanwhile.
	db.smu.Lock()
	db.view.close()
	db.view = nil
	var errs []error
	if err := db.bdb.Close(); err != nil {
		errs = append(errs, fmt.Errorf("engine: defrag: close state: %w", err))
	}
	db.bdb = nil
	if len(errs) == 0 {
		if err := os.Rename(staged, statePath); err != nil {
			errs = append(errs, fmt.Errorf("engine: defrag: %w", err))
		} else if err := wal.SyncDir(db.dir); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := db.openState(statePath); err != nil {
		errs = append(errs, err)
	} else if db.view, err = newReadView(db.bdb); err != nil {
		errs = append(errs, err)
	}
	if db.frozen == pause {
		db.frozen = nil
	}
	db.smu.Unlock()
	resume()
	if len(errs) > 0 {
		os.Remove(staged)
		return rep, db.setFatal(errors.Join(errs...))
	}
	if fi, err := os.Stat(statePath); err == nil {
		rep.After = fi.Size()
	}
	db.log.Info("engine: defragmented the state file", "before", rep.Before, "after", rep.After)
	return rep, nil
}
