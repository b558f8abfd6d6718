package wal

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	twal "github.com/tidwall/wal"
)

const (
	formatFile    = "FORMAT"
	formatVersion = "kvd-wal 1\n"
	// trashDir holds second links to the segment files that a front
	// truncation drops (see TruncateFront). Whatever is in it is garbage.
	trashDir = "trash"

	defaultSegmentSize   = 64 << 20
	defaultFlushInterval = 10 * time.Millisecond
	defaultFlushBytes    = 1 << 20
	defaultPreallocate   = 1 << 20
)

// Options configure a Log. The zero value is valid.
type Options struct {
	// SegmentSize is the size at which a segment file is sealed and a new one
	// started. Default 64 MiB. No segment is held in memory: tidwall/wal is
	// opened WriteOnly (third_party/tidwall-wal/PATCHES.md).
	SegmentSize int
	// GroupCommitDelay makes the sync leader wait this long before it fsyncs,
	// so that more records share the fsync. Default 0: no artificial delay.
	GroupCommitDelay time.Duration
	// FlushInterval is how often the background flusher fsyncs records that
	// nobody waits for. Default 10ms.
	FlushInterval time.Duration
	// FlushBytes makes the flusher fsync as soon as this many bytes are
	// written but not synced. Default 1 MiB.
	FlushBytes int
	// Preallocate is how far ahead of its last record the tail segment file
	// is kept zero-filled, so that records overwrite blocks that are already
	// allocated and an fdatasync has no file size to commit. Default 1 MiB;
	// negative disables it.
	Preallocate int
	// Logger receives repair and failure messages. Nil discards them.
	Logger *slog.Logger
	// OnWritten, if set, is called by the goroutine that wrote records
	// first..first+len(vs)-1, in revision order, after they are written and
	// before any of their waiters returns. vs holds the values passed to
	// Enqueue. Calls never overlap.
	OnWritten func(first uint64, vs []any)
	// OnSync, if set, is called after every fsync of the log with its
	// duration and the number of records it made durable.
	OnSync func(d time.Duration, records int)
	// SyncFile performs the fsync of a segment file. Nil means fdatasync.
	// Tests set it to inject failures.
	SyncFile func(f *os.File) error
}

// Stats are counters of a Log.
type Stats struct {
	First, Written, Durable uint64        // first revision held, last written, last durable
	Fsyncs                  uint64        // fsyncs of segment files by the log
	RecordsSynced           uint64        // records made durable by those fsyncs
	MaxFsync                time.Duration // slowest fsync since Open
	BytesWritten            int64         // bytes written since Open
	Segments                int
	Err                     error // sticky failure, if any
}

// Log is an open write-ahead log. Its methods are safe for concurrent use.
type Log struct {
	dir  string
	opts Options
	log  *slog.Logger
	tw   *twal.Log

	fatal atomic.Pointer[error] // sticky failure

	// Write side: guarded by mu.
	mu        sync.Mutex
	wwait     waitList // waiting for a revision to be written
	closed    bool
	next      uint64 // revision the next Enqueue gets
	written   uint64 // last revision written
	writing   bool   // a goroutine is writing queued records
	queue     []byte // framed records waiting to be written
	queueRecs []int  // end offset of each queued record in queue
	queueVals []any
	syncF     *os.File   // tail segment, for fdatasync
	retired   []*os.File // old tail segments, closed by the next sync leader
	unsynced  int        // bytes written since the last fsync
	// flushParked: the flusher sleeps without a timer, because every record
	// written was fsynced (or claimed by an fsync) when it last looked. The
	// write that ends the quiet spell wakes it, sending its time on flushWake.
	flushParked bool
	segFirst    []uint64 // first revision of each segment (mirrors tidwall/wal)
	tailBytes   int      // size of the tail segment (mirrors tidwall/wal)
	first       uint64
	bytes       int64

	// Sync side: guarded by smu.
	smu          sync.Mutex
	swait        waitList // waiting for a revision to be durable
	syncing      bool
	durable      uint64
	fsyncs       uint64
	recordsSyncd uint64
	maxFsync     time.Duration

	flushKick     chan struct{}
	flushWake     chan time.Time
	flusherRuns   atomic.Uint64 // the flusher's passes, for tests
	flushInterval atomic.Int64
	stop          chan struct{}
	wg            sync.WaitGroup
	closeOnce     sync.Once
	closeErr      error

	// Owned by the writing goroutine (writing set), like tailBytes; Close
	// reads them once the last write is done.
	zeroed     int  // the tail segment file's size: tailBytes plus zero fill
	noPrealloc bool // zero fill failed in this tail segment

	// Scratch of the writing goroutine.
	batch  twal.Batch
	spare  []byte
	spareR []int
	spareV []any
}

