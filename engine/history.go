package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The change history: what each revision changed, for change feeds
// (watches). A log record holds a batch's operations (INCR by 5, SET NX, a
// compare-and-delete, a delete-all), whose effects depend on the state they
// were applied to; the history holds the effects: for each key a batch
// changed, its new value or its deletion. The engine computes them as it
// applies a batch to the memtable (applyBatch), in revision order, on the
// write path, in replay after a restart and under Apply alike, so that every
// node that applies the same batches has the same history.
//
// The effects of revisions not yet checkpointed are held in memory; a
// checkpoint appends those it covers to the history's log (histlog.go)
// before it commits, and prunes the log to its retention
// (Options.HistoryRevisions, HistoryAge, HistoryBytes). After a crash,
// replay from the checkpoint recomputes the part held in memory. Each
// record of the log holds a revision's changes:
//
//	+-----------+-----------+-------------+-------------+------------------+
//	| revision  | crc32c    | time        | count       | count changes    |
//	| uint64 BE | uint32 BE | int64 BE ms | uvarint     |                  |
//	+-----------+-----------+-------------+-------------+------------------+
//
// and each change: flags (byte; 1: delete), key length (uvarint), key, and
// for a put: value length (uvarint), value, expiry (int64 BE, Unix ms, 0:
// none). The checksum is CRC-32C over the revision and the rest of the
// record. Revisions that changed nothing (a SET NX that found its key, a
// transaction whose WATCH failed) have no record.

// Change is one key's change in a revision: its new value, or its deletion.
type Change struct {
	Key []byte
	// Value is the key's new value; nil for a deletion.
	Value []byte
	// Delete reports that the key was deleted (or removed on expiry).
	Delete bool
	// ExpiresAt is the key's new expiry time in Unix milliseconds, 0 if it
	// has none.
	ExpiresAt int64
}

// ChangeSet is what one revision changed, whole: every key a batch
// changed, each once, in key order.
type ChangeSet struct {
	Revision uint64
	// Time is the batch's timestamp, Unix milliseconds (0 if it had none).
	Time    int64
	Changes []Change
}

// CompactedError is returned by Changes for a revision older than the
// history retains: Oldest is the oldest revision it still has. It unwraps
// to ErrCompacted. A watcher that gets it must read the state again.
type CompactedError struct {
	Oldest, Requested uint64
}

func (e *CompactedError) Error() string {
	return fmt.Sprintf("engine: history compacted: oldest revision %d, requested %d", e.Oldest, e.Requested)
}

// Unwrap returns ErrCompacted.
func (e *CompactedError) Unwrap() error { return ErrCompacted }

var (
	// bucketHistory held the change history in state files written before
	// it moved to its own log; Open drops it.
	bucketHistory    = []byte("history")
	keyHistoryOldest = []byte("history-oldest")
	keyHistoryBytes  = []byte("history-bytes")
	// keyHistoryLast is the revision of the history log's last record, as
	// the last checkpoint left it (0 or absent: none).
	keyHistoryLast = []byte("history-last")
)

// histRec is the change set of one revision held in memory, encoded as
// the history's log stores it (revision, checksum, time, changes; see
// appendHistory), in a chunk that it shares with the records after it
// and that is never changed once written. Encoded, the history holds no
// pointer per change for the garbage collector to trace, no value the
// memtable has already replaced, and needs no copy of a key per change;
// the checkpoint writes the bytes as they are (bench/RESULTS.md, "The
// change history's cost, 2026-12-05": checkpoints 10% faster, fewer
// allocations per write).
type histRec struct {
	rev uint64
	rec []byte
}

// histChunkBytes is the size of the chunks the in-memory history's
// records are written to (a record larger than that has one of its own).
const histChunkBytes = 256 << 10

// maxScratchChanges bounds the changes whose room a batch's recording
// keeps for the next batch: a bulk load's batch of more gives its room
// back.
const maxScratchChanges = 4096

