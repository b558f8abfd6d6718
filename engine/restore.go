package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/kvdstore/kvd/wal"
)

// A restore replaces the store with a snapshot's content in steps that a
// crash may interrupt anywhere, leaving either the old store or the new one:
//
//  1. the snapshot is staged into DIR/state.db.restore (its checksum
//     verified, its delta applied, fsynced);
//  2. the marker DIR/RESTORE (the revision and the staged file's sha256) is
//     written durably: from here on the restore is decided;
//  3. the staged file is renamed over DIR/state.db, DIR/wal is removed (the
//     log restarts after the snapshot's revision), the directory fsynced;
//  4. the marker is removed.
//
// Open finishes a restore whose marker it finds (steps 3 and 4, again if
// need be) and discards a staged file without a marker.
const (
	restoreStaged = "state.db.restore"
	restoreMarker = "RESTORE"
)

type restoreMark struct {
	Revision uint64 `json:"revision"`
	SHA256   string `json:"sha256"` // of the staged state file
}

// RestoreSnapshot installs the snapshot read from r as the store in dir,
// which must not exist or be empty, and which no process may be using. The
// store opens at the snapshot's revision; its next write gets the revision
// after it. A damaged or torn snapshot gives ErrBadSnapshot and leaves dir
// without a state file.
func RestoreSnapshot(r io.Reader, dir string) (SnapshotInfo, error) {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return SnapshotInfo{}, fmt.Errorf("engine: restore into %s: the directory is not empty", dir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return SnapshotInfo{}, fmt.Errorf("engine: restore: %w", err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return SnapshotInfo{}, fmt.Errorf("engine: restore: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer lock.Close()
	staged := filepath.Join(dir, restoreStaged)
	sr, err := stageSnapshot(r, staged, true, nil)
	if err != nil {
		os.Remove(staged)
		return SnapshotInfo{}, err
	}
	if err := os.Rename(staged, filepath.Join(dir, "state.db")); err != nil {
		return SnapshotInfo{}, fmt.Errorf("engine: restore: %w", err)
	}
	if err := wal.SyncDir(dir); err != nil {
		return SnapshotInfo{}, err
	}
	return sr.info, nil
}

// Restore replaces the open store's content with the snapshot read from r.
// It first stages the snapshot beside the store while reads and writes go
// on; a damaged or torn snapshot gives ErrBadSnapshot and changes nothing.
// Then it stops writes, swaps the staged state in and restarts the log
// after the snapshot's revision: every write since the snapshot's revision,
// and every write the store had that the snapshot lacks, is gone, and the
// next write gets the revision after the snapshot's. A crash at any point
// leaves the old store or the new one (Open finishes the swap).
func (db *DB) Restore(r io.Reader) (SnapshotInfo, error) {
	staged, sr, mark, err := db.stageRestore(r, nil)
	if err != nil {
		return SnapshotInfo{}, err
	}
	db.wmu.Lock()
	defer db.wmu.Unlock()
	if db.closed {
		os.Remove(staged)
		return SnapshotInfo{}, ErrClosed
	}
	// Writes wait on wmu; the background work stops and the store closes
	// below them, then reopens on the restored state.
	close(db.stop)
	db.wg.Wait()
	var errs []error
	if err := db.wal.Drain(); err != nil {
		errs = append(errs, db.walErr(err))
	}
	// A checkpoint first, so that reopening the old store, should the
	// marker not be written, replays nothing.
	if len(errs) == 0 && db.failure() == nil {
		if err := db.checkpoint(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := db.wal.Close(); err != nil && len(errs) == 0 {
		errs = append(errs, db.walErr(err))
	}
	db.smu.Lock()
	defer db.smu.Unlock()
	db.view.close()
	db.view = nil
	db.cancelSnapshots() // else Close waits for their transactions
	if err := db.bdb.Close(); err != nil {
		errs = append(errs, fmt.Errorf("engine: close state: %w", err))
	}
	db.bdb = nil
	if err := db.hist.log.close(); err != nil {
		errs = append(errs, fmt.Errorf("engine: close history log: %w", err))
	}
	var markErr error
	if len(errs) == 0 {
		markErr = wal.WriteFileDurably(filepath.Join(db.dir, restoreMarker), mark, 0o640)
	}
	// Reopen, finishing the swap if the marker was written (recover does
	// not take smu: nothing replayed needs a checkpoint).
	db.active, db.frozen, db.applyFailed = newMemtable(), nil, false
	db.memRev.Store(0)
	db.memBytes.Store(0)
	if err := db.recover(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		err := db.setFatal(fmt.Errorf("engine: restore: %w", errors.Join(errs...)))
		if db.active == nil || db.bdb == nil || db.wal == nil {
			// Nothing to serve reads from: keep the DB closed.
			db.active = nil
		}
		db.stop = make(chan struct{})
		return SnapshotInfo{}, err
	}
	db.stop = make(chan struct{})
	db.wg.Add(1)
	go db.checkpointer()
	if db.expired != nil {
		db.wg.Add(1)
		go db.expirer()
	}
	if markErr != nil {
		// The old store reopened; the staged file was discarded.
		return SnapshotInfo{}, fmt.Errorf("engine: restore: %w", markErr)
	}
	db.log.Info("engine: restored snapshot", "rev", sr.info.Revision, "keys", sr.info.Keys)
	return sr.info, nil
}

// stageRestore is the first step of a restore of the open store, which
// reads and writes go on during: it stages the snapshot read from r beside
// the store (with indexOf, a replica's; see stageSnapshot) and returns the
// staged file's path, its reader and the marker that will decide the swap.
// A damaged or torn snapshot gives ErrBadSnapshot and leaves nothing.
func (db *DB) stageRestore(r io.Reader, indexOf func(meta []byte) (uint64, error)) (string, *snapshotReader, []byte, error) {
	if db.isClosed() {
		return "", nil, nil, ErrClosed
	}
	if err := db.failure(); err != nil {
		return "", nil, nil, err
	}
	staged := filepath.Join(db.dir, restoreStaged)
	sr, err := stageSnapshot(r, staged, true, indexOf)
	if err != nil {
		os.Remove(staged)
		return "", nil, nil, err
	}
	sum, err := fileSHA256(staged)
	if err != nil {
		os.Remove(staged)
		return "", nil, nil, err
	}
	mark, _ := json.Marshal(restoreMark{Revision: sr.info.Revision, SHA256: sum})
	return staged, sr, mark, nil
}

// finishRestore, at Open, completes a restore whose marker is present, or
// discards a staged state file without one.
func (db *DB) finishRestore() error {
	// A defragmentation's copy that a crash left before the swap.
	if err := os.Remove(filepath.Join(db.dir, defragStaged)); err == nil {
		db.log.Warn("engine: discarded an unfinished defragmentation")
	}
	staged := filepath.Join(db.dir, restoreStaged)
	markPath := filepath.Join(db.dir, restoreMarker)
	b, err := os.ReadFile(markPath)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.Remove(staged); err == nil {
			db.log.Warn("engine: discarded an unfinished restore", "file", staged)
			return wal.SyncDir(db.dir)
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("engine: discard staged restore: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("engine: read restore marker: %w", err)
	}
	var m restoreMark
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("engine: restore marker %s: %w", markPath, err)
	}
	if _, err := os.Stat(staged); err == nil {
		sum, err := fileSHA256(staged)
		if err != nil {
			return err
		}
		if sum != m.SHA256 {
			// The marker is written after the staged file is fsynced:
			// this is damage, not a crash. Keep the old store.
			db.log.Error("engine: staged restore does not match its marker; discarded, the store is unchanged", "rev", m.Revision)
			if err := os.Remove(staged); err != nil {
				return fmt.Errorf("engine: discard staged restore: %w", err)
			}
			if err := os.Remove(markPath); err != nil {
				return fmt.Errorf("engine: remove restore marker: %w", err)
			}
			return wal.SyncDir(db.dir)
		}
		if err := os.Rename(staged, filepath.Join(db.dir, "state.db")); err != nil {
			return fmt.Errorf("engine: finish restore: %w", err)
		}
		if err := wal.SyncDir(db.dir); err != nil {
			return err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("engine: finish restore: %w", err)
	}
	if err := os.RemoveAll(filepath.Join(db.dir, "wal")); err != nil {
		return fmt.Errorf("engine: finish restore: remove the old log: %w", err)
	}
	// The change history was the old store's; the restored one's starts
	// after its revision.
	if err := os.RemoveAll(histDir(db.dir)); err != nil {
		return fmt.Errorf("engine: finish restore: remove the old change history: %w", err)
	}
	if err := wal.SyncDir(db.dir); err != nil {
		return err
	}
	if err := os.Remove(markPath); err != nil {
		return fmt.Errorf("engine: remove restore marker: %w", err)
	}
	db.log.Info("engine: finished restore", "rev", m.Revision)
	return wal.SyncDir(db.dir)
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("engine: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("engine: read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