// Open opens the log in dir, creating it if needed. It finishes an
// interrupted truncation, checks every record, repairs a torn tail of the
// last segment, fsyncs what it found, and calls replay (if not nil) for every
// record whose revision is >= from, in order. Records with a revision below
// from may be absent; a log that does not reach from-1 is an error.
func Open(dir string, from uint64, opts Options, replay ReplayFunc) (*Log, error) {
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = defaultSegmentSize
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = defaultFlushInterval
	}
	if opts.FlushBytes <= 0 {
		opts.FlushBytes = defaultFlushBytes
	}
	if opts.Preallocate == 0 {
		opts.Preallocate = defaultPreallocate
	}
	if opts.SyncFile == nil {
		opts.SyncFile = fdatasync
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if from == 0 {
		from = 1
	}
	if err := checkFormat(dir); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(filepath.Join(dir, trashDir)); err != nil {
		return nil, fmt.Errorf("wal: empty %s: %w", trashDir, err)
	}
	segs, err := finishTruncation(dir)
	if err != nil {
		return nil, err
	}
	// Make whatever an earlier process wrote durable before it is replayed:
	// the caller may checkpoint replayed records at once.
	for _, s := range segs {
		if err := syncFile(filepath.Join(dir, s.name)); err != nil {
			return nil, err
		}
	}
	if len(segs) == 0 && from > 1 {
		// An empty directory at a later revision: start the log there, as
		// tidwall/wal would after truncating everything.
		name := segmentName(from)
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_RDWR, 0o640)
		if err != nil {
			return nil, fmt.Errorf("wal: create segment: %w", err)
		}
		f.Close()
		if err := syncDir(dir); err != nil {
			return nil, err
		}
		segs = []segmentFile{{name: name, first: from}}
	}
	res, err := scanLog(dir, segs, from, replay, logger)
	if err != nil {
		return nil, err
	}
	if len(segs) > 0 && (res.first > from || res.last+1 < from) {
		return nil, fmt.Errorf("wal: log holds revisions %d..%d, state needs %d onwards: %w",
			res.first, res.last, from, ErrCorrupt)
	}
	tw, err := twal.Open(dir, &twal.Options{
		NoSync:      true,
		SegmentSize: opts.SegmentSize,
		AllowEmpty:  true,
		WriteOnly:   true, // the log is read by scanLog, never through tidwall/wal
		DirPerms:    0o750,
		FilePerms:   0o640,
	})
	if err != nil {
		return nil, fmt.Errorf("wal: open: %w", err)
	}
	if len(segs) == 0 {
		// tidwall/wal created segment 1.
		if err := syncDir(dir); err != nil {
			tw.Close()
			return nil, err
		}
		res.first, res.last = 1, 0
		res.segFirst = []uint64{1}
	}
	last, err := tw.LastIndex()
	if err != nil || last != res.last {
		tw.Close()
		return nil, fmt.Errorf("wal: open: tidwall/wal sees last index %d, scan saw %d (%v): %w", last, res.last, err, ErrCorrupt)
	}
	l := &Log{
		dir:       dir,
		opts:      opts,
		log:       logger,
		tw:        tw,
		next:      res.last + 1,
		written:   res.last,
		durable:   res.last,
		segFirst:  res.segFirst,
		tailBytes: int(res.tailSize),
		zeroed:    int(res.tailSize),
		first:     res.first,
		flushKick: make(chan struct{}, 1),
		flushWake: make(chan time.Time, 1),
		stop:      make(chan struct{}),
	}
	l.flushInterval.Store(int64(opts.FlushInterval))
	if l.syncF, err = l.openTail(); err != nil {
		tw.Close()
		return nil, err
	}
	l.wg.Add(1)
	go l.flusher()
	return l, nil
}

