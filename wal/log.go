package wal

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	twal "github.com/tidwall/wal"
)

const (
	formatFile    = "FORMAT"
	formatVersion = "kvd-wal 2\n"
	// formatV1 logs hold records without a watermark (TypeBatchV1). They are
	// read as they are, and the FORMAT file is rewritten to version 2 before
	// version-2 records join them.
	formatV1 = "kvd-wal 1\n"
	// trashDir holds second links to the segment files that a front
	// truncation drops (see TruncateFront). Whatever is in it is garbage.
	trashDir = "trash"

	defaultSegmentSize   = 8 << 20
	defaultFlushInterval = 10 * time.Millisecond
	defaultFlushBytes    = 1 << 20
	defaultPreallocate   = 1 << 20
)

// Options configure a Log. The zero value is valid.
type Options struct {
	// SegmentSize is the size at which a segment file is sealed and a new one
	// started. Default 8 MiB. tidwall/wal keeps the tail segment's entries
	// in memory, growing its buffer as records come, so this bounds the
	// log's memory too; and tidwall/wal fsyncs a segment as it seals it,
	// under the lock that writes take (see the package doc; bench/RESULTS.md
	// has the measurements behind the default).
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
	// first..first+len(vs)-1, in revision order, after they are written
	// (and fsynced, if one of them asked for it: EnqueueSync) and before
	// any of their waiters returns. vs holds the values passed to Enqueue.
	// Calls never overlap. It must not call Read, TruncateFront,
	// TruncateBack or Reset, which can wait for the write it is part of. A
	// record refused after a failed write (ErrWriteRefused) is never passed
	// to it: it tells whose record holds a revision that was refused and
	// given again.
	OnWritten func(first uint64, vs []any)
	// OnDurable, if set, is called with the new durable revision each
	// time an fsync makes records durable (Durable returns it by then),
	// with no lock of the log held. Calls may overlap and must be quick;
	// it must not wait for the log.
	OnDurable func(rev uint64)
	// SyncFile performs the fsync of a segment file. Nil means fdatasync.
	// Tests set it to inject failures.
	SyncFile func(f *os.File) error

	// onSync, if set, is called after every fsync of the log with its
	// duration and the number of records it made durable: a seam for the
	// package's own tests, which time fsyncs. Others read Stats.
	onSync func(d time.Duration, records int)
}

// Stats are counters of a Log.
type Stats struct {
	First, Written, Durable uint64        // first revision held, last written, last durable
	Fsyncs                  uint64        // fsyncs of segment files by the log
	RecordsSynced           uint64        // records made durable by those fsyncs
	MaxFsync                time.Duration // slowest fsync since Open
	FsyncSeconds            Histogram     // fsync durations since Open, in seconds
	RecordsPerFsync         Histogram     // records made durable by each of those fsyncs
	BytesWritten            int64         // bytes written since Open
	Segments                int
	Err                     error // sticky failure, if any

	// The exposure to a power loss: how long written records stay
	// unsynced, each record's age counted from its write (exposure.go).
	// In async commit mode this bounds from above the age of the acknowledged
	// writes a power loss would lose; the Log does not know which records
	// are async, so sync records, never acknowledged unsynced, count too.
	//
	// OldestUnsynced is the age now of the oldest record written but not
	// durable, 0 if there is none. It goes on growing after a failed fsync:
	// those records are not durable.
	OldestUnsynced time.Duration
	// MaxUnsyncedLastMinute is the longest a record stayed unsynced over
	// the last minute (the current second and the 59 before it): the
	// largest age a record had when an fsync completed, or has now while it
	// waits (OldestUnsynced).
	MaxUnsyncedLastMinute time.Duration
	// MaxUnsyncedSinceOpen is the same maximum since Open.
	MaxUnsyncedSinceOpen time.Duration
	// WriteFailures counts the batches whose write failed and that the log
	// cut and refused (ErrWriteRefused) without failing; RecordsRefused
	// the records refused with them. LastWriteErr is the latest such write
	// error, kept after writes succeed again.
	WriteFailures  uint64
	RecordsRefused uint64
	LastWriteErr   error
}