// history is the in-memory part of the change history and what readers
// need to find the rest.
type history struct {
	mu sync.Mutex
	// recs holds the change sets of revisions above ckpt, ascending.
	recs []histRec
	// ckpt is the revision through which change sets are in the log;
	// oldest the oldest revision the history has.
	ckpt, oldest uint64
	// last is the last revision applied (with changes or not).
	last uint64
	// notify is closed, and replaced, when last or the durable revision
	// advances, if someone asked for it (waited).
	notify chan struct{}
	waited bool

	// fx holds the changes of the batch being applied (smu held), until
	// endChanges encodes them into chunk, the room left for records.
	fx    []Change
	chunk []byte
	// newOldest is the oldest revision after the checkpoint in progress
	// (the checkpointer's own).
	newOldest uint64

	// log holds the change sets of checkpointed revisions.
	log histLog
}

// recordChange notes that the batch being applied at rev changes key to e
// (a value or a deletion). key and e's value need only stay unchanged
// until the batch's endChanges, which copies them. Called from
// applyBatch with smu held.
func (db *DB) recordChange(key []byte, e memEntry) {
	c := Change{Key: key, Delete: e.del, ExpiresAt: e.expires}
	if !e.del {
		c.Value = e.value
	} else {
		c.ExpiresAt = 0
	}
	db.hist.fx = append(db.hist.fx, c)
}

// setChange sets key's entry in the active memtable and records the change.
func (db *DB) setChange(key []byte, e memEntry) {
	db.active.set(key, e)
	db.recordChange(key, e)
}

// endChanges ends the batch applied at rev with timestamp at: its changes,
// each key's last, go into the history, and rev becomes its last revision.
// Called from applyBatch with smu held.
func (db *DB) endChanges(rev uint64, at int64) {
	h := &db.hist
	all := h.fx
	fx := all
	if len(fx) > 1 {
		// Key order, the last change of each key: the same on every node
		// whatever the order a delete-all visited its keys in. (A bulk
		// load's keys often come in order already.)
		byKey := func(a, b Change) int { return bytes.Compare(a.Key, b.Key) }
		if !slices.IsSortedFunc(fx, byKey) {
			slices.SortStableFunc(fx, byKey)
		}
		out := fx[:0]
		for i, c := range fx {
			if i+1 < len(fx) && bytes.Equal(c.Key, fx[i+1].Key) {
				continue
			}
			out = append(out, c)
		}
		fx = out
	}
	var rec []byte
	if len(fx) > 0 {
		rec = h.encode(rev, at, fx)
	}
	clear(all) // the batch's keys and values
	if cap(all) > maxScratchChanges {
		h.fx = nil
	} else {
		h.fx = all[:0]
	}
	h.mu.Lock()
	if rec != nil && rev >= h.oldest { // replay may apply compacted revisions
		h.recs = append(h.recs, histRec{rev: rev, rec: rec})
	}
	h.last = rev
	h.mu.Unlock()
}

// encode writes the history record of revision rev to the chunk and
// returns it. Called with smu held.
func (h *history) encode(rev uint64, at int64, changes []Change) []byte {
	n := historyRecordSize(changes)
	if cap(h.chunk)-len(h.chunk) < n {
		// A new chunk: the records already written keep theirs.
		h.chunk = make([]byte, 0, max(n, histChunkBytes))
	}
	r0 := len(h.chunk)
	h.chunk = binary.BigEndian.AppendUint64(h.chunk, rev)
	h.chunk = appendHistory(h.chunk, h.chunk[r0:r0+8:r0+8], at, changes)
	return h.chunk[r0:len(h.chunk):len(h.chunk)]
}

// advanced wakes those waiting for the history's revisions to advance.
func (h *history) advanced() {
	h.mu.Lock()
	if h.waited {
		close(h.notify)
		h.notify, h.waited = make(chan struct{}), false
	}
	h.mu.Unlock()
}

// ChangesNotify returns a channel that is closed once the written or the
// durable revision advances after the call (the history then has more to
// give). One channel serves every caller: taking it costs nothing per
// watcher, and a writer closes it once whatever the number of watchers.
func (db *DB) ChangesNotify() <-chan struct{} {
	h := &db.hist
	h.mu.Lock()
	defer h.mu.Unlock()
	h.waited = true
	return h.notify
}