func checkFormat(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("wal: create dir: %w", err)
	}
	path := filepath.Join(dir, formatFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if string(b) != formatVersion {
			return fmt.Errorf("wal: %s says %q, this build reads %q: %w", path, b, formatVersion, ErrFormat)
		}
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("wal: read format: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("wal: read dir: %w", err)
	}
	for _, e := range ents {
		if len(e.Name()) >= segmentNameLen {
			return fmt.Errorf("wal: %s has segments but no %s file: %w", dir, formatFile, ErrFormat)
		}
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(formatVersion), 0o640); err != nil {
		return fmt.Errorf("wal: write format: %w", err)
	}
	if err := syncFile(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("wal: write format: %w", err)
	}
	return syncDir(dir)
}

func (l *Log) openTail() (*os.File, error) {
	name := segmentName(l.segFirst[len(l.segFirst)-1])
	f, err := os.OpenFile(filepath.Join(l.dir, name), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("wal: open tail segment: %w", err)
	}
	return f, nil
}

func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

func (l *Log) failure() error {
	if p := l.fatal.Load(); p != nil {
		return *p
	}
	return nil
}

// fail records the first failure of the log and wakes every waiter.
func (l *Log) fail(err error) error {
	werr := fmt.Errorf("%w: %w", ErrFailed, err)
	if l.fatal.CompareAndSwap(nil, &werr) {
		l.log.Error("wal: log failed; refusing writes until restart", "err", err)
	}
	l.mu.Lock()
	l.wwait.wakeAll()
	l.mu.Unlock()
	l.smu.Lock()
	l.swait.wakeAll()
	l.smu.Unlock()
	return l.failure()
}

// Enqueue assigns the next revision to a record carrying payload and queues
// it for writing. v is handed to Options.OnWritten once the record is written.
// The caller may reuse payload when Enqueue returns. The record is not
// written until some caller of WaitWritten writes it.
func (l *Log) Enqueue(payload []byte, v any) (uint64, error) {
	if len(payload) > MaxPayload-HeaderSize {
		return 0, fmt.Errorf("wal: payload of %d bytes is too large", len(payload))
	}
	l.mu.Lock()
	if err := l.failure(); err != nil {
		l.mu.Unlock()
		return 0, err
	}
	if l.closed {
		l.mu.Unlock()
		return 0, ErrClosed
	}
	rev := l.next
	l.next++
	l.queue = AppendRecord(l.queue, TypeBatch, rev, payload)
	l.queueRecs = append(l.queueRecs, len(l.queue))
	l.queueVals = append(l.queueVals, v)
	l.mu.Unlock()
	return rev, nil
}

// WaitWritten returns once the record of revision rev is written to its
// segment file, writing every queued record itself when no other goroutine
// is doing so.
func (l *Log) WaitWritten(rev uint64) error {
	l.mu.Lock()
	for l.written < rev {
		if err := l.failure(); err != nil {
			l.mu.Unlock()
			return err
		}
		if rev >= l.next {
			l.mu.Unlock()
			return fmt.Errorf("wal: wait for revision %d, which was never enqueued", rev)
		}
		if l.writing {
			l.wwait.wait(rev, &l.mu)
			continue
		}
		l.writeQueued(rev)
	}
	l.mu.Unlock()
	return nil
}

// writeQueued writes queued records in batches until the record of rev is
// written, then hands the lead to a waiter if records remain queued: a
// leader is not kept writing for others forever. Called with mu held and
// writing false; returns with mu held.
func (l *Log) writeQueued(rev uint64) {
	l.writing = true
	for l.written < rev && len(l.queueRecs) > 0 && l.failure() == nil {
		buf, ends, vals := l.queue, l.queueRecs, l.queueVals
		l.queue, l.queueRecs, l.queueVals = l.spare[:0], l.spareR[:0], l.spareV[:0]
		first := l.written + 1
		l.mu.Unlock()

		newSegs, err := l.writeBatch(first, buf, ends)
		if err == nil && len(newSegs) > 0 {
			err = l.sealedSegments(newSegs)
		}
		if err == nil && l.opts.OnWritten != nil {
			l.opts.OnWritten(first, vals)
		}
		clear(vals)
		if err != nil {
			l.fail(err) // takes mu itself
			l.mu.Lock()
			break
		}
		l.mu.Lock()
		l.written = first + uint64(len(ends)) - 1
		l.bytes += int64(len(buf))
		l.unsynced += len(buf)
		if l.flushParked {
			l.flushParked = false
			select {
			case l.flushWake <- time.Now():
			default:
			}
		}
		if l.unsynced >= l.opts.FlushBytes {
			select {
			case l.flushKick <- struct{}{}:
			default:
			}
		}
		l.spare, l.spareR, l.spareV = buf, ends, vals
		l.wwait.wakeUpTo(l.written)
	}
	l.writing = false
	if l.failure() != nil {
		l.wwait.wakeAll()
		return
	}
	// Waiters left have records still queued: one of them leads next.
	l.wwait.wakeOne()
}

