package engine

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/kvdstore/kvd/wal"
)

// The change history's log: the change sets of checkpointed revisions, one
// record each, appended in revision order to segment files in DIR/history,
// each named by the revision of its first record (20 decimal digits). A
// record is its length (uvarint) and its bytes: the revision (uint64 BE)
// followed by the change set as appendHistory encodes it, whose checksum
// covers the revision too.
//
// A checkpoint appends the change sets it covers and fsyncs them before
// its transaction commits the state file, so the log always holds every
// change set through the state file's applied revision. What a crash
// leaves after it (a torn record, records of a checkpoint that did not
// commit) is cut at Open, and replay from the checkpoint computes those
// revisions again. The retention drops whole segments from the front; the
// oldest revision the history keeps is the state file's (meta key
// history-oldest), and readers never return a record before it.
//
// The history was kept in the state file's B+tree before: page
// allocation and writes there took most of a pipelined load's CPU, and the
// file grew by the whole retention (bench/RESULTS.md, "The change history
// in a log of its own").

// histSegmentBytes is the size past which the log starts a new segment:
// the unit of the retention's cut and of a reader's load.
const histSegmentBytes = 4 << 20

// segBytes is the log's segment size.
func (h *histLog) segBytes() int64 {
	if h.segSize > 0 {
		return h.segSize
	}
	return histSegmentBytes
}

// histWriteBytes is the size of the writes that append the records.
const histWriteBytes = 1 << 20

// histCacheSegments is how many segments readers keep loaded.
const histCacheSegments = 4

// histSeg is a segment file of the log.
type histSeg struct {
	first uint64 // the revision of its first record, its name
	size  int64  // its bytes that hold whole, appended records
	// What the retention needs of it without reading it, once known for
	// all its records (timed: a segment created since Open, or loaded):
	// the revision of its last record and the latest time of its records.
	timed bool
	last  uint64
	maxAt int64
}

// recordTime returns the time (Unix ms) of a history record (its revision
// first).
func recordTime(rec []byte) int64 { return int64(binary.BigEndian.Uint64(rec[12:])) }

// histLoaded is a segment read into memory: its first size bytes, and the
// offset and revision of each record in them.
type histLoaded struct {
	first  uint64
	size   int64
	data   []byte
	starts []int // where each record (its length) begins
	revs   []uint64
	maxAt  int64 // the latest time of its records
}

// histLog is the change history's log.
type histLog struct {
	// wmu orders those that change the files: the checkpointer's
	// appends, the cuts (checkpoints and compactions), open and close.
	wmu sync.Mutex
	// mu guards what readers read: the segments, cut and the cache.
	mu      sync.RWMutex
	dir     string
	segSize int64 // see segBytes
	segs    []histSeg
	// cut is the revision the log was last cut before: records of older
	// revisions may be gone.
	cut    uint64
	closed bool
	cache  []*histLoaded // most recent last

	// The checkpointer's, under wmu: the tail segment open for appending
	// (nil until the first append after open), the revision of the last
	// record, and broken, set when an append or its fsync failed: the
	// files may no longer hold what was counted, so the next append
	// reopens the log first (cutting what followed the applied revision).
	tail   *os.File
	last   uint64
	broken bool
	buf    []byte

	bytes atomic.Int64 // the segments' size
	gen   atomic.Uint64
	reads atomic.Int64 // segments read from their files (tests count them)
}

func histDir(dir string) string { return filepath.Join(dir, "history") }

func histSegName(first uint64) string { return fmt.Sprintf("%020d", first) }

// open opens the history log in dir, cut to the records of revisions
// oldest through applied: a torn or damaged last record, any record after
// applied (a checkpoint that did not commit) and whole segments before
// oldest (a cut a crash interrupted) go.
func (h *histLog) open(dir string, oldest, applied uint64) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	return h.openLocked(dir, oldest, applied)
}

