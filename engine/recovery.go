package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"kvd/wal"
)

// lockDir takes an exclusive flock on dir/LOCK so that one process at a time
// uses the directory. The lock goes with the process.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(lockPath(dir), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("engine: open lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrLocked, dir)
		}
		return nil, fmt.Errorf("engine: lock %s: %w", dir, err)
	}
	return f, nil
}

// recover opens the state file and replays the log records after its
// applied revision into the memtable.
func (db *DB) recover() error {
	statePath := filepath.Join(db.dir, "state.db")
	_, statErr := os.Stat(statePath)
	bdb, err := bolt.Open(statePath, 0o640, &bolt.Options{
		InitialMmapSize: 256 << 20,
		FreelistType:    bolt.FreelistMapType,
	})
	if err != nil {
		return fmt.Errorf("engine: open state %s: %w", statePath, err)
	}
	db.bdb = bdb
	var applied uint64
	err = bdb.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketKV); err != nil {
			return err
		}
		switch f := meta.Get(keyFormat); {
		case f == nil:
			if err := meta.Put(keyFormat, []byte(stateFormat)); err != nil {
				return err
			}
		case string(f) != stateFormat:
			return fmt.Errorf("%w: state file has format %q, this build reads %q", ErrFormat, f, stateFormat)
		}
		if v := meta.Get(keyApplied); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("engine: state file: bad applied revision")
			}
			applied = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("engine: open state: %w", err)
	}
	if errors.Is(statErr, os.ErrNotExist) {
		// The state file is new: make its directory entry durable.
		if err := syncDir(db.dir); err != nil {
			return err
		}
	}
	db.applied.Store(applied)
	db.memRev = applied

	replayed := 0
	replay := func(rev uint64, payload []byte) error {
		b, err := decodeBatch(payload)
		if err != nil {
			return err
		}
		db.applyBatch(b)
		db.memRev = rev
		replayed++
		if db.active.bytes >= db.opts.MaxMemtableBytes {
			// Replayed records are durable (the log fsyncs what it finds
			// before replaying it), so they may be checkpointed now.
			db.memBytes.Store(db.active.bytes)
			return db.checkpoint()
		}
		return nil
	}
	walOpts := wal.Options{
		SegmentSize:      db.opts.SegmentSize,
		GroupCommitDelay: db.opts.GroupCommitDelay,
		FlushInterval:    db.opts.FlushInterval,
		FlushBytes:       db.opts.FlushBytes,
		Logger:           db.log,
		OnWritten:        db.applyWritten,
		OnSync:           db.opts.OnSync,
		SyncFile:         db.opts.SyncFile,
	}
	walDir := filepath.Join(db.dir, "wal")
	_, walStat := os.Stat(walDir)
	// The checkpoint inside replay needs db.wal for durability waits; during
	// replay every record is already durable, so it is given a stand-in.
	db.wal = nil
	l, err := wal.Open(walDir, applied+1, walOpts, replay)
	if err != nil {
		return fmt.Errorf("engine: recover: %w", err)
	}
	db.wal = l
	if errors.Is(walStat, os.ErrNotExist) {
		if err := syncDir(db.dir); err != nil {
			l.Close()
			return err
		}
	}
	db.memBytes.Store(db.active.bytes)
	if db.view, err = newReadView(db.bdb); err != nil {
		l.Close()
		return fmt.Errorf("engine: begin read view: %w", err)
	}
	db.log.Info("engine: opened", "dir", db.dir, "applied", db.applied.Load(), "replayed", replayed, "rev", l.Written())
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("engine: sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("engine: sync dir %s: %w", dir, err)
	}
	return nil
}
