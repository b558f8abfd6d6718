package engine

import (
	"bytes"
	"fmt"

	"github.com/tidwall/btree"
	bolt "go.etcd.io/bbolt"
)

// KV is one key, its value and revisions (see Entry).
type KV struct {
	Key, Value     []byte
	CreateRevision uint64
	ModRevision    uint64
	ExpiresAt      int64 // Unix ms; 0: no expiry
}

// ScanOptions select a key range.
type ScanOptions struct {
	Start    []byte // first key, inclusive; nil: from the first key
	End      []byte // last key, exclusive; nil: to the last key
	Prefix   []byte // only keys with this prefix
	Limit    int    // at most this many pairs; <= 0: no limit
	KeysOnly bool   // leave Value nil
}

// Scan returns the live pairs in the range in ascending key order: keys
// that have expired by the local clock are left out. Writes
// wait while a scan runs, so scans should use a Limit.
func (db *DB) Scan(o ScanOptions) ([]KV, error) {
	start := o.Start
	if len(o.Prefix) > 0 && bytes.Compare(start, o.Prefix) < 0 {
		start = o.Prefix
	}
	var out []KV
	inRange := func(k []byte) bool {
		if o.End != nil && bytes.Compare(k, o.End) >= 0 {
			return false
		}
		return bytes.HasPrefix(k, o.Prefix)
	}
	now := db.now()
	db.smu.RLock()
	defer db.smu.RUnlock()
	if db.active == nil {
		return nil, ErrClosed
	}
	err := db.bdb.View(func(tx *bolt.Tx) error {
		srcs := []source{newMemSource(db.active, start)}
		if db.frozen != nil {
			srcs = append(srcs, newMemSource(db.frozen, start))
		}
		var kv *bolt.Bucket
		if err := db.readState(nil, func() { kv = tx.Bucket(bucketKV) }); err != nil {
			return err
		}
		state := newBoltSource(db, kv.Cursor(), start)
		srcs = append(srcs, state)
		for o.Limit <= 0 || len(out) < o.Limit {
			// The smallest key among the sources; the newest source wins.
			var key []byte
			win := -1
			for i, s := range srcs {
				if k := s.key(); k != nil && (win < 0 || bytes.Compare(k, key) < 0) {
					key, win = k, i
				}
			}
			if state.err != nil {
				return state.err
			}
			if win < 0 || !inRange(key) {
				return nil
			}
			e, err := srcs[win].entry()
			if err != nil {
				return err
			}
			if e.expiredAt(now) {
				db.queueExpired(key, e.mod)
			} else if !e.del {
				// Resolve an inherited create revision from the
				// sources below (see memEntry).
				for _, s := range srcs[win+1:] {
					if !e.inherit {
						break
					}
					if k := s.key(); k != nil && bytes.Equal(k, key) {
						below, err := s.entry()
						if err != nil {
							return err
						}
						if !e.inheritsFrom(below) {
							break
						}
						e.create, e.inherit, e.at = below.create, below.inherit, below.at
					}
				}
				kv := KV{Key: bytes.Clone(key), CreateRevision: e.create, ModRevision: e.mod, ExpiresAt: e.expires}
				if !o.KeysOnly {
					kv.Value = bytes.Clone(e.value)
				}
				out = append(out, kv)
			}
			for _, s := range srcs {
				if k := s.key(); k != nil && bytes.Equal(k, key) {
					s.next()
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("engine: scan: %w", err)
	}
	return out, nil
}

// Count returns the number of live keys. It scans every key, in chunks so
// that writes are not held back for long.
func (db *DB) Count() (int, error) {
	n := 0
	var after []byte
	for {
		kvs, err := db.Scan(ScanOptions{Start: after, Limit: 4096, KeysOnly: true})
		if err != nil {
			return 0, err
		}
		n += len(kvs)
		if len(kvs) < 4096 {
			return n, nil
		}
		after = append(kvs[len(kvs)-1].Key, 0)
	}
}

// source is one sorted input of a scan.
type source interface {
	key() []byte // nil when exhausted
	entry() (memEntry, error)
	next()
}

type memSource struct {
	it  btree.MapIter[string, *memEntry]
	ok  bool
	cur []byte
}

func newMemSource(t *memtable, start []byte) *memSource {
	s := &memSource{it: t.ordered().Iter()}
	s.ok = s.it.Seek(string(start))
	s.load()
	return s
}

func (s *memSource) load() {
	s.cur = nil
	if s.ok {
		s.cur = []byte(s.it.Key())
	}
}

func (s *memSource) key() []byte              { return s.cur }
func (s *memSource) entry() (memEntry, error) { return *s.it.Value(), nil }
func (s *memSource) next()                    { s.ok = s.it.Next(); s.load() }

// boltSource reads the state file under the guard of fault.go: a damaged
// page ends it with err (ErrCorruptState). Its key is a copy, and entry
// reads the whole record to check it, so that nothing the scan keeps
// points into pages it has not read.
type boltSource struct {
	db   *DB
	c    *bolt.Cursor
	k, v []byte
	kbuf []byte
	err  error
}

func newBoltSource(db *DB, c *bolt.Cursor, start []byte) *boltSource {
	s := &boltSource{db: db, c: c}
	s.move(start, func() ([]byte, []byte) {
		if start == nil {
			return c.First()
		}
		return c.Seek(start)
	})
	return s
}

// move sets the source to the pair that step returns, under the guard;
// near is the key it is read for, if any, to name in an error.
func (s *boltSource) move(near []byte, step func() ([]byte, []byte)) {
	s.err = s.db.readState(near, func() {
		k, v := step()
		if k == nil {
			s.k, s.v = nil, nil
			return
		}
		s.kbuf = append(s.kbuf[:0], k...)
		s.k, s.v = s.kbuf, v
	})
	if s.err != nil {
		s.k, s.v = nil, nil
	}
}

func (s *boltSource) key() []byte { return s.k }
func (s *boltSource) entry() (e memEntry, err error) {
	var ok bool
	if rerr := s.db.readState(s.k, func() { e, ok = decodeRecord(s.k, s.v) }); rerr != nil {
		return memEntry{}, rerr
	}
	if !ok {
		return memEntry{}, s.db.corruptValue(s.k)
	}
	return e, nil
}
func (s *boltSource) next() { s.move(s.k, s.c.Next) }
