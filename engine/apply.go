package engine

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strconv"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// Apply applies payload, an encoded batch (Batch.Bytes), at revision rev
// and returns the result of each of its operations: what a replica's state
// machine calls with batches already ordered elsewhere. The batch goes
// through the same log, memtable and checkpoints as a local write, and
// returns when wo asks (as Write does).
//
// rev must be the next revision: Apply returns ErrRevisionGap for a later
// one, and ErrAlreadyApplied, without applying anything, for one the DB
// already has (in its log or state file), so that a state machine that
// restarts may apply again batches it had applied. Results are not kept:
// a skipped batch has none. Apply also returns Write's errors, and
// ErrBadBatch for a malformed payload; after ErrWriteRefused the same
// revision may be applied again. The caller may reuse payload once Apply
// returns; the results belong to the caller.
//
// Apply must not be mixed with local writes (Put, Write, Submit, Update)
// that assign revisions of their own, except to build a history that Apply
// then continues. The removals of expired keys are such writes: a DB that
// Apply drives is opened with Options.NoExpiryRemoval. Apply takes the
// batch's timestamp as it is encoded (see Batch.SetTimestamp): it does not
// stamp it.
func (db *DB) Apply(rev uint64, payload []byte, wo WriteOptions) ([]Result, error) {
	if db.replica != nil {
		return nil, ErrReplica
	}
	b, err := decodeBatch(payload)
	if err != nil {
		return nil, err
	}
	if err := b.check(&db.opts); err != nil {
		return nil, err
	}
	if err := db.waitForRoom(context.Background()); err != nil {
		return nil, err
	}
	db.wmu.Lock()
	if db.closed {
		db.wmu.Unlock()
		return nil, ErrClosed
	}
	if err := db.failure(); err != nil {
		db.wmu.Unlock()
		return nil, err
	}
	// Let every enqueued record reach the memtable, or be refused, so
	// that the log's next revision is known.
	if err := db.settle(); err != nil {
		db.wmu.Unlock()
		return nil, err
	}
	switch last := db.committed(); {
	case rev <= last:
		db.wmu.Unlock()
		return nil, fmt.Errorf("%w: revision %d, the DB has %d", ErrAlreadyApplied, rev, last)
	case rev != last+1:
		db.wmu.Unlock()
		return nil, fmt.Errorf("%w: revision %d after %d", ErrRevisionGap, rev, last)
	}
	got, err := db.enqueue(b)
	db.wmu.Unlock()
	if err != nil {
		return nil, err
	}
	if got != rev {
		// wmu held exclusively after settle: nothing else can enqueue.
		panic(fmt.Sprintf("engine: apply of revision %d was given revision %d", rev, got))
	}
	if err := db.commitOf(b, wo).Wait(); err != nil {
		return nil, err
	}
	return b.results, nil
}

// applyWritten is the log's OnWritten hook: it applies written records to
// the memtable, in revision order, before their writers are acknowledged.
// A batch that cannot be applied (its reads of the state file failed) makes
// the DB fail; its writer gets ErrOutcomeUnknown and reopening the DB
// replays it from the log.
func (db *DB) applyWritten(first uint64, vs []any) {
	db.smu.Lock()
	before := db.active.bytes
	for i, v := range vs {
		b := v.(*Batch)
		// Read before wrote is stored: from then on the batch is its
		// writer's again, who may reset it at once.
		db.active.logBytes += int64(len(b.data))
		db.memRev.Store(first + uint64(i))
		if !db.applyFailed {
			if err := db.applyBatch(first+uint64(i), b); err != nil {
				// Later batches would be evaluated against a state
				// without this one: none is applied any more.
				db.applyFailed = true
				db.setFatal(fmt.Errorf("engine: apply revision %d: %w", first+uint64(i), err))
			} else {
				// After the results: WaitWritten reads them once it
				// sees wrote. Nothing below touches b.
				atomic.StoreUint64(&b.wrote, first+uint64(i))
			}
		}
	}
	grown := db.active.bytes - before
	size, logged := db.active.bytes, db.active.logBytes
	db.smu.Unlock()
	db.hist.advanced()
	db.memBytes.Add(grown)
	if size >= db.opts.CheckpointBytes || logged >= db.opts.CheckpointLogBytes {
		db.kickCheckpoint()
	}
}

