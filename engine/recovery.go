package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kvdstore/kvd/internal/faults"
	"github.com/kvdstore/kvd/wal"
)

// recover opens the state file and replays the log records after its
// applied revision into the memtable.
func (db *DB) recover() error {
	applied, err := db.openStateFile()
	if err != nil {
		return err
	}
	db.applied.Store(applied)
	db.memRev.Store(applied)

	return db.replay(applied)
}

// openStateFile is what recover and recoverReplica share: it finishes or
// discards a restore a crash left, opens the state file (created if
// missing, its directory entry made durable) and its change history, and
// returns its applied revision.
func (db *DB) openStateFile() (applied uint64, err error) {
	if err := db.finishRestore(); err != nil {
		return 0, err
	}
	statePath := filepath.Join(db.dir, "state.db")
	_, statErr := os.Stat(statePath)
	if err := checkStateFile(statePath); err != nil {
		return 0, err
	}
	if applied, err = db.openState(statePath); err != nil {
		return 0, err
	}
	if errors.Is(statErr, os.ErrNotExist) {
		// The state file is new: make its directory entry durable.
		if err := wal.SyncDir(db.dir); err != nil {
			return 0, err
		}
	}
	if err := db.openHistory(applied); err != nil {
		return 0, fmt.Errorf("engine: open history: %w", err)
	}
	return applied, nil
}

// openState opens the bbolt state file, creating its buckets and format
// marker if new, and returns its applied revision. bbolt reads the file
// through a memory map: a damaged file that checkStateFile missed would
// fault; such a fault is turned into ErrCorruptState.
func (db *DB) openState(statePath string) (applied uint64, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			// bbolt may hold its locks after the panic: Close would wait
			// for them forever, so the handle is abandoned instead.
			db.bdb = nil
			err = fmt.Errorf("%w: %s: %v", ErrCorruptState, statePath, r)
		}
	}()
	bdb, err := bolt.Open(statePath, 0o640, &bolt.Options{
		InitialMmapSize: 256 << 20,
		FreelistType:    bolt.FreelistMapType,
		PageSize:        db.opts.pageSize,
		Timeout:         time.Second, // DIR/LOCK already keeps other processes out
	})
	if errors.Is(err, bolt.ErrTimeout) {
		// bbolt's own flock on state.db is held: another process has the
		// store open although DIR/LOCK was free (deleted and recreated).
		return 0, fmt.Errorf("%w: %s (its state file is locked; was %s deleted?)", ErrLocked, db.dir, lockPath(db.dir))
	}
	if err != nil {
		return 0, fmt.Errorf("engine: open state %s: %w", statePath, err)
	}
	db.bdb = bdb
	err = bdb.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketKV); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketExpiry); err != nil {
			return err
		}
		if v := meta.Get(keyApplied); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("engine: state file: bad applied revision")
			}
			applied = binary.BigEndian.Uint64(v)
		}
		switch f := meta.Get(keyFormat); {
		case f == nil:
			return meta.Put(keyFormat, []byte(stateFormat))
		case string(f) == stateFormatV1 || string(f) == stateFormatV2:
			from := string(f)
			n, err := migrate(tx, from, applied)
			if err != nil {
				return fmt.Errorf("migrate from format %s: %w", from, err)
			}
			db.log.Info("engine: migrated state file", "from", from, "to", stateFormat, "keys", n, "rev", applied)
			return nil
		case string(f) != stateFormat:
			return fmt.Errorf("%w: state file has format %q, this build reads %q, %q and %q", ErrFormat, f, stateFormatV1, stateFormatV2, stateFormat)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("engine: open state: %w", err)
	}
	db.loadStateData(applied)
	return applied, nil
}