func (h *histLog) openLocked(dir string, oldest, applied uint64) error {
	h.closeTail()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("engine: history log: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("engine: history log: %w", err)
	}
	var segs []histSeg
	for _, e := range ents {
		name := e.Name()
		first, err := strconv.ParseUint(name, 10, 64)
		if err != nil || len(name) != 20 || e.IsDir() {
			continue
		}
		segs = append(segs, histSeg{first: first})
	}
	slices.SortFunc(segs, func(a, b histSeg) int { return cmp.Compare(a.first, b.first) })
	// From the back: segments that begin after applied go; the last one
	// left is cut after its last sound record of applied or before.
	var last uint64
	for len(segs) > 0 {
		s := &segs[len(segs)-1]
		path := filepath.Join(dir, histSegName(s.first))
		if s.first <= applied {
			b, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("engine: history log: %w", err)
			}
			ld := parseHistSeg(s.first, b)
			n := sort.Search(len(ld.revs), func(i int) bool { return ld.revs[i] > applied })
			if n > 0 {
				end := ld.size
				if n < len(ld.starts) {
					end = int64(ld.starts[n])
				}
				if end < int64(len(b)) {
					if err := os.Truncate(path, end); err != nil {
						return fmt.Errorf("engine: history log: cut its tail: %w", err)
					}
				}
				s.size, last = end, ld.revs[n-1]
				break
			}
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("engine: history log: %w", err)
		}
		segs = segs[:len(segs)-1]
	}
	for i := range segs[:max(len(segs)-1, 0)] {
		info, err := os.Stat(filepath.Join(dir, histSegName(segs[i].first)))
		if err != nil {
			return fmt.Errorf("engine: history log: %w", err)
		}
		segs[i].size = info.Size()
	}
	h.mu.Lock()
	h.dir, h.segs, h.cut, h.closed, h.cache = dir, segs, 0, false, nil
	h.mu.Unlock()
	h.last, h.broken = last, false
	h.gen.Add(1)
	// A segment the cut could not remove stays (readers skip its
	// records) and goes at the next cut.
	_ = h.cutLocked(oldest)
	return wal.SyncDir(dir)
}

// parseHistSeg indexes the records of the segment whose bytes are b, up to
// the first torn one or one whose checksum fails (its size is where that
// one begins). The changes are decoded when read (scan).
func parseHistSeg(first uint64, b []byte) *histLoaded {
	ld := &histLoaded{first: first, data: b, maxAt: math.MinInt64}
	off := 0
	for off < len(b) {
		size, n := binary.Uvarint(b[off:])
		if n <= 0 || uint64(len(b)-off-n) < size || size < 8 {
			break
		}
		rec := b[off+n : off+n+int(size)]
		rev := binary.BigEndian.Uint64(rec)
		if !historySumOK(rec[:8], rec[8:]) || len(ld.revs) > 0 && rev <= ld.revs[len(ld.revs)-1] {
			break
		}
		ld.starts = append(ld.starts, off)
		ld.revs = append(ld.revs, rev)
		ld.maxAt = max(ld.maxAt, recordTime(rec))
		off += n + int(size)
	}
	ld.size = int64(off)
	return ld
}

// record returns the bytes of record i of a loaded segment, and its size
// on disk (with its length).
func (ld *histLoaded) record(i int) ([]byte, int) {
	size, n := binary.Uvarint(ld.data[ld.starts[i]:])
	p := ld.starts[i] + n
	return ld.data[p : p+int(size)], n + int(size)
}

// errHistGone: the log no longer has a record a reader looked for.
var errHistGone = errors.New("history record gone")

// load returns segment s read into memory, from the cache if it is there
// with s's size.
func (h *histLog) load(s histSeg) (*histLoaded, error) {
	h.mu.Lock()
	for i, ld := range h.cache {
		if ld.first == s.first && ld.size == s.size {
			h.cache = append(append(h.cache[:i:i], h.cache[i+1:]...), ld)
			h.mu.Unlock()
			return ld, nil
		}
	}
	dir := h.dir
	h.mu.Unlock()
	f, err := os.Open(filepath.Join(dir, histSegName(s.first)))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errHistGone
	}
	if err != nil {
		return nil, fmt.Errorf("engine: history log: %w", err)
	}
	defer f.Close()
	h.reads.Add(1)
	b := make([]byte, s.size)
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("engine: history log: read %s: %w", f.Name(), err)
	}
	ld := parseHistSeg(s.first, b)
	if ld.size != s.size {
		return nil, fmt.Errorf("%w: history record after revision %d", ErrCorruptValue, max(s.first, lastOf(ld.revs)))
	}
	h.mu.Lock()
	if len(h.cache) >= histCacheSegments {
		h.cache = slices.Delete(h.cache, 0, 1)
	}
	h.cache = append(h.cache, ld)
	for i := range h.segs {
		if t := &h.segs[i]; t.first == s.first && t.size == s.size {
			t.timed, t.last, t.maxAt = true, lastOf(ld.revs), ld.maxAt
		}
	}
	h.mu.Unlock()
	return ld, nil
}

