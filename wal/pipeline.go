package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

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
// written until some caller of WaitWritten writes it. After a failed write
// the record may be refused (ErrWriteRefused) and its revision given to a
// later record.
func (l *Log) Enqueue(payload []byte, v any) (uint64, error) {
	return l.enqueue(payload, v, false)
}

// enqueue is Enqueue, or EnqueueSync if sync is set.
func (l *Log) enqueue(payload []byte, v any, sync bool) (uint64, error) {
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
	l.queue = AppendRecord(l.queue, rev, l.durableMark.Load(), payload)
	l.queueRecs = append(l.queueRecs, len(l.queue))
	l.queueVals = append(l.queueVals, v)
	l.queueSync = l.queueSync || sync
	l.mu.Unlock()
	return rev, nil
}

// WaitWritten returns once the record of revision rev is written to its
// segment file, writing every queued record itself when no other goroutine
// is doing so. It returns ErrWriteRefused if the record was refused after a
// failed write, and after a failure of the log ErrFailed, or
// ErrOutcomeUnknown for a record that may have reached the file.
//
// A refused revision goes to the next record enqueued. A caller that waits
// for its revision only after a failed write may have been refused, and
// then waits for that other record: OnWritten, which receives the value
// given to Enqueue, tells whose record was written.
func (l *Log) WaitWritten(rev uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	refusals := l.refusals
	for l.written < rev {
		if l.refusals != refusals {
			// Every record after the last one written was refused.
			return l.refusedErr()
		}
		if rev >= l.next {
			if rev <= l.maxRefused {
				return l.refusedErr()
			}
			if rev <= l.dropped {
				return fmt.Errorf("wal: wait for revision %d: %w", rev, ErrTruncated)
			}
			return fmt.Errorf("wal: wait for revision %d, which was never enqueued", rev)
		}
		if l.writing {
			// Even after a failure: the batch being written decides
			// whether rev is written, refused or unknown.
			if l.wwait.wait(rev, &l.mu) {
				return fmt.Errorf("wal: wait for revision %d: %w", rev, ErrTruncated)
			}
			continue
		}
		if err := l.failure(); err != nil {
			return l.unwrittenErr(rev, err)
		}
		l.writeQueued(rev)
	}
	return nil
}