// migrate rewrites a state file of format 1 or 2 in the current format,
// in tx. Neither had expiry, so no key gets one, and the expiry index
// starts empty.
//
// Format 2's records keep their revisions. Format 1's values were bare: each
// goes into a value record with create and mod revisions both applied, the
// revision the file was checkpointed at. Format 1 did not record the
// revisions of keys; applied is the newest revision that can have written
// them, so the revisions a key gets are never older than its true ones, and
// every write after the migration has a greater one.
//
// The whole file is rewritten in one transaction: a crash leaves it in its
// old format, and the next Open migrates it again. A format 2 record that
// does not check fails the migration (ErrCorruptValue), which leaves the
// file as it was.
func migrate(tx *bolt.Tx, from string, applied uint64) (int, error) {
	c := tx.Bucket(bucketKV).Cursor()
	n := 0
	for k, v := c.First(); k != nil; k, v = c.Next() {
		key := bytes.Clone(k)
		var rec []byte
		if from == stateFormatV1 {
			rec = appendRecord(nil, key, applied, applied, 0, v)
		} else {
			e, ok := decodeRecordV2(key, v)
			if !ok {
				return n, fmt.Errorf("%w: key of %d bytes", ErrCorruptValue, len(key))
			}
			rec = appendRecord(nil, key, e.create, e.mod, 0, e.value)
		}
		if err := c.Bucket().Put(key, rec); err != nil {
			return n, err
		}
		n++
		// A Put may move the cursor's page: seek back to the key.
		if k, _ = c.Seek(key); !bytes.Equal(k, key) {
			return n, fmt.Errorf("key lost after rewriting it")
		}
	}
	return n, tx.Bucket(bucketMeta).Put(keyFormat, []byte(stateFormat))
}

// replay replays the log records after applied into the memtable and opens
// the log for writing.
func (db *DB) replay(applied uint64) error {
	replayed := 0
	replay := func(rev uint64, payload []byte) error {
		b, err := decodeBatch(payload)
		if err != nil {
			return err
		}
		if err := db.applyBatch(rev, b); err != nil {
			return fmt.Errorf("engine: replay revision %d: %w", rev, err)
		}
		db.active.logBytes += int64(len(payload))
		db.memRev.Store(rev)
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
		Preallocate:      db.opts.Preallocate,
		Logger:           db.log,
		OnWritten:        db.applyWritten,
		OnDurable:        func(uint64) { db.hist.advanced() },
		SyncFile:         faults.For(db.dir).SyncFile, // nil but in kvd's own tests
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
		if err := wal.SyncDir(db.dir); err != nil {
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

// checkStateFile refuses a bbolt file shorter than its own header says it
// is: bbolt would fault reading the missing pages through its memory map.
func checkStateFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("engine: open state: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("engine: open state: %w", err)
	}
	if fi.Size() == 0 {
		return nil // bbolt initializes an empty file
	}
	var best *boltMeta
	for _, off := range []int64{0, -1} {
		if off < 0 {
			if best == nil {
				off = 4096 // the usual page size, when meta 0 is unreadable
			} else {
				off = int64(best.pageSize)
			}
		}
		buf := make([]byte, boltMetaEnd)
		if _, err := f.ReadAt(buf, off); err != nil {
			continue
		}
		if m, ok := parseBoltMeta(buf); ok && (best == nil || m.txid > best.txid) {
			best = &m
		}
	}
	if best == nil {
		return fmt.Errorf("%w: %s (%d bytes) has no valid header", ErrCorruptState, path, fi.Size())
	}
	if need := int64(best.pgid) * int64(best.pageSize); fi.Size() < need {
		return fmt.Errorf("%w: %s is %d bytes but its header says %d pages of %d bytes (%d bytes): truncated",
			ErrCorruptState, path, fi.Size(), best.pgid, best.pageSize, need)
	}
	return nil
}

// The layout of a bbolt meta page (go.etcd.io/bbolt/internal/common.Meta
// after a 16-byte page header), read to check the file's size and by Check.
const (
	boltMagic   = 0xED0CDAED
	boltMetaEnd = 80 // through the checksum
)

type boltMeta struct {
	pageSize uint32
	root     uint64 // page of the root bucket's tree
	freelist uint64
	pgid     uint64 // pages in the file (its high water mark)
	txid     uint64
}

func parseBoltMeta(b []byte) (boltMeta, bool) {
	le := binary.LittleEndian
	if le.Uint32(b[16:]) != boltMagic || le.Uint32(b[20:]) != 2 {
		return boltMeta{}, false
	}
	h := fnv.New64a()
	h.Write(b[16:72])
	if h.Sum64() != le.Uint64(b[72:]) {
		return boltMeta{}, false
	}
	m := boltMeta{pageSize: le.Uint32(b[24:]), root: le.Uint64(b[32:]), freelist: le.Uint64(b[48:]),
		pgid: le.Uint64(b[56:]), txid: le.Uint64(b[64:])}
	if m.pageSize < 512 || m.pageSize > 1<<20 {
		return boltMeta{}, false
	}
	return m, true
}
