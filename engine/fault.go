package engine

import (
	"encoding/hex"
	"fmt"
	"runtime"
	"runtime/debug"
	"time"
)

// bbolt reads the state file through a memory map and trusts its pages: a
// damaged page header or element (a count, an overflow, a child page id, an
// offset) sends it to an address past the end of the file or of the map
// (SIGBUS or SIGSEGV, which kill the process unless the goroutine asked
// for a panic with debug.SetPanicOnFault), to a slice index out of range, or
// to one of its own panics ("invalid page type"). Every read of the state
// file therefore runs with SetPanicOnFault set and a deferred recover that
// turns such a panic into ErrCorruptState and counts it (Stats.Corruptions):
// readState, or the same two defers written out where a closure would cost
// too much (stateLookup, on the Get path). The guard covers the calls into
// bbolt and the decoding of what they return, nothing else, and lets any
// other kind of panic through, so that a bug elsewhere still panics.

// stateFault reports whether r, a recovered panic, is what damaged pages of
// the state file make bbolt raise: a runtime error (a fault on the mapped
// file, an index or slice out of range, a nil dereference) or one of
// bbolt's own panics, which are strings.
func stateFault(r any) bool {
	switch r.(type) {
	case runtime.Error, string:
		return true
	}
	return false
}

// recoveredState turns r, recovered from a read of the state file (nil if
// the read did not panic), into ErrCorruptState; key is the key being read,
// nil for a read of no one key. A panic that damage does not explain is
// raised again.
func (db *DB) recoveredState(key []byte, r any) error {
	if !stateFault(r) {
		panic(r)
	}
	var err error
	if key == nil {
		db.log.Error("engine: damaged page in the state file", "err", r)
		err = fmt.Errorf("%w: %v", ErrCorruptState, r)
	} else {
		prefix := hex.EncodeToString(key[:min(len(key), 8)])
		db.log.Error("engine: damaged page in the state file", "key_len", len(key), "key_prefix", prefix, "err", r)
		err = fmt.Errorf("%w: reading a key of %d bytes starting %s: %v", ErrCorruptState, len(key), prefix, r)
	}
	db.sawCorruption(err)
	return err
}

// readState runs read, which reads the state file, under the guard: a
// panic from damaged pages becomes ErrCorruptState (see recoveredState).
func (db *DB) readState(key []byte, read func()) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = db.recoveredState(key, r)
		}
	}()
	read()
	return nil
}

// corruption is the last damage a read found in the state file.
type corruption struct {
	err error
	at  time.Time
}

// sawCorruption counts damage found in the state file: from then on the
// store reports itself degraded (Stats.Corruptions).
func (db *DB) sawCorruption(err error) {
	db.corruptions.Add(1)
	db.lastCorruption.Store(&corruption{err: err, at: time.Now()})
}