// writeQueued writes queued records in batches until the record of rev is
// written, then hands the lead to a waiter if records remain queued: a
// leader is not kept writing for others forever. Called with mu held and
// writing false; returns with mu held.
func (l *Log) writeQueued(rev uint64) {
	l.writing = true
	for l.written < rev && len(l.queueRecs) > 0 && l.failure() == nil {
		buf, ends, vals, synced := l.queue, l.queueRecs, l.queueVals, l.queueSync
		l.queue, l.queueRecs, l.queueVals, l.queueSync = l.spare[:0], l.spareR[:0], l.spareV[:0], false
		first := l.written + 1
		l.mu.Unlock()

		newSegs, err := l.writeBatch(first, buf, ends)
		if err == nil && len(newSegs) > 0 {
			err = l.sealedSegments(newSegs)
		}
		if err == nil && synced {
			// A record asked for an fsync before it counts as written.
			err = l.syncBatch(first + uint64(len(ends)) - 1)
		}
		if err == nil && l.opts.OnWritten != nil {
			l.opts.OnWritten(first, vals)
		}
		clear(vals)
		if err != nil {
			// Refuses the batch, or fails the log; takes mu itself.
			l.batchFailed(first, first+uint64(len(ends))-1, err)
			l.mu.Lock()
			l.spare, l.spareR, l.spareV = buf, ends, vals
			break
		}
		l.mu.Lock()
		l.written = first + uint64(len(ends)) - 1
		l.bytes += int64(len(buf))
		if !synced {
			l.unsynced += len(buf)
			if l.unclaimedAt.IsZero() {
				// The oldest record no fsync has claimed: the flusher's
				// schedule and the exposure figures start from it.
				l.unclaimedAt = time.Now()
			}
			if l.flushParked {
				// Parked, the flusher saw no unclaimed record: unclaimedAt
				// was just set. (A batch its writer fsynced leaves nothing
				// for the flusher: it stays parked.)
				l.flushParked = false
				select {
				case l.flushWake <- l.unclaimedAt:
				default:
				}
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
	l.pre = tailState{tailBytes: l.tailBytes, zeroed: l.zeroed, noPrealloc: l.noPrealloc, lastRec: l.lastRec}
	// Mirror tidwall/wal's segment cycling (Log.writeBatch in wal.go): a
	// full tail is cycled before the batch, and after any entry that fills it.
	if l.tailBytes > l.opts.SegmentSize {
		newSegs = append(newSegs, first)
		l.tailBytes = 0
	}
	start, lastRec := 0, l.lastRec
	for i, end := range ends {
		rec := buf[start:end]
		l.batch.Write(first+uint64(i), rec)
		lastRec = l.tailBytes
		l.tailBytes += uvarintLen(uint64(len(rec))) + len(rec)
		if l.tailBytes >= l.opts.SegmentSize {
			newSegs = append(newSegs, first+uint64(i)+1)
			l.tailBytes, lastRec = 0, 0
		}
		start = end
	}
	if len(newSegs) == 0 {
		l.preallocate()
	}
	if err := l.writeTW(); err != nil {
		return nil, err
	}
	l.zeroed = max(l.zeroed, l.tailBytes)
	l.lastRec = lastRec
	l.wroteAgain()
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
// fsyncs a segment itself when it seals it, and keeps the entries of the
// segment it sealed in its cache, for its Read: the Log drops them.
func (l *Log) sealedSegments(firsts []uint64) error {
	if err := SyncDir(l.dir); err != nil {
		return err
	}
	if err := l.tw.ClearCache(); err != nil {
		return fmt.Errorf("wal: clear cache: %w", err)
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
// written so far while the others wait for it. Its errors are
// WaitWritten's, and ErrOutcomeUnknown when the log fails after rev was
// written and before it was known durable.
func (l *Log) WaitDurable(rev uint64) error {
	cuts := l.cuts.Load()
	if err := l.WaitWritten(rev); err != nil {
		return err
	}
	l.smu.Lock()
	defer l.smu.Unlock()
	for l.durable < rev {
		if err := l.failure(); err != nil {
			return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
		}
		if l.cuts.Load() != cuts {
			// A cut left durable below rev: the record written at rev was
			// dropped (see Log.cuts).
			return fmt.Errorf("wal: wait for revision %d to be durable: %w", rev, ErrTruncated)
		}
		if l.syncing {
			if l.swait.wait(rev, &l.smu) {
				return fmt.Errorf("wal: wait for revision %d to be durable: %w", rev, ErrTruncated)
			}
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
			return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
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
	target := l.written
	f, retired, oldest := l.claimUnsynced(target)
	l.mu.Unlock()

	l.smu.Lock()
	durable := l.durable
	l.smu.Unlock()
	if target <= durable {
		closeAll(retired)
		return nil
	}
	return l.fsyncClaimed(f, retired, target, durable, oldest)
}

// claimUnsynced takes for an fsync every record written so far, through revision
// target (the writer of a flagged batch claims its own batch too, before it
// counts as written): the tail's descriptor, the retired tails to close
// afterwards, and the write time of the oldest record that no fsync had
// claimed yet (exposure.go), which is the oldest unsynced record until this
// fsync completes. Called by the sync leader with mu held.
func (l *Log) claimUnsynced(target uint64) (f *os.File, retired []*os.File, oldest time.Time) {
	f, retired, l.retired = l.syncF, l.retired, nil
	l.unsynced = 0
	oldest = l.unclaimedAt
	l.claimedAt, l.claimedRev, l.unclaimedAt = oldest, target, time.Time{}
	return f, retired, oldest
}

// fsyncClaimed fsyncs f for the records up to target that claimUnsynced took, the
// log being durable up to durable, and keeps the books: durable, the
// fsync counters and histograms and the exposure figures. A failure is the
// log's. Called by the sync leader with no lock held.
func (l *Log) fsyncClaimed(f *os.File, retired []*os.File, target, durable uint64, oldest time.Time) error {
	start := time.Now()
	err := l.opts.SyncFile(f)
	end := time.Now()
	took := end.Sub(start)
	closeAll(retired)
	if err != nil {
		return l.fail(fmt.Errorf("wal: fsync %s: %w", f.Name(), err))
	}
	l.smu.Lock()
	l.durable = target
	l.durableMark.Store(target)
	l.countFsync(took, int(target-durable))
	l.observeDurable(end, oldest)
	l.smu.Unlock()
	if l.opts.onSync != nil {
		l.opts.onSync(took, int(target-durable))
	}
	if l.opts.OnDurable != nil {
		l.opts.OnDurable(target)
	}
	return nil
}

// countFsync counts an fsync that took took and made records records
// durable. Called with smu held.
func (l *Log) countFsync(took time.Duration, records int) {
	l.fsyncs++
	l.recordsSyncd += uint64(records)
	l.maxFsync = max(l.maxFsync, took)
	l.fsyncSeconds.observeDuration(took)
	l.fsyncRecords.observe(float64(records))
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// Sync is a durability barrier: it returns once every record written before
// the call is durable. Records still queued are not waited for: none of
// them has been acknowledged.
func (l *Log) Sync() error {
	l.mu.Lock()
	rev := l.written
	l.mu.Unlock()
	return l.WaitDurable(rev)
}

// Drain returns once every record enqueued before the call is written and
// durable, or refused (ErrWriteRefused is not an error of Drain).
func (l *Log) Drain() error {
	for {
		l.mu.Lock()
		last := l.next - 1
		l.mu.Unlock()
		err := l.WaitDurable(last)
		if !errors.Is(err, ErrWriteRefused) {
			return err
		}
	}
}