func lastOf(revs []uint64) uint64 {
	if len(revs) == 0 {
		return 0
	}
	return revs[len(revs)-1]
}

// scan calls add with the change sets of revisions from through upTo, in
// order, while it returns true, and reports whether it always did; add
// must not keep the slice it is given, which the next record reuses. It
// fails with errHistGone if the records of from may have been cut.
func (h *histLog) scan(from, upTo uint64, add func(rev uint64, at int64, changes []Change) bool) (bool, error) {
	h.mu.RLock()
	if h.closed {
		h.mu.RUnlock()
		return false, ErrClosed
	}
	if from < h.cut {
		h.mu.RUnlock()
		return false, errHistGone
	}
	// The last segment that begins at or before from, and those after it.
	i := sort.Search(len(h.segs), func(i int) bool { return h.segs[i].first > from })
	segs := slices.Clone(h.segs[max(i-1, 0):])
	h.mu.RUnlock()
	var scratch []Change
	for _, s := range segs {
		if s.first > upTo {
			break
		}
		ld, err := h.load(s)
		if err != nil {
			return false, err
		}
		for j := sort.Search(len(ld.revs), func(j int) bool { return ld.revs[j] >= from }); j < len(ld.revs); j++ {
			if ld.revs[j] > upTo {
				return true, nil
			}
			rec, _ := ld.record(j)
			at, changes, ok := decodeChanges(scratch, rec[8:]) // load checked its checksum
			scratch = changes
			if !ok {
				return false, fmt.Errorf("%w: history record of revision %d", ErrCorruptValue, ld.revs[j])
			}
			if !add(ld.revs[j], at, changes) {
				return false, nil
			}
		}
	}
	return true, nil
}

// append appends the change sets recs (ascending, each after the log's
// last) and fsyncs them (and the directory, for a new segment). A failure
// leaves the log broken until repaired. Only the checkpointer calls it.
func (h *histLog) append(recs []histRec) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if h.closed {
		return ErrClosed
	}
	if h.broken {
		return errors.New("engine: history log: a failed append was not cut yet")
	}
	if len(recs) == 0 {
		return nil
	}
	err := h.appendLocked(recs)
	if err != nil {
		h.broken = true
		return fmt.Errorf("engine: append history: %w", err)
	}
	return nil
}

func (h *histLog) appendLocked(recs []histRec) error {
	created := false
	var size int64 // the tail segment's bytes on disk
	if h.tail != nil {
		h.mu.RLock()
		size = h.segs[len(h.segs)-1].size
		h.mu.RUnlock()
	}
	buf := h.buf[:0]
	var bufLast uint64               // the last record in buf
	bufMaxAt := int64(math.MinInt64) // the latest time of its records
	// flush writes buf to the tail and counts it.
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		if _, err := h.tail.Write(buf); err != nil {
			return err
		}
		size += int64(len(buf))
		h.bytes.Add(int64(len(buf)))
		h.mu.Lock()
		t := &h.segs[len(h.segs)-1]
		t.size, t.last, t.maxAt = size, bufLast, max(t.maxAt, bufMaxAt)
		h.mu.Unlock()
		buf, bufMaxAt = buf[:0], math.MinInt64
		return nil
	}
	for _, r := range recs {
		if h.tail == nil || size+int64(len(buf)) >= h.segBytes() {
			if err := flush(); err != nil {
				return err
			}
			var err error
			fresh := false
			if size, fresh, err = h.openTail(r.rev); err != nil {
				return err
			}
			created = created || fresh
		}
		buf = binary.AppendUvarint(buf, uint64(len(r.rec)))
		buf = append(buf, r.rec...) // encoded when the batch was applied
		bufLast, bufMaxAt = r.rev, max(bufMaxAt, recordTime(r.rec))
		if len(buf) >= histWriteBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		h.last = r.rev
	}
	if err := flush(); err != nil {
		return err
	}
	h.buf = buf[:0]
	if err := wal.DataSync(h.tail); err != nil {
		return err
	}
	if created {
		return wal.SyncDir(h.dir)
	}
	return nil
}