// applyBatch evaluates b's operations, at revision rev, in order against
// the current state (the memtables over the state file, which already hold
// every earlier revision and b's earlier operations), applies them to the
// active memtable and records their results in b. It reads nothing else, so the
// same batches applied in the same order give the same state and results
// on every node and in every replay. Called with smu held exclusively.
//
// It fails, before changing anything, if it cannot read a value that b
// reads from the state file: if it cannot begin a read (which it does when
// b has an operation that reads and no read view is open: during a
// checkpoint commit, and at Open), or a value record is damaged. It checks
// them first, since a batch must apply whole or not at all.
func (db *DB) applyBatch(rev uint64, b *Batch) error {
	var tx *bolt.Tx
	if db.view == nil && b.reads() {
		t, err := db.bdb.Begin(false)
		if err != nil {
			return fmt.Errorf("engine: read state: %w", err)
		}
		tx = t
		defer tx.Rollback()
	}
	var stateKeys [][]byte // the state file's keys, for a delete-all
	for _, op := range b.ops {
		if op.kind == opDeleteAll {
			if stateKeys == nil {
				var err error
				if stateKeys, err = db.stateKeys(tx); err != nil {
					return err
				}
			}
			continue
		}
		if op.blind() {
			continue
		}
		// A get reports the create revision, which the state file may
		// hold for a key the memtables hold too.
		if _, ok := db.memGet(b.key(op)); !ok || op.kind == opGet {
			if _, _, err := db.stateLookup(b.key(op), &tx); err != nil {
				return err
			}
		}
	}
	now := b.at // every decision on expiry is taken at the batch's time
	lookupRevs := func(key []byte, revs bool) (memEntry, bool) {
		e, found, err := db.lookupLocked(key, &tx, revs)
		if err != nil {
			panic("engine: lookup failed after its check: " + err.Error())
		}
		if found && e.expiredAt(now) {
			return memEntry{}, false
		}
		return e, found
	}
	lookupEntry := func(key []byte) (memEntry, bool) { return lookupRevs(key, false) }
	put := func(key, value []byte, expires int64) {
		e := memEntry{value: value, create: rev, mod: rev, expires: expires, at: now, inherit: true}
		// memGet and setChange, with one search of the active memtable
		// instead of two: a bulk load puts thousands of keys a batch.
		p, inActive := db.active.byKey[string(key)]
		var old memEntry
		found := inActive
		if inActive {
			old = *p
		} else if db.frozen != nil {
			old, found = db.frozen.get(key)
		}
		if found {
			if !e.inheritsFrom(old) {
				e.inherit = false
			} else {
				// Inheriting what old inherits: whether the entry below
				// it was live is decided at old's time, not now (as
				// lookupLocked resolves a chain).
				e.create, e.inherit, e.at = old.create, old.inherit, old.at
			}
		}
		if inActive {
			db.active.replace(key, p, e)
		} else {
			db.active.insert(key, e)
		}
		db.recordChange(key, e)
	}
	// setExpiry gives the live entry e of key a new expiry at revision rev.
	setExpiry := func(key []byte, e memEntry, expires int64) {
		if expires != 0 && expires <= now {
			db.setChange(key, memEntry{del: true})
			return
		}
		// e.at stays: if e still inherits its create revision, whether
		// the entry below was live is decided at the time e was written.
		e.mod, e.expires = rev, expires
		if _, ok := db.memGet(key); !ok {
			// From the state file: its create revision is resolved.
			e.inherit = false
		}
		// The value may alias the read view or the other memtable.
		e.value = bytes.Clone(e.value)
		if e.value == nil {
			e.value = []byte{}
		}
		db.setChange(key, e)
	}
	b.clearResults()
	if b.requireFails(lookupEntry) {
		db.endChanges(rev, now)
		return nil
	}
	db.reserve(b)
	defer func() { b.vals = nil }() // the memtable's now: never reused
	for _, op := range b.ops {
		var key []byte
		if op.kind != opDeleteAll {
			key = b.key(op)
		}
		var r Result
		switch op.kind {
		case opPut:
			put(key, b.keep(op), 0)
			r.Applied = true
		case opDelete:
			if e, found, _ := db.lookupLocked(key, &tx, false); found {
				// An expired key is removed too, but did not count.
				db.setChange(key, memEntry{del: true})
				r.Applied = !e.expiredAt(now)
			}
		case opPutEx:
			if op.blind() {
				put(key, b.keep(op), op.exp)
				r.Applied = true
				break
			}
			fallthrough
		case opPutIf:
			old, found := lookupEntry(key)
			if op.cond&ReturnOld != 0 && found {
				r.Old = b.keepOld(old.value)
			}
			if (op.cond&IfAbsent == 0 || !found) && (op.cond&IfPresent == 0 || found) {
				expires := op.exp
				if op.cond&KeepExpiry != 0 {
					expires = old.expires // 0 if not found
				}
				put(key, b.keep(op), expires)
				r.Applied = true
			}
		case opExpire, opPersist:
			e, found := lookupEntry(key)
			if !found {
				break
			}
			if op.econd&ExpireReturnValue != 0 {
				r.Old = b.keepOld(e.value)
			}
			if op.kind == opPersist {
				if e.expires != 0 {
					setExpiry(key, e, 0)
					r.Applied = true
				}
				break
			}
			if expireHolds(op.econd, e.expires, op.exp) {
				setExpiry(key, e, op.exp)
				r.Applied = true
			}
		case opIncrBy:
			var n int64
			old, found := lookupEntry(key)
			if found {
				var ok bool
				if n, ok = parseInt(old.value); !ok {
					r.Err = ErrNotInteger
					break
				}
			}
			sum := n + op.delta
			if (op.delta > 0 && sum < n) || (op.delta < 0 && sum > n) {
				r.Err = ErrOverflow
				break
			}
			put(key, strconv.AppendInt(nil, sum, 10), old.expires) // INCR keeps the expiry
			r.Applied, r.Int = true, sum
		case opAppend:
			old, _ := lookupEntry(key)
			if len(old.value)+len(b.value(op)) > db.opts.MaxValueSize {
				r.Err = fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, len(old.value)+len(b.value(op)), db.opts.MaxValueSize)
				break
			}
			v := append(append(make([]byte, 0, len(old.value)+len(b.value(op))), old.value...), b.value(op)...)
			put(key, v, old.expires) // APPEND keeps the expiry
			r.Applied, r.Int = true, int64(len(v))
		case opIncrFloat:
			var f float64
			old, found := lookupEntry(key)
			if found {
				var ok bool
				if f, ok = ParseFloat(old.value); !ok {
					r.Err = ErrNotFloat
					break
				}
			}
			sum := f + op.fdelta
			if math.IsNaN(sum) || math.IsInf(sum, 0) {
				r.Err = ErrFloatRange
				break
			}
			v := formatFloat(sum)
			put(key, v, old.expires) // INCRBYFLOAT keeps the expiry
			r.Applied, r.Value = true, b.keepOld(v)
		case opGetDelete:
			if e, found, _ := db.lookupLocked(key, &tx, false); found {
				// An expired key is removed too, but had no value.
				db.setChange(key, memEntry{del: true})
				if !e.expiredAt(now) {
					r.Old, r.Applied = b.keepOld(e.value), true
				}
			}
		case opDeleteAll:
			r.Int = db.deleteAll(stateKeys)
			r.Applied = r.Int > 0
		case opCAS:
			e, found := lookupEntry(key)
			if found {
				r.ModRevision = e.mod
			}
			if op.casDel && !found {
				// A key that has expired but is not yet removed is
				// removed by a compare on its mod revision: how the
				// sweep removes it (expiry.go).
				if raw, ok, _ := db.lookupLocked(key, &tx, false); ok && raw.mod == op.ifRev {
					db.setChange(key, memEntry{del: true})
					r.Applied = true
					break
				}
			}
			if r.ModRevision != op.ifRev {
				break
			}
			r.Applied = true
			switch {
			case op.casDel && found:
				db.setChange(key, memEntry{del: true})
				r.ModRevision = 0
			case !op.casDel:
				put(key, b.keep(op), 0)
				r.ModRevision = rev
			}
		case opGet:
			if e, found := lookupRevs(key, true); found {
				r.Applied, r.Old, r.ModRevision, r.CreateRevision = true, b.keepOld(e.value), e.mod, e.create
			}
		case opReq:
			// Checked before the loop.
			r.Applied, r.ModRevision = true, op.ifRev
		}
		b.results = append(b.results, r)
	}
	db.endChanges(rev, now)
	return nil
}