// OldestRevision returns the oldest revision whose changes the history
// still has: Changes from an older one returns a CompactedError.
func (db *DB) OldestRevision() uint64 {
	db.hist.mu.Lock()
	defer db.hist.mu.Unlock()
	return db.hist.oldest
}

// Changes returns the change sets of revisions from (inclusive) through
// upTo that change a key for which match reports true (every key if match
// is nil), with only those keys, in revision order, and next, the revision
// to ask for after them. It returns at most max changes (at least one
// revision's, never part of one: a revision is atomic), or all of them if
// max is 0. upTo is bounded by the last revision applied; a caller passes
// DurableRevision to see only durable revisions, WrittenRevision to see
// them sooner (see the package doc, Change history). When it returns every
// revision through upTo, next is upTo+1 even if the last ones changed
// nothing that matches, so that an idle cursor moves.
//
// A from below the oldest revision the history retains gives a
// CompactedError; a from above upTo gives no change sets and next = from.
// Safe for concurrent use; the change sets belong to the caller.
func (db *DB) Changes(from uint64, match func(key []byte) bool, max int, upTo uint64) ([]ChangeSet, uint64, error) {
	if from == 0 {
		from = 1
	}
	h := &db.hist
	h.mu.Lock()
	upTo = min(upTo, h.last)
	ckpt, oldest := h.ckpt, h.oldest
	i := sort.Search(len(h.recs), func(i int) bool { return h.recs[i].rev >= from })
	mem := h.recs[i:len(h.recs):len(h.recs)]
	h.mu.Unlock()
	if from < oldest {
		return nil, from, &CompactedError{Oldest: oldest, Requested: from}
	}
	if from > upTo {
		return nil, from, nil
	}
	var out []ChangeSet
	n := 0
	next := upTo + 1
	// add adds a change set of rev unless max is reached; it reports
	// whether to go on.
	add := func(rev uint64, at int64, changes []Change) bool {
		if rev > upTo {
			return false
		}
		var cs ChangeSet
		for _, c := range changes {
			if match == nil || match(c.Key) {
				cs.Changes = append(cs.Changes, c)
			}
		}
		if len(cs.Changes) == 0 {
			return true
		}
		if max > 0 && n > 0 && n+len(cs.Changes) > max {
			next = rev
			return false
		}
		cs.Revision, cs.Time = rev, at
		cs.Changes = copyChanges(cs.Changes)
		out = append(out, cs)
		n += len(cs.Changes)
		if max > 0 && n >= max {
			next = rev + 1
			return false
		}
		return true
	}
	var scratch []Change // decoded changes, one record's at a time: add copies what it keeps
	if from <= ckpt {
		more, err := db.hist.log.scan(from, ckpt, add)
		if err != nil {
			if errors.Is(err, errHistGone) {
				// A compaction or the retention dropped records meanwhile.
				return nil, from, &CompactedError{Oldest: db.OldestRevision(), Requested: from}
			}
			return nil, from, err
		}
		if !more {
			return out, next, nil
		}
	}
	for _, r := range mem {
		at, changes, ok := decodeChanges(scratch, r.rec[8:])
		scratch = changes
		if !ok {
			return nil, from, fmt.Errorf("engine: history record of revision %d held in memory does not decode", r.rev)
		}
		if !add(r.rev, at, changes) {
			break
		}
	}
	return out, next, nil
}

// copyChanges copies cs's keys and values into one new buffer.
func copyChanges(cs []Change) []Change {
	size := 0
	for _, c := range cs {
		size += len(c.Key) + len(c.Value)
	}
	buf := make([]byte, 0, size)
	out := make([]Change, len(cs))
	for i, c := range cs {
		out[i] = c
		k0 := len(buf)
		buf = append(buf, c.Key...)
		out[i].Key = buf[k0:len(buf):len(buf)]
		if !c.Delete {
			v0 := len(buf)
			buf = append(buf, c.Value...)
			out[i].Value = buf[v0:len(buf):len(buf)]
		}
	}
	return out
}