// openTail opens the segment to append the record of revision first to:
// after Open, the last segment if it is not full; else a new one, named
// first, once the full tail is synced and closed. It returns the
// segment's size and whether it is new.
func (h *histLog) openTail(first uint64) (int64, bool, error) {
	h.mu.RLock()
	var tail histSeg
	if len(h.segs) > 0 {
		tail = h.segs[len(h.segs)-1]
	}
	h.mu.RUnlock()
	if h.tail == nil && tail.first != 0 && tail.size < h.segBytes() {
		f, err := os.OpenFile(filepath.Join(h.dir, histSegName(tail.first)), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return 0, false, err
		}
		h.tail = f
		return tail.size, false, nil
	}
	if h.tail != nil {
		if err := wal.DataSync(h.tail); err != nil {
			return 0, false, err
		}
		if err := h.tail.Close(); err != nil {
			return 0, false, err
		}
		h.tail = nil
	}
	f, err := os.OpenFile(filepath.Join(h.dir, histSegName(first)), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o640)
	if err != nil {
		return 0, false, err
	}
	h.tail = f
	h.mu.Lock()
	h.segs = append(h.segs, histSeg{first: first, timed: true, maxAt: math.MinInt64})
	h.mu.Unlock()
	return 0, true, nil
}

// repair reopens a broken log, cut after applied.
func (h *histLog) repair(oldest, applied uint64) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if !h.broken || h.closed {
		return nil
	}
	return h.openLocked(h.dir, oldest, applied)
}

// truncate drops the segments wholly before oldest, if the log is still the
// one of generation gen (a restore reopens it for another store).
func (h *histLog) truncate(gen uint64, oldest uint64) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if h.closed || h.gen.Load() != gen {
		return nil
	}
	return h.cutLocked(oldest)
}

// generation counts the opens of the log.
func (h *histLog) generation() uint64 { return h.gen.Load() }

// cutLocked drops the segments whose records are all before oldest (the
// tail stays, even empty of wanted records) and counts the bytes left.
// Called with wmu held.
func (h *histLog) cutLocked(oldest uint64) error {
	h.mu.Lock()
	h.cut = max(h.cut, oldest)
	n := 0
	for n+1 < len(h.segs) && h.segs[n+1].first <= oldest {
		n++
	}
	drop := slices.Clone(h.segs[:n])
	h.segs = slices.Delete(h.segs, 0, n)
	var total int64
	for _, s := range h.segs {
		total += s.size
	}
	h.bytes.Store(total)
	h.mu.Unlock()
	var errs []error
	for _, s := range drop {
		if err := os.Remove(filepath.Join(h.dir, histSegName(s.first))); err != nil {
			errs = append(errs, err) // left for the next cut or Open
		}
	}
	return errors.Join(errs...)
}

// retain returns the oldest revision the retention keeps after the
// checkpoint at rev, from oldest on: the oldest records go while the log is
// over o.HistoryBytes, or while they are more than o.HistoryRevisions
// revisions before rev and older than cutAge (Unix ms). (Records before
// oldest not cut yet count in the size.)
func (h *histLog) retain(oldest, rev uint64, cutAge int64, o Options) (uint64, error) {
	h.mu.RLock()
	segs := slices.Clone(h.segs)
	h.mu.RUnlock()
	total := h.bytes.Load()
	for i, s := range segs {
		// A whole segment whose every record goes, by size or by age and
		// count, goes without being read (its bytes all go at the cut).
		if i+1 < len(segs) && s.timed && s.last >= oldest &&
			(total-s.size >= o.HistoryBytes || s.last+o.HistoryRevisions <= rev && s.maxAt < cutAge) {
			total -= s.size
			oldest = s.last + 1
			continue
		}
		ld, err := h.load(s)
		if err != nil {
			return 0, err
		}
		for j, r := range ld.revs {
			if r < oldest {
				continue
			}
			rec, n := ld.record(j)
			at := recordTime(rec)
			old := r+o.HistoryRevisions <= rev && at < cutAge
			if total <= o.HistoryBytes && !old {
				return oldest, nil
			}
			total -= int64(n)
			oldest = r + 1
		}
	}
	return oldest, nil
}

func (h *histLog) closeTail() {
	if h.tail != nil {
		h.tail.Close()
		h.tail = nil
	}
}

// close closes the log.
func (h *histLog) close() error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	h.closeTail()
	h.mu.Lock()
	h.closed, h.cache = true, nil
	h.mu.Unlock()
	return nil
}

// size returns the bytes of the log's segments.
func (h *histLog) size() int64 { return h.bytes.Load() }