// Log is an open write-ahead log. Its methods are safe for concurrent use.
type Log struct {
	dir  string
	opts Options
	log  *slog.Logger
	// tw is replaced when a failed write is recovered (writeerr.go): twMu
	// keeps TruncateFront and Close off it meanwhile. twBroken is set, under
	// twMu, from a failed write until that recovery is done.
	twMu     sync.Mutex
	tw       *twal.Log
	twBroken bool

	fatal atomic.Pointer[error] // sticky failure

	// segMu serializes what reads segment files (Read) with what removes,
	// renames or replaces them (TruncateFront, TruncateBack, Reset, Close),
	// and guards reads and readBuf. It is taken before mu and smu.
	segMu   sync.Mutex
	reads   []*segIndex // Read's indexes, most recently used first
	readBuf []byte

	// Write side: guarded by mu.
	mu        sync.Mutex
	wwait     waitList // waiting for a revision to be written
	closed    bool
	next      uint64 // revision the next Enqueue gets
	dropped   uint64 // highest revision TruncateBack or Reset dropped
	written   uint64 // last revision written
	writing   bool   // a goroutine is writing queued records
	queue     []byte // framed records waiting to be written
	queueRecs []int  // end offset of each queued record in queue
	queueVals []any
	queueSync bool       // a queued record asked for an fsync (EnqueueSync)
	syncF     *os.File   // tail segment, for fdatasync
	retired   []*os.File // old tail segments, closed by the next sync leader
	unsynced  int        // bytes written since the last fsync claimed the written records
	// Write times of the oldest unsynced records (exposure.go):
	// unclaimedAt of those written since the last claim (zero if none),
	// claimedAt of those the fsync of claimedRev claimed, valid until
	// durable reaches claimedRev.
	unclaimedAt time.Time
	claimedAt   time.Time
	claimedRev  uint64
	// flushParked: the flusher sleeps without a timer, because every record
	// written was fsynced (or claimed by an fsync) when it last looked. The
	// write that ends the quiet spell wakes it, sending its time on flushWake.
	flushParked bool
	segFirst    []uint64 // first revision of each segment (mirrors tidwall/wal)
	tailBytes   int      // size of the tail segment (mirrors tidwall/wal)
	first       uint64
	bytes       int64
	// After a failed write (writeerr.go): refusals counts the recoveries, so
	// that a waiter can tell its record was refused; maxRefused is the
	// highest revision refused; unknownLo..unknownHi are the revisions
	// whose outcome is unknown once the log failed (ErrOutcomeUnknown).
	refusals             uint64
	maxRefused           uint64
	unknownLo, unknownHi uint64
	writeFailures        uint64
	recordsRefused       uint64
	lastWriteErr         error

	// Sync side: guarded by smu.
	smu     sync.Mutex
	swait   waitList // waiting for a revision to be durable
	syncing bool
	durable uint64
	// durableMark mirrors durable for Enqueue, which stamps it on each
	// record as its watermark without taking smu.
	durableMark atomic.Uint64
	// cuts counts the TruncateBack calls that dropped written records, and
	// the Resets; each sets durable to the revision it kept up to, under
	// smu. A WaitDurable(rev) that sees it change while durable < rev knows
	// the record it waited for was dropped.
	cuts         atomic.Uint64
	recovery     Recovery // what Open cut
	fsyncs       uint64
	recordsSyncd uint64
	maxFsync     time.Duration
	fsyncSeconds histogram     // fsync durations
	fsyncRecords histogram     // records made durable per fsync
	maxUnsynced  time.Duration // longest a record stayed unsynced, since Open
	unsyncedAges ageWindow     // the same, per second over the last minute

	opened time.Time // the origin of the Log's clock for unsyncedAges

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
	// lastRec is the offset in the tail segment of its last record, or 0
	// when it is not known (scan the tail from its start). pre is this
	// bookkeeping as it was before the batch being written, and failStreak
	// counts the batches refused since the last write that succeeded.
	lastRec    int
	pre        tailState
	failStreak int

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
	var (
		segs []segmentFile
		res  scanResult
		cuts []Cut
		err  error
	)
	for {
		if segs, err = listSegments(dir, from); err != nil {
			return nil, err
		}
		res, err = scanLog(dir, segs, from, replay, logger)
		cuts = append(cuts, res.cuts...)
		if !errors.Is(err, errRescan) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	if len(segs) > 0 && res.last+1 < from {
		return nil, fmt.Errorf("wal: log holds revisions %d..%d, state needs %d onwards: %w: %w",
			res.first, res.last, from, ErrShort, ErrCorrupt)
	}
	if len(segs) > 0 && res.first > from {
		return nil, fmt.Errorf("wal: log holds revisions %d..%d, state needs %d onwards: %w",
			res.first, res.last, from, ErrCorrupt)
	}
	tw, err := openTidwall(dir, opts.SegmentSize)
	if err != nil {
		return nil, err
	}
	if len(segs) == 0 {
		// tidwall/wal created segment 1.
		if err := SyncDir(dir); err != nil {
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
		dir:          dir,
		opts:         opts,
		log:          logger,
		tw:           tw,
		next:         res.last + 1,
		written:      res.last,
		durable:      res.last,
		segFirst:     res.segFirst,
		tailBytes:    int(res.tailSize),
		zeroed:       int(res.tailSize),
		first:        res.first,
		recovery:     Recovery{Cuts: cuts},
		fsyncSeconds: newHistogram(fsyncSecondsBounds),
		fsyncRecords: newHistogram(recordsPerFsyncBounds),
		flushKick:    make(chan struct{}, 1),
		flushWake:    make(chan time.Time, 1),
		stop:         make(chan struct{}),
		opened:       time.Now(),
	}
	l.durableMark.Store(res.last)
	l.flushInterval.Store(int64(opts.FlushInterval))
	if l.syncF, err = l.openTail(); err != nil {
		tw.Close()
		return nil, err
	}
	l.wg.Add(1)
	go l.flusher()
	return l, nil
}

// openTidwall opens tidwall/wal on a directory that Open (or Reset) has
// made ready for it.
func openTidwall(dir string, segmentSize int) (*twal.Log, error) {
	tw, err := twal.Open(dir, &twal.Options{
		NoSync:      true,
		SegmentSize: segmentSize,
		AllowEmpty:  true,
		DirPerms:    0o750,
		FilePerms:   0o640,
	})
	if err != nil {
		return nil, fmt.Errorf("wal: open: %w", err)
	}
	return tw, nil
}

// listSegments finishes an interrupted Reset or truncation and lists the
// segments, fsyncing each: whatever an earlier process wrote is made
// durable before it is replayed, since the caller may checkpoint replayed
// records at once.
// An empty directory opened at a later revision gets an empty segment
// starting there, as tidwall/wal would leave after truncating everything.
func listSegments(dir string, from uint64) ([]segmentFile, error) {
	if err := finishReset(dir); err != nil {
		return nil, err
	}
	segs, err := finishTruncation(dir)
	if err != nil {
		return nil, err
	}
	for _, s := range segs {
		if err := syncFile(filepath.Join(dir, s.name)); err != nil {
			return nil, err
		}
	}
	if len(segs) == 0 && from > 1 {
		name := segmentName(from)
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_RDWR, 0o640)
		if err != nil {
			return nil, fmt.Errorf("wal: create segment: %w", err)
		}
		f.Close()
		if err := SyncDir(dir); err != nil {
			return nil, err
		}
		segs = []segmentFile{{name: name, first: from}}
	}
	return segs, nil
}

func checkFormat(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("wal: create dir: %w", err)
	}
	path := filepath.Join(dir, formatFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil && string(b) == formatVersion:
		return nil
	case err == nil && string(b) == formatV1:
		return writeFormat(dir)
	case err == nil:
		return fmt.Errorf("wal: %s says %q, this build reads %q and %q: %w", path, b, formatV1, formatVersion, ErrFormat)
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
	return writeFormat(dir)
}

// writeFormat writes the FORMAT file atomically and durably.
func writeFormat(dir string) error {
	return WriteFileDurably(filepath.Join(dir, formatFile), []byte(formatVersion), 0o640)
}

func (l *Log) openTail() (*os.File, error) {
	name := segmentName(l.segFirst[len(l.segFirst)-1])
	f, err := os.OpenFile(filepath.Join(l.dir, name), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("wal: open tail segment: %w", err)
	}
	return f, nil
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
	s := Stats{First: l.first, Written: l.written, BytesWritten: l.bytes, Segments: len(l.segFirst),
		WriteFailures: l.writeFailures, RecordsRefused: l.recordsRefused, LastWriteErr: l.lastWriteErr}
	unclaimed, claimed, claimedRev := l.unclaimedAt, l.claimedAt, l.claimedRev
	l.mu.Unlock()
	l.smu.Lock()
	s.Durable, s.Fsyncs, s.RecordsSynced, s.MaxFsync = l.durable, l.fsyncs, l.recordsSyncd, l.maxFsync
	s.FsyncSeconds, s.RecordsPerFsync = l.fsyncSeconds.snapshot(), l.fsyncRecords.snapshot()
	l.exposure(&s, unclaimed, claimed, claimedRev)
	l.smu.Unlock()
	s.Err = l.failure()
	return s
}

// Recovery returns what Open cut from the log to recover it.
func (l *Log) Recovery() Recovery { return l.recovery }

// Durable returns the last durable revision.
func (l *Log) Durable() uint64 { return l.durableRev() }

// WrittenIndex returns the last revision written (Written): the highest
// revision Read finds.
func (l *Log) WrittenIndex() uint64 { return l.Written() }

// DurableIndex returns the last durable revision (Durable): every record up
// to it is on stable storage. While the writer of a batch holding a record
// that asked for an fsync (EnqueueSync) finishes, it can be ahead of
// WrittenIndex, by that batch.
func (l *Log) DurableIndex() uint64 { return l.Durable() }

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

// Close writes and fsyncs every queued record, stops the flusher and closes
// the log. Records refused meanwhile (ErrWriteRefused) are not an error of
// Close. It is idempotent; calls after it return ErrClosed.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		// No truncation, Reset or Read is under way while the log closes.
		l.segMu.Lock()
		defer l.segMu.Unlock()
		l.dropReads(math.MaxUint64)
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		err := l.Drain()
		close(l.stop)
		l.wg.Wait()
		l.twMu.Lock()
		if cerr := l.tw.Close(); cerr != nil && err == nil && !errors.Is(cerr, twal.ErrClosed) {
			err = fmt.Errorf("wal: close: %w", cerr)
		}
		l.twMu.Unlock()
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