// openHistory opens the change history at Open (and when a restore
// reopens the store): its oldest revision from the state file, whose
// applied revision is applied, and its log. A store whose history log is
// missing (created before the log existed, or deleted) has its history
// start after applied; a state file that still holds the history bucket of
// older versions has it dropped. A log that cannot be opened is set
// aside: the store opens with a history that starts after applied.
func (db *DB) openHistory(applied uint64) error {
	dir := histDir(db.dir)
	_, statErr := os.Stat(dir)
	missing := errors.Is(statErr, os.ErrNotExist)
	var oldest, through uint64
	err := db.bdb.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		oldest, through = getUint64(meta, keyHistoryOldest), getUint64(meta, keyHistoryLast)
		if tx.Bucket(bucketHistory) != nil {
			if err := tx.DeleteBucket(bucketHistory); err != nil {
				return err
			}
			if err := meta.Delete(keyHistoryBytes); err != nil {
				return err
			}
			db.log.Info("engine: dropped the state file's change history; the history now has a log of its own and starts after the checkpoint", "rev", applied)
			missing = true
		}
		if oldest == 0 || missing && oldest <= applied {
			oldest, through = applied+1, 0
			return restartHistory(meta, oldest)
		}
		return nil
	})
	if err != nil {
		return err
	}
	h := &db.hist
	h.log.segSize = db.opts.histSegmentBytes
	err = h.log.open(dir, oldest, applied)
	if err == nil && h.log.last != through {
		// The log lost records the state file counts on (a segment
		// deleted or cut short): what is left has a gap.
		err = fmt.Errorf("its last record is of revision %d, the checkpoint wrote through revision %d", h.log.last, through)
		h.log.close()
	}
	if err != nil {
		aside := dir + ".damaged"
		db.log.Error("engine: the change history's log is damaged; set aside, the history starts after the checkpoint", "err", err, "moved_to", aside, "rev", applied)
		os.RemoveAll(aside)
		if rerr := os.Rename(dir, aside); rerr != nil {
			return fmt.Errorf("engine: history log: %w (and setting it aside failed: %w)", err, rerr)
		}
		oldest = applied + 1
		if err := db.bdb.Update(func(tx *bolt.Tx) error {
			return restartHistory(tx.Bucket(bucketMeta), oldest)
		}); err != nil {
			return err
		}
		if err := h.log.open(dir, oldest, applied); err != nil {
			return err
		}
	}
	// What the history held in memory was the replaced store's, if a
	// restore reopens it.
	h.mu.Lock()
	old := h.notify
	h.recs, h.fx, h.chunk = nil, nil, nil
	h.ckpt, h.oldest, h.last = applied, oldest, applied
	h.notify, h.waited = make(chan struct{}), false
	h.mu.Unlock()
	if old != nil {
		close(old) // those waiting read the new history
	}
	return nil
}

// restartHistory records in meta a history that starts at oldest with an
// empty log.
func restartHistory(meta *bolt.Bucket, oldest uint64) error {
	if err := meta.Delete(keyHistoryLast); err != nil {
		return err
	}
	return meta.Put(keyHistoryOldest, binary.BigEndian.AppendUint64(nil, oldest))
}

// historyThrough returns the change sets held in memory through rev.
func (h *history) through(rev uint64) []histRec {
	h.mu.Lock()
	defer h.mu.Unlock()
	i := sort.Search(len(h.recs), func(i int) bool { return h.recs[i].rev > rev })
	return h.recs[:i:i]
}

// checkpointed drops the change sets through rev from memory once a
// checkpoint has written them, with the history's new oldest revision. The
// oldest revision never goes back: a compaction may have moved it past the
// one the checkpoint computed, after the checkpoint's transaction.
func (h *history) checkpointed(rev, oldest uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i := sort.Search(len(h.recs), func(i int) bool { return h.recs[i].rev > rev })
	h.recs = slices.Clone(h.recs[i:])
	h.ckpt, h.oldest = rev, max(h.oldest, oldest)
}

