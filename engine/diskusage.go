package engine

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// The state file's size against the data it holds.
//
// Every checkpoint keeps count of the keys in bucket "kv" and of their
// keys' and values' bytes (the logical data, without the records' headers
// and bbolt's page layout), and writes the counts into bucket "meta" under
// keyStateData in the same transaction, beside the revision they are
// counted at. Open reads them back; a state file without them, or with
// counts of an older revision (a build that did not keep them wrote it
// since), is counted once by a scan of the bucket.
var keyStateData = []byte("state-data")

// Fill factors of the kv bucket's pages, chosen by measurement
// (BenchmarkStateLayout, bench/RESULTS.md "The state file's size"):
// keys written in random order land all over the tree, and pages split
// half full have room for the keys that come later; keys appended after the
// last one (sequential keys) fill a page that no later key goes into, so it
// is packed full. Half full costs sequential keys twice the pages; packed
// full costs random keys more pages, split again by every later insert.
const (
	stateFillPercent       = bolt.DefaultFillPercent // 0.5
	stateAppendFillPercent = 1.0
)

// stateData is what bucket "kv" holds: keys and their keys' and values'
// bytes. Unknown (not known) when Open could not count them, for damage
// in a state file that did not hold the counts: then they are neither
// reported nor written.
type stateData struct {
	keys, bytes atomic.Int64
	known       atomic.Bool
}

// fillPercent is the kv bucket's fill factor for a checkpoint that writes
// frozen: packed full if every key in it sorts after the bucket's last
// key, half full otherwise. Options.fillPercent, set by the layout
// benchmark, overrides it.
func (db *DB) fillPercent(kv *bolt.Bucket, first string) float64 {
	if db.opts.fillPercent != 0 {
		return db.opts.fillPercent
	}
	if last, _ := kv.Cursor().Last(); last == nil || bytes.Compare([]byte(first), last) > 0 {
		return stateAppendFillPercent
	}
	return stateFillPercent
}

// putStateData writes the counts of bucket kv after a checkpoint at rev
// that changed them by keys and n bytes, if they are known.
func (db *DB) putStateData(tx *bolt.Tx, rev uint64, keys, n int64) error {
	if !db.data.known.Load() {
		return nil
	}
	v := binary.BigEndian.AppendUint64(nil, rev)
	v = binary.BigEndian.AppendUint64(v, uint64(db.data.keys.Load()+keys))
	v = binary.BigEndian.AppendUint64(v, uint64(db.data.bytes.Load()+n))
	return tx.Bucket(bucketMeta).Put(keyStateData, v)
}

// loadStateData reads the counts of bucket kv at Open, or counts it if the
// state file does not hold them for its applied revision. Damage that
// stops the count leaves them unknown, and Open goes on: reads of the
// damaged keys fail as they would have.
func (db *DB) loadStateData(applied uint64) {
	var keys, n int64
	counted := false
	var err error
	gerr := db.readState(nil, func() {
		err = db.bdb.View(func(tx *bolt.Tx) error {
			v := tx.Bucket(bucketMeta).Get(keyStateData)
			if len(v) == 24 && binary.BigEndian.Uint64(v) == applied {
				keys, n = int64(binary.BigEndian.Uint64(v[8:])), int64(binary.BigEndian.Uint64(v[16:]))
				return nil
			}
			counted = true
			return tx.Bucket(bucketKV).ForEach(func(k, v []byte) error {
				keys++
				n += int64(len(k) + max(len(v)-recordHeaderLen, 0))
				return nil
			})
		})
	})
	if gerr != nil {
		err = gerr
	}
	if err != nil {
		db.log.Warn("engine: could not count the state file's data; not reported", "err", err)
		return
	}
	db.data.keys.Store(keys)
	db.data.bytes.Store(n)
	db.data.known.Store(true)
	if counted {
		db.log.Info("engine: counted the state file's data", "keys", keys, "bytes", n, "rev", applied)
	}
}

// StateFileStats is the state file's size against the data it holds.
type StateFileStats struct {
	// FileBytes is the size of state.db.
	FileBytes int64
	// FreeBytes is what of it bbolt's free list holds: pages that
	// checkpoints freed and will reuse (the file never shrinks; only a
	// compaction returns them to the file system).
	FreeBytes int64
	// Keys is how many keys the state file holds, DataBytes their keys'
	// and values' bytes: the logical data, without the records' revisions,
	// expiry and checksum, and without bbolt's page layout. Writes not yet
	// checkpointed are not counted. Both are -1 when unknown: Open could
	// not count a damaged state file that did not hold the counts.
	Keys      int64
	DataBytes int64
	// HistoryBytes is the size of the change history's log (DIR/history),
	// beside the state file.
	HistoryBytes int64
}

// StateFile reports the state file's size against the data it holds. It
// is safe to call at any time; it costs a stat of the file.
func (db *DB) StateFile() (StateFileStats, error) {
	if db.isClosed() {
		return StateFileStats{}, ErrClosed
	}
	st := StateFileStats{Keys: -1, DataBytes: -1, HistoryBytes: db.hist.log.size()}
	if db.data.known.Load() {
		st.Keys, st.DataBytes = db.data.keys.Load(), db.data.bytes.Load()
	}
	fi, err := os.Stat(filepath.Join(db.dir, "state.db"))
	if err != nil {
		return st, fmt.Errorf("engine: state file: %w", err)
	}
	st.FileBytes = fi.Size()
	bs := db.bdb.Stats()
	st.FreeBytes = int64(bs.FreePageN+bs.PendingPageN) * int64(db.bdb.Info().PageSize)
	return st, nil
}