// reserve allocates, for a batch of many operations, room for the changes
// it will record and one array for the values its unconditional puts keep,
// instead of one allocation per operation: a bulk load's batch holds
// thousands. The memtable holds the values until the checkpoint that
// covers the batch. Called by applyBatch with smu held.
func (db *DB) reserve(b *Batch) {
	if len(b.ops) < 8 {
		return
	}
	vals := 0
	for _, op := range b.ops {
		if op.kind == opPut || op.kind == opPutEx && op.blind() {
			vals += op.v1 - op.v0
		}
	}
	if !b.owned && vals > 0 {
		b.vals = make([]byte, 0, vals)
	}
	if h := &db.hist; cap(h.fx) < len(b.ops) {
		h.fx = make([]Change, 0, len(b.ops))
	}
}

// requireFails checks b's require ops against the state before b. If one
// fails it marks b aborted, records a result for every op and reports
// true; b must then change nothing.
func (b *Batch) requireFails(lookup func([]byte) (memEntry, bool)) bool {
	failed := false
	for _, op := range b.ops {
		if op.kind != opReq {
			continue
		}
		if e, found := lookup(b.key(op)); (found && e.mod != op.ifRev) || (!found && op.ifRev != 0) {
			failed = true
			break
		}
	}
	if !failed {
		return false
	}
	b.aborted = true
	for _, op := range b.ops {
		r := Result{Err: ErrRequireFailed}
		if op.kind == opReq {
			e, found := lookup(b.key(op))
			if found {
				r.ModRevision = e.mod
			}
			r.Applied = r.ModRevision == op.ifRev
		}
		b.results = append(b.results, r)
	}
	return true
}