// compacted moves the history's oldest revision up to oldest, once the
// state file records it, and drops the change sets below it from memory.
func (h *history) compacted(oldest uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if oldest <= h.oldest {
		return
	}
	h.oldest = oldest
	if i := sort.Search(len(h.recs), func(i int) bool { return h.recs[i].rev >= oldest }); i > 0 {
		h.recs = slices.Clone(h.recs[i:])
	}
}

// persistHistory appends the change sets held in memory through rev to the
// history's log and fsyncs them, before the checkpoint at rev commits,
// and returns the oldest revision the retention keeps then: it drops the
// oldest records while the history is over HistoryBytes, or older than
// both HistoryRevisions revisions and HistoryAge. The checkpoint's
// transaction records it; the log is cut after the commit. Only the
// checkpointer calls it.
func (db *DB) persistHistory(rev uint64) (uint64, error) {
	h := &db.hist
	oldest := db.OldestRevision()
	if err := h.log.repair(oldest, db.applied.Load()); err != nil {
		return 0, err
	}
	recs := h.through(rev)
	i := sort.Search(len(recs), func(i int) bool { return recs[i].rev > h.log.last && recs[i].rev >= oldest })
	if err := h.log.append(recs[i:]); err != nil {
		return 0, err
	}
	return h.log.retain(oldest, rev, db.now()-db.opts.HistoryAge.Milliseconds(), db.opts)
}

// CompactHistory drops the change history below rev (what the retention
// options drop by themselves, sooner): Changes from an older revision then
// gives a CompactedError naming the new oldest. rev is capped at the
// revision after the last durable one: a revision not yet written, or that
// a crash could still take away, is never compacted. It returns the
// history's oldest revision after it, rev or the one it had if that is
// newer.
//
// The state file records the new oldest revision in one transaction; the
// log's records below it go after it (a crash between leaves them, and
// Open cuts them). The change sets held in memory (not yet checkpointed)
// below rev go too. Safe for concurrent use, but not meant to run beside
// Defrag, which it waits for.
func (db *DB) CompactHistory(rev uint64) (uint64, error) {
	if db.isClosed() {
		return 0, ErrClosed
	}
	h := &db.hist
	h.mu.Lock()
	target := min(rev, h.last+1)
	h.mu.Unlock()
	target = min(target, db.DurableRevision()+1)
	bdb, tx, err := db.beginMaintenance()
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	var oldest uint64
	rerr := db.readState(nil, func() {
		meta := tx.Bucket(bucketMeta)
		if oldest = getUint64(meta, keyHistoryOldest); oldest >= target {
			return
		}
		oldest = target
		if err = meta.Put(keyHistoryOldest, binary.BigEndian.AppendUint64(nil, oldest)); err != nil {
			return
		}
		err = tx.Commit()
	})
	if rerr != nil {
		err = rerr
	}
	if err != nil {
		return 0, fmt.Errorf("engine: compact history below revision %d: %w", target, err)
	}
	// What the state file now says, unless a restore replaced it meanwhile.
	db.smu.RLock()
	same := db.bdb == bdb
	gen := h.log.generation()
	if same {
		h.compacted(oldest)
	}
	db.smu.RUnlock()
	if same {
		if err := h.log.truncate(gen, oldest); err != nil {
			return oldest, fmt.Errorf("engine: compact history below revision %d: cut its log: %w", target, err)
		}
	}
	return oldest, nil
}

// beginMaintenance begins a writing transaction of the state file when no
// checkpoint (or defrag) is writing it, so that waiting for it holds up
// neither writes nor reads: a checkpoint cannot begin to freeze the
// memtable while smu is held shared. It returns the state file the
// transaction is on.
func (db *DB) beginMaintenance() (*bolt.DB, *bolt.Tx, error) {
	for {
		db.smu.RLock()
		if db.active == nil || db.bdb == nil {
			db.smu.RUnlock()
			return nil, nil, ErrClosed
		}
		if db.frozen == nil {
			bdb := db.bdb
			tx, err := bdb.Begin(true)
			db.smu.RUnlock()
			return bdb, tx, err
		}
		db.smu.RUnlock()
		time.Sleep(10 * time.Millisecond) // a checkpoint is committing
	}
}