// writeBatch writes framed records to tidwall/wal and returns the first
// revisions of the segments tidwall/wal created while doing so.
func (l *Log) writeBatch(first uint64, buf []byte, ends []int) ([]uint64, error) {
	var newSegs []uint64
	// Mirror tidwall/wal's segment cycling (Log.writeBatch in wal.go): a
	// full tail is cycled before the batch, and after any entry that fills it.
	if l.tailBytes > l.opts.SegmentSize {
		newSegs = append(newSegs, first)
		l.tailBytes = 0
	}
	start := 0
	for i, end := range ends {
		rec := buf[start:end]
		l.batch.Write(first+uint64(i), rec)
		l.tailBytes += uvarintLen(uint64(len(rec))) + len(rec)
		if l.tailBytes >= l.opts.SegmentSize {
			newSegs = append(newSegs, first+uint64(i)+1)
			l.tailBytes = 0
		}
		start = end
	}
	if len(newSegs) == 0 {
		l.preallocate()
	}
	if err := l.tw.WriteBatch(&l.batch); err != nil {
		l.batch.Clear()
		return nil, fmt.Errorf("wal: write: %w", err)
	}
	l.zeroed = max(l.zeroed, l.tailBytes)
	return newSegs, nil
}

// zeroBlock is the source of preallocate's zero fill.
var zeroBlock [64 << 10]byte

// preallocate zero-fills the tail segment file ahead of the batch about to
// be written, whose end is tailBytes, once less than half of
// Options.Preallocate is left. Overwriting allocated, already-synced blocks
// spares each fdatasync a journal commit of the file's size and block map:
// bench/rawsync --overwrite against plain appends. The fill stops at
// SegmentSize: tidwall/wal seals a segment only once its records reach that
// size, so a sealed segment never ends in zeros. A crash leaves the fill
// after the last record, where Open truncates it as a zeroed tail.
func (l *Log) preallocate() {
	chunk, limit := l.opts.Preallocate, l.opts.SegmentSize
	if chunk <= 0 || l.noPrealloc || l.zeroed >= limit || l.tailBytes+chunk/2 <= l.zeroed {
		return
	}
	target := min(limit, (l.tailBytes+chunk)&^4095)
	for off := l.zeroed; off < target; {
		n := min(target-off, len(zeroBlock))
		if _, err := l.syncF.WriteAt(zeroBlock[:n], int64(off)); err != nil {
			// Not a failure of the log: records can still be appended.
			l.noPrealloc = true
			l.log.Warn("wal: cannot zero-fill the tail segment ahead of its records; appending",
				"segment", filepath.Base(l.syncF.Name()), "err", err)
			return
		}
		off += n
		l.zeroed = off
	}
}