// expireHolds reports whether an expiry of next may replace cur (0: none)
// under c (EXPIRE NX, XX, GT, LT; no expiry counts as never expiring).
func expireHolds(c ExpireCond, cur, next int64) bool {
	switch {
	case c&ExpireNX != 0 && cur != 0:
		return false
	case c&ExpireXX != 0 && cur == 0:
		return false
	case c&ExpireGT != 0 && (cur == 0 || next <= cur):
		return false
	case c&ExpireLT != 0 && cur != 0 && next >= cur:
		return false
	}
	return true
}

// stateKeys returns a copy of every key of the state file, read with the
// view or, without one, with *tx as stateLookup does.
func (db *DB) stateKeys(tx *bolt.Tx) ([][]byte, error) {
	keys := [][]byte{}
	err := db.readState(nil, func() {
		var c *bolt.Cursor
		if db.view != nil {
			c = db.view.kv.Cursor()
		} else {
			c = tx.Bucket(bucketKV).Cursor()
		}
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			keys = append(keys, bytes.Clone(k))
		}
	})
	return keys, err
}

// deleteAll puts a tombstone in the active memtable for every live key:
// the newest of its entries in the active memtable, the frozen one and
// stateKeys (the state file's keys) is not a deletion. It returns how many
// it deleted. The result does not depend on map order.
func (db *DB) deleteAll(stateKeys [][]byte) int64 {
	var n int64
	for k, e := range db.active.byKey {
		if !e.del {
			n++
			db.setChange([]byte(k), memEntry{del: true}) // in place: no insert while ranging
		}
	}
	above := func(k []byte) bool {
		if _, ok := db.active.get(k); ok {
			return true
		}
		if db.frozen != nil {
			_, ok := db.frozen.get(k)
			return ok
		}
		return false
	}
	if db.frozen != nil {
		for k, e := range db.frozen.byKey {
			if _, ok := db.active.get([]byte(k)); !ok && !e.del {
				n++
				db.setChange([]byte(k), memEntry{del: true})
			}
		}
	}
	for _, k := range stateKeys {
		if !above(k) {
			n++
			db.setChange(k, memEntry{del: true})
		}
	}
	return n
}