func getUint64(b *bolt.Bucket, key []byte) uint64 {
	if v := b.Get(key); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// historyRecordSize is the size of the record of a revision that made
// changes, its revision included (see appendHistory).
func historyRecordSize(changes []Change) int {
	n := 8 + 4 + 8 + uvarintSize(uint64(len(changes)))
	for _, c := range changes {
		n += 1 + uvarintSize(uint64(len(c.Key))) + len(c.Key)
		if !c.Delete {
			n += uvarintSize(uint64(len(c.Value))) + len(c.Value) + 8
		}
	}
	return n
}

func uvarintSize(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}

// appendHistory appends the history record of the revision keyed k to dst.
func appendHistory(dst, k []byte, at int64, changes []Change) []byte {
	r0 := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint64(dst, uint64(at))
	dst = binary.AppendUvarint(dst, uint64(len(changes)))
	for _, c := range changes {
		if c.Delete {
			dst = append(dst, 1)
			dst = binary.AppendUvarint(dst, uint64(len(c.Key)))
			dst = append(dst, c.Key...)
			continue
		}
		dst = append(dst, 0)
		dst = binary.AppendUvarint(dst, uint64(len(c.Key)))
		dst = append(dst, c.Key...)
		dst = binary.AppendUvarint(dst, uint64(len(c.Value)))
		dst = append(dst, c.Value...)
		dst = binary.BigEndian.AppendUint64(dst, uint64(c.ExpiresAt))
	}
	sum := crc32.Update(crc32.Checksum(k, castagnoli), castagnoli, dst[r0+4:])
	binary.BigEndian.PutUint32(dst[r0:], sum)
	return dst
}

var errShortHistory = errors.New("short history record")

// historySumOK reports whether the history record rec of the revision
// keyed k has its header and its checksum matches.
func historySumOK(k, rec []byte) bool {
	return len(rec) >= 12 && crc32.Update(crc32.Checksum(k, castagnoli), castagnoli, rec[4:]) == binary.BigEndian.Uint32(rec)
}

// decodeChanges decodes the history record rec (after its revision)
// without checking its checksum (historySumOK): for records checked when
// their segment was loaded, or held in memory. The changes alias rec; they
// are appended to dst[:0], whose room a reader reuses from record to
// record.
func decodeChanges(dst []Change, rec []byte) (at int64, changes []Change, ok bool) {
	if len(rec) < 12 {
		return 0, nil, false
	}
	at = int64(binary.BigEndian.Uint64(rec[4:]))
	p := rec[12:]
	next := func(n int) ([]byte, error) {
		if n < 0 || n > len(p) {
			return nil, errShortHistory
		}
		b := p[:n:n]
		p = p[n:]
		return b, nil
	}
	uvarint := func() (int, error) {
		v, n := binary.Uvarint(p)
		if n <= 0 || v > uint64(len(rec)) {
			return 0, errShortHistory
		}
		p = p[n:]
		return int(v), nil
	}
	count, err := uvarint()
	if err != nil {
		return 0, nil, false
	}
	changes = dst[:0]
	for range count {
		f, err := next(1)
		if err != nil || f[0] > 1 {
			return 0, nil, false
		}
		var c Change
		c.Delete = f[0] == 1
		kl, err := uvarint()
		if err != nil {
			return 0, nil, false
		}
		if c.Key, err = next(kl); err != nil {
			return 0, nil, false
		}
		if !c.Delete {
			vl, err := uvarint()
			if err != nil {
				return 0, nil, false
			}
			if c.Value, err = next(vl); err != nil {
				return 0, nil, false
			}
			e, err := next(8)
			if err != nil {
				return 0, nil, false
			}
			c.ExpiresAt = int64(binary.BigEndian.Uint64(e))
		}
		changes = append(changes, c)
	}
	return at, changes, len(p) == 0
}
