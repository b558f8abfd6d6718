package engine

import (
	"bytes"
	"fmt"
	"runtime/debug"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// readView is a read-only transaction on the state file shared by every
// reader until the next checkpoint, so that a Get costs a lookup and not a
// transaction. A read transaction holds bbolt's mmap lock, which a
// committing write transaction may need to grow the file: the checkpoint
// therefore ends the view before it commits and starts a new one after (DB.smu
// held exclusively both times, so no reader is using it).
type readView struct {
	tx      *bolt.Tx
	kv      *bolt.Bucket
	cursors sync.Pool // *bolt.Cursor on kv: a cursor's stack is reused across lookups
}

// newReadView begins the view. Finding the bucket reads the root page: if
// that is damaged it gives ErrCorruptState (see fault.go).
func newReadView(bdb *bolt.DB) (v *readView, err error) {
	tx, err := bdb.Begin(false)
	if err != nil {
		return nil, err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if !stateFault(r) {
				panic(r)
			}
			tx.Rollback()
			v, err = nil, fmt.Errorf("%w: %v", ErrCorruptState, r)
		}
	}()
	kv := tx.Bucket(bucketKV)
	if kv == nil {
		tx.Rollback()
		return nil, fmt.Errorf("%w: no bucket %q", ErrCorruptState, bucketKV)
	}
	return &readView{tx: tx, kv: kv}, nil
}

// lookup returns the value of key, which stays valid until the view is
// closed, and whether key is present. Safe for concurrent use: bbolt's
// read-only transactions do not change shared state on lookups, and each
// goroutine uses its own cursor.
func (v *readView) lookup(key []byte) ([]byte, bool) {
	c, _ := v.cursors.Get().(*bolt.Cursor)
	if c == nil {
		c = v.kv.Cursor()
	}
	k, val := c.Seek(key)
	v.cursors.Put(c)
	if k == nil || !bytes.Equal(k, key) {
		return nil, false
	}
	return val, true
}

func (v *readView) close() {
	if v != nil {
		v.tx.Rollback()
	}
}
