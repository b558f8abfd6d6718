package engine

import (
	"bytes"
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Removal of expired keys. Reads hide a key once its expiry has passed by
// the local clock; removing it is a write like any other, decided here, on
// the node that runs the expirer, and sent through the log as a batch of
// CompareAndDelete on the mod revision that was seen, so that a key
// written again meanwhile (which changes its mod revision) is left alone.
// Two paths find expired keys:
//
//   - lazily, a read that finds one queues it (queueExpired);
//   - actively, every sweepInterval the sweep takes at most sweepLimit
//     keys due by the expiry index: each memtable's (memtable.expiring),
//     then the state file's (bucket "expiry"), which it reads on from
//     where it stopped until the next checkpoint rewrites it.
//
// Either way a removal batch holds at most sweepLimit keys, is written
// without waiting for an fsync (a lost removal is found again), and is
// submitted with TrySubmit: the expirer never waits for room.
const (
	sweepInterval = 100 * time.Millisecond
	sweepLimit    = 256
	expiredQueue  = 1024
)

type expiredKey struct {
	key []byte
	mod uint64
}

// now is the local clock in Unix milliseconds.
func (db *DB) now() int64 { return db.opts.clock().UnixMilli() }

// queueExpired queues the removal of key, expired at mod revision mod, if
// the queue has room. Called by reads, with db.smu held shared.
func (db *DB) queueExpired(key []byte, mod uint64) {
	if db.expired == nil {
		return
	}
	select {
	case db.expired <- expiredKey{bytes.Clone(key), mod}:
	default: // the sweep will find it
	}
}

// expirer runs the sweep and the lazy removals until Close.
func (db *DB) expirer() {
	defer db.wg.Done()
	t := time.NewTicker(db.opts.sweepInterval)
	defer t.Stop()
	var sw sweeper
	for {
		select {
		case <-db.stop:
			return
		case <-t.C:
			db.remove(sw.sweep(db))
		case k := <-db.expired:
			keys := []expiredKey{k}
		drain:
			for len(keys) < db.opts.sweepLimit {
				select {
				case k := <-db.expired:
					keys = append(keys, k)
				default:
					break drain
				}
			}
			db.remove(keys)
		}
	}
}

// remove submits one batch that removes keys at the mod revisions seen.
func (db *DB) remove(keys []expiredKey) {
	if len(keys) == 0 {
		return
	}
	b := &Batch{owned: true}
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if !seen[string(k.key)] {
			seen[string(k.key)] = true
			b.CompareAndDelete(k.key, k.mod)
		}
	}
	c, err := db.TrySubmit(b, WriteOptions{Durability: DurabilityAsync})
	if err != nil {
		return // closed, failed or throttled: found again later
	}
	if err := c.WaitWritten(); err == nil {
		n := 0
		for _, r := range b.Results() {
			if r.Applied {
				n++
			}
		}
		db.expiredRemoved.Add(uint64(n))
	}
}

// sweeper is the sweep's position in the state file's expiry index: the
// last index key it read, valid until the next checkpoint.
type sweeper struct {
	after       []byte
	checkpoints uint64
}

// sweep returns up to sweepLimit expired keys found from the expiry
// indexes, with their mod revisions. It holds db.smu shared while it reads
// them: writes wait for at most sweepLimit lookups.
func (sw *sweeper) sweep(db *DB) []expiredKey {
	now := db.now()
	budget := db.opts.sweepLimit
	var out []expiredKey
	var tx *bolt.Tx
	db.smu.RLock()
	defer db.smu.RUnlock()
	if db.active == nil {
		return nil
	}
	defer func() {
		if tx != nil {
			tx.Rollback()
		}
	}()
	seen := make(map[string]bool)
	check := func(key []byte) {
		if seen[string(key)] {
			return // in a memtable's index and the state file's
		}
		seen[string(key)] = true
		e, found, err := db.lookupLocked(key, &tx, false)
		if err == nil && found && e.expiredAt(now) {
			out = append(out, expiredKey{bytes.Clone(key), e.mod})
		}
	}
	for _, t := range [2]*memtable{db.active, db.frozen} {
		for t != nil && budget > 0 {
			k, ok := t.expiring.Min()
			if !ok || int64(binary.BigEndian.Uint64([]byte(k))) > now {
				break
			}
			// Dropped either way: an entry since overwritten is stale, and
			// a removal that fails leaves the key to the state file's
			// index after the next checkpoint, or to a read.
			t.expiring.Delete(k)
			budget--
			check([]byte(k[8:]))
		}
	}
	if cp := db.checkpoints.Load(); cp != sw.checkpoints {
		sw.after, sw.checkpoints = nil, cp
	}
	if budget == 0 || db.view == nil {
		return out
	}
	var due [][]byte
	err := db.readState(nil, func() {
		idx := db.view.tx.Bucket(bucketExpiry)
		if idx == nil {
			return
		}
		c := idx.Cursor()
		k, _ := c.First()
		if sw.after != nil {
			if k, _ = c.Seek(sw.after); k != nil && bytes.Equal(k, sw.after) {
				k, _ = c.Next()
			}
		}
		for ; k != nil && budget > 0; k, _ = c.Next() {
			if len(k) < 8 || int64(binary.BigEndian.Uint64(k)) > now {
				break
			}
			due = append(due, bytes.Clone(k))
			budget--
		}
		// At the end of what is due, start over next time; otherwise go
		// on after the last key read.
		sw.after = nil
		if k != nil && budget == 0 && len(due) > 0 {
			sw.after = due[len(due)-1]
		}
	})
	if err != nil {
		return out
	}
	for _, k := range due {
		check(k[8:])
	}
	return out
}