// sealedSegments makes segments that tidwall/wal just created durable in the
// directory and moves the fsync descriptor to the new tail. tidwall/wal
// fsyncs a segment itself when it seals it.
func (l *Log) sealedSegments(firsts []uint64) error {
	if err := syncDir(l.dir); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.segFirst = append(l.segFirst, firsts...)
	f, err := l.openTail()
	if err != nil {
		return err
	}
	l.retired = append(l.retired, l.syncF)
	l.syncF = f
	l.zeroed, l.noPrealloc = l.tailBytes, false
	return nil
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// WaitDurable returns once every record up to revision rev is written and
// fsynced. Concurrent callers share fsyncs: one of them fsyncs everything
// written so far while the others wait for it.
func (l *Log) WaitDurable(rev uint64) error {
	if err := l.WaitWritten(rev); err != nil {
		return err
	}
	l.smu.Lock()
	defer l.smu.Unlock()
	for l.durable < rev {
		if err := l.failure(); err != nil {
			return err
		}
		if l.syncing {
			l.swait.wait(rev, &l.smu)
			continue
		}
		l.syncing = true
		l.smu.Unlock()
		err := l.syncWritten()
		l.smu.Lock()
		l.syncing = false
		l.swait.wakeUpTo(l.durable)
		// Records written during that fsync need another: hand the lead to
		// one of their waiters.
		l.swait.wakeOne()
		if err != nil {
			return err
		}
	}
	return nil
}

// syncWritten fsyncs every record written so far. Only the sync leader
// (syncing set) calls it.
func (l *Log) syncWritten() error {
	if d := l.opts.GroupCommitDelay; d > 0 {
		time.Sleep(d)
	}
	l.mu.Lock()
	target, f := l.written, l.syncF
	retired := l.retired
	l.retired = nil
	l.unsynced = 0
	l.mu.Unlock()

	l.smu.Lock()
	durable := l.durable
	l.smu.Unlock()
	if target <= durable {
		closeAll(retired)
		return nil
	}
	start := time.Now()
	err := l.opts.SyncFile(f)
	took := time.Since(start)
	closeAll(retired)
	if err != nil {
		return l.fail(fmt.Errorf("wal: fsync %s: %w", f.Name(), err))
	}
	l.smu.Lock()
	l.durable = target
	l.fsyncs++
	l.recordsSyncd += target - durable
	l.maxFsync = max(l.maxFsync, took)
	l.smu.Unlock()
	if l.opts.OnSync != nil {
		l.opts.OnSync(took, int(target-durable))
	}
	return nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// Sync is a durability barrier: it returns once every record written before
// the call is durable.
func (l *Log) Sync() error {
	l.mu.Lock()
	rev := l.next - 1
	l.mu.Unlock()
	return l.WaitDurable(rev)
}

// SetFlushInterval changes how often the flusher fsyncs.
func (l *Log) SetFlushInterval(d time.Duration) {
	if d > 0 {
		l.flushInterval.Store(int64(d))
	}
}

// FlushInterval returns the flusher's period.
func (l *Log) FlushInterval() time.Duration { return time.Duration(l.flushInterval.Load()) }

// flusher fsyncs written records that nobody waits for, on a fixed period
// (so a record waits at most one FlushInterval, plus the fsync, however long
// the previous fsync took) or as soon as FlushBytes are unsynced.
//
// When a pass finds nothing left to fsync, the flusher parks without a timer
// until the next write wakes it, and then fsyncs one period after that
// write. A ticker that kept running would wake an idle server, or one that
// only serves reads or sync writes, 100 times a second at the default 10ms,
// with a few thread switches each time.
func (l *Log) flusher() {
	defer l.wg.Done()
	t := time.NewTimer(l.FlushInterval())
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		case <-l.flushKick:
		case woken := <-l.flushWake:
			t.Reset(l.FlushInterval() - time.Since(woken))
			continue
		}
		l.flusherRuns.Add(1)
		start := time.Now()
		l.mu.Lock()
		w := l.written
		l.mu.Unlock()
		if l.failure() == nil && l.durableRev() < w {
			// A failure is sticky and reported to every writer; the flusher
			// has nobody to tell.
			_ = l.WaitDurable(w)
		}
		// unsynced is zero once every written record is durable or claimed
		// by an fsync in progress (syncWritten), which ends in durability
		// or in the log's failure.
		l.mu.Lock()
		park := l.unsynced == 0 || l.failure() != nil
		l.flushParked = park
		l.mu.Unlock()
		if park {
			t.Stop()
		} else {
			t.Reset(l.FlushInterval() - time.Since(start))
		}
	}
}

func (l *Log) durableRev() uint64 {
	l.smu.Lock()
	defer l.smu.Unlock()
	return l.durable
}

// LastEnqueued returns the revision of the last record enqueued.
func (l *Log) LastEnqueued() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.next - 1
}

// Written returns the last revision written.
func (l *Log) Written() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.written
}

// Stats returns the log's counters.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	s := Stats{First: l.first, Written: l.written, BytesWritten: l.bytes, Segments: len(l.segFirst)}
	l.mu.Unlock()
	l.smu.Lock()
	s.Durable, s.Fsyncs, s.RecordsSynced, s.MaxFsync = l.durable, l.fsyncs, l.recordsSyncd, l.maxFsync
	l.smu.Unlock()
	s.Err = l.failure()
	return s
}