// blind reports whether op writes without reading the state: a put, with
// an expiry or not, without conditions.
func (op batchOp) blind() bool {
	return op.kind == opPut || (op.kind == opPutEx && op.cond == 0)
}

// reads reports whether applying b reads the state.
func (b *Batch) reads() bool {
	for _, op := range b.ops {
		if !op.blind() {
			return true
		}
	}
	return false
}

// keep returns the value of op as the memtable may keep it.
func (b *Batch) keep(op batchOp) []byte {
	v := b.value(op)
	switch {
	case b.owned:
	case len(v) > 0 && cap(b.vals)-len(b.vals) >= len(v):
		v0 := len(b.vals)
		b.vals = append(b.vals, v...)
		v = b.vals[v0:len(b.vals):len(b.vals)]
	default:
		v = bytes.Clone(v)
	}
	if v == nil {
		v = []byte{}
	}
	return v
}

// keepOld copies an old value into the batch's arena for its Result. An
// arena that grows leaves the values copied before it in its old array,
// where they stay valid.
func (b *Batch) keepOld(v []byte) []byte {
	if len(v) == 0 {
		return []byte{}
	}
	a0 := len(b.arena)
	b.arena = append(b.arena, v...)
	return b.arena[a0:len(b.arena):len(b.arena)]
}

// ParseFloat parses v as Redis's INCRBYFLOAT does a number: decimal or
// exponent notation without spaces; NaN is refused, and so is a number out
// of float64's range.
func ParseFloat(v []byte) (float64, bool) {
	if len(v) == 0 || len(v) > 5000 || v[0] == ' ' || v[len(v)-1] == ' ' || bytes.IndexByte(v, '_') >= 0 {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

// formatFloat formats f as Redis stores the result of INCRBYFLOAT:
// fixed-point, with at most 17 decimals and no trailing zeros ("10.5",
// "3", "0.1"), and "0" for negative zero.
func formatFloat(f float64) []byte {
	s := strconv.AppendFloat(nil, f, 'f', -1, 64)
	if i := bytes.IndexByte(s, '.'); i >= 0 && len(s)-i-1 > 17 {
		s = strconv.AppendFloat(s[:0], f, 'f', 17, 64)
		s = bytes.TrimRight(s, "0")
		s = bytes.TrimSuffix(s, []byte("."))
	}
	if string(s) == "-0" {
		s = []byte("0")
	}
	return s
}

// parseInt parses v as Redis does an integer: canonical decimal ("0", or
// an optional '-' and digits without a leading zero) within int64.
func parseInt(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 20 {
		return 0, false
	}
	if len(v) == 1 && v[0] == '0' {
		return 0, true
	}
	d := v
	if d[0] == '-' {
		d = d[1:]
	}
	if len(d) == 0 || d[0] < '1' || d[0] > '9' {
		return 0, false
	}
	for _, c := range d {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	return n, err == nil
}