// Durable returns the last durable revision.
func (l *Log) Durable() uint64 { return l.durableRev() }

// Size returns the bytes held by the log's segment files on disk, the zero
// fill ahead of the tail (Options.Preallocate) included.
func (l *Log) Size() int64 {
	var n int64
	ents, _ := os.ReadDir(l.dir)
	for _, e := range ents {
		if len(e.Name()) == segmentNameLen {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
	}
	return n
}

// TruncateFront drops records below keep, but only by whole segments: it
// truncates tidwall/wal at the first record of a segment, where the patched
// tidwall/wal deletes the older segment files and rewrites nothing. It is a
// no-op when no whole segment is below keep.
func (l *Log) TruncateFront(keep uint64) error {
	if err := l.failure(); err != nil {
		return err
	}
	l.mu.Lock()
	segs := l.segFirst
	l.mu.Unlock()
	j := -1 // last segment (not the tail) whose records are all below keep
	for i := 0; i+1 < len(segs); i++ {
		if segs[i+1] <= keep {
			j = i
		}
	}
	if j < 0 {
		return nil
	}
	idx := segs[j+1] // the new first record
	// tidwall/wal deletes the dropped segment files while it holds the lock
	// that every write takes, and deleting a full segment frees its blocks,
	// a stall of every writer (BenchmarkWriteStalls: 33-37 ms). A second
	// link to each file, made first, turns that deletion into the removal of
	// a name; the blocks are freed when the trash is emptied below, with no
	// lock held. A link that fails only loses that saving.
	trash := filepath.Join(l.dir, trashDir)
	if err := os.MkdirAll(trash, 0o750); err == nil {
		for _, f := range segs[:j+1] {
			name := segmentName(f)
			if err := os.Link(filepath.Join(l.dir, name), filepath.Join(trash, name)); err != nil {
				l.log.Debug("wal: link a dropped segment into the trash", "err", err)
			}
		}
	}
	if err := l.tw.TruncateFront(idx); err != nil {
		return l.fail(fmt.Errorf("wal: truncate front to %d: %w", idx, err))
	}
	if err := syncDir(l.dir); err != nil {
		return l.fail(err)
	}
	l.mu.Lock()
	l.segFirst = slices.Clone(l.segFirst[j+1:])
	l.first = idx
	l.mu.Unlock()
	if testHookTruncated != nil {
		testHookTruncated(trash)
	}
	if err := os.RemoveAll(trash); err != nil {
		// Garbage only: the next truncation or Open tries again.
		l.log.Warn("wal: empty the trash", "dir", trash, "err", err)
	}
	return nil
}

// testHookTruncated, if set, is called by TruncateFront between the
// truncation and the emptying of the trash.
var testHookTruncated func(trash string)

// Close writes and fsyncs every queued record, stops the flusher and closes
// the log. It is idempotent; calls after it return ErrClosed.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		last := l.next - 1
		l.mu.Unlock()
		err := l.WaitDurable(last)
		close(l.stop)
		l.wg.Wait()
		if cerr := l.tw.Close(); cerr != nil && err == nil && !errors.Is(cerr, twal.ErrClosed) {
			err = fmt.Errorf("wal: close: %w", cerr)
		}
		l.mu.Lock()
		closeAll(l.retired)
		l.retired = nil
		if l.syncF != nil {
			if terr := l.trimFill(); terr != nil && err == nil {
				err = terr
			}
			l.syncF.Close()
		}
		l.mu.Unlock()
		l.closeErr = err
	})
	return l.closeErr
}

// trimFill cuts the zero fill off the tail segment of a cleanly closed log,
// so that the next Open finds no zeroed tail to repair. After a failure the
// tail's length is not known: Open repairs it.
func (l *Log) trimFill() error {
	if l.zeroed <= l.tailBytes || l.failure() != nil {
		return nil
	}
	if err := l.syncF.Truncate(int64(l.tailBytes)); err != nil {
		return fmt.Errorf("wal: close: trim zero fill: %w", err)
	}
	if err := l.opts.SyncFile(l.syncF); err != nil {
		return fmt.Errorf("wal: close: trim zero fill: %w", err)
	}
	return nil
}

var _ io.Closer = (*Log)(nil)
