package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// A failed write(2) is not a failed fsync: nothing that was acknowledged
// depends on it, and the file still holds everything written before it.
// The Log therefore recovers from it instead of failing:
//
//  1. tidwall/wal is closed. After a failed write its in-memory state no
//     longer matches the file (its tail buffer holds the entries, its last
//     index does not), so it is never written to again. Its Close fsyncs
//     the tail segment: if that fsync fails the Log fails, as for any
//     failed fsync.
//  2. The tail segment is cut back to the end of its last record written
//     before the batch (read back from the file to check that a record of
//     that revision ends there), and any segment file that a cycle created
//     during the batch is removed. Records of the batch that reached the
//     file whole are cut too: a batch is refused as a whole, so that a
//     writer never learns its record was written when the batch's other
//     records were not, and the rule for a waiter stays one comparison.
//  3. The cut is fsynced (the tail through the Log's own descriptor, and
//     the directory). That fsync also makes durable every record written
//     before the batch, which async writers were told of already: it is
//     the first fsync of those records, not a retry of a failed one.
//  4. tidwall/wal is opened again, and the Log's tail bookkeeping is reset
//     to what it was before the batch; the zero fill ahead of the tail went
//     with the cut and is not tried again in this segment.
//  5. Every record of the batch and every record queued behind it is
//     refused (ErrWriteRefused): the revisions after the last record
//     written go to the next records enqueued, so revisions stay gapless.
//
// The next write tries the disk again: once space is freed, writes succeed
// with no restart. If any step fails, the Log fails; the records of the
// batch then have an unknown outcome (ErrOutcomeUnknown) unless the cut was
// already durable.

// tailState is the writer's bookkeeping of the tail segment.
type tailState struct {
	tailBytes, zeroed int
	noPrealloc        bool
	lastRec           int
}

// writeTW hands the batch to tidwall/wal. After a failed write tidwall/wal
// is marked broken, so that TruncateFront leaves it alone until the writer
// has recovered it.
func (l *Log) writeTW() error {
	l.twMu.Lock()
	defer l.twMu.Unlock()
	if testHookWrite != nil {
		testHookWrite(l)
	}
	if err := l.tw.WriteBatch(&l.batch); err != nil {
		l.batch.Clear()
		l.twBroken = true
		return fmt.Errorf("wal: write: %w", err)
	}
	return nil
}

// testHookWrite, if set, is called before each batch is handed to
// tidwall/wal, with twMu held.
var testHookWrite func(l *Log)

// recoverable reports whether err, from tidwall/wal's WriteBatch, is a
// write error the Log can recover from: a failed write(2), or a segment
// file that a cycle could not create (after it fsynced and closed the
// previous one). A failed fsync or close, or anything else, is not.
func recoverable(err error) bool {
	var pe *os.PathError
	return errors.As(err, &pe) && (pe.Op == "write" || pe.Op == "open")
}

// batchFailed ends the batch of revisions first..last after err, from
// writeBatch or sealedSegments: the batch is refused if the write error
// could be recovered from, and the log fails otherwise. Called by the
// writer with mu not held.
func (l *Log) batchFailed(first, last uint64, err error) {
	l.twMu.Lock()
	broken := l.twBroken
	l.twMu.Unlock()
	if !broken || !recoverable(err) {
		// The batch may be in the file (sealedSegments failed after it was
		// written, or tidwall/wal failed to fsync a segment it sealed).
		l.failBatch(err, first, last)
		return
	}
	cutDurable, rerr := l.recoverWrite(first, err)
	if rerr != nil {
		if cutDurable {
			l.fail(rerr) // the batch is not on disk: refused by the failure
		} else {
			l.failBatch(rerr, first, last)
		}
		return
	}
	l.refuse(first, last, err)
}

// failBatch fails the log with the records first..last of unknown outcome.
func (l *Log) failBatch(err error, first, last uint64) {
	l.mu.Lock()
	if l.unknownLo == 0 {
		l.unknownLo, l.unknownHi = first, last
	}
	l.mu.Unlock()
	l.fail(err)
}

// unwrittenErr is the error of a record of revision rev that was not
// written when the log failed with err. Called with mu held.
func (l *Log) unwrittenErr(rev uint64, err error) error {
	if l.unknownLo != 0 && l.unknownLo <= rev && rev <= l.unknownHi {
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	}
	return err
}

// refusedErr is the error of a refused record. Called with mu held.
func (l *Log) refusedErr() error {
	return fmt.Errorf("%w: %w", ErrWriteRefused, l.lastWriteErr)
}

// refuse refuses the batch first..last, cut by recoverWrite, and every
// record queued behind it: their revisions go to the next records.
func (l *Log) refuse(first, last uint64, cause error) {
	l.mu.Lock()
	n := l.next - first
	l.maxRefused = max(l.maxRefused, l.next-1)
	l.next = first
	l.refusals++
	l.writeFailures++
	l.recordsRefused += n
	l.lastWriteErr = cause
	clear(l.queueVals)
	l.queue, l.queueRecs, l.queueVals = l.queue[:0], l.queueRecs[:0], l.queueVals[:0]
	l.wwait.wakeAll()
	l.mu.Unlock()

	l.failStreak++
	args := []any{"segment", filepath.Base(l.syncF.Name()), "offset", l.tailBytes,
		"first", first, "last", last, "refused", n, "err", cause}
	if l.failStreak == 1 {
		l.log.Warn("wal: write failed; the batch was cut from the log and its records refused, "+
			"the log takes writes again", args...)
	} else {
		l.log.Debug("wal: write failed again; batch refused", append(args, "failures", l.failStreak)...)
	}
}

// wroteAgain notes a successful write after refused ones. Called by the
// writer.
func (l *Log) wroteAgain() {
	if l.failStreak > 0 {
		l.log.Info("wal: writes succeed again", "refused_batches", l.failStreak)
		l.failStreak = 0
	}
}

// recoverWrite brings the log back to its state before the batch starting
// at revision first, whose write failed with cause (steps 1 to 4 above).
// cutDurable reports whether the cut reached stable storage, so that no
// record of the batch can be found in the log any more. Called by the
// writer with mu not held.
func (l *Log) recoverWrite(first uint64, cause error) (cutDurable bool, err error) {
	l.twMu.Lock()
	defer l.twMu.Unlock()

	// 1. tidwall/wal's Close fsyncs the tail it writes to; after a cycle
	// that could not create its next segment, that file is nil or closed,
	// which is not an fsync failure.
	if cerr := l.tw.Close(); cerr != nil && !errors.Is(cerr, os.ErrInvalid) && !errors.Is(cerr, os.ErrClosed) {
		return false, fmt.Errorf("wal: close tidwall/wal after a failed write: %w", cerr)
	}

	l.mu.Lock()
	written, tailFirst := l.written, l.segFirst[len(l.segFirst)-1]
	l.mu.Unlock()
	pre := l.pre
	if first != written+1 {
		return false, fmt.Errorf("wal: recover a failed write: batch starts at %d, %d written", first, written)
	}

	// 2. Check the cut point against the file, then cut.
	lastRec, err := l.checkTail(tailFirst, written, pre)
	if err != nil {
		return false, err
	}
	if err := l.syncF.Truncate(int64(pre.tailBytes)); err != nil {
		return false, fmt.Errorf("wal: cut a failed write: %w", err)
	}
	removed, err := removeSegmentsAfter(l.dir, tailFirst)
	if err != nil {
		return false, err
	}

	// 3. fsync the cut, as the sync leader.
	if err := l.syncCut(written); err != nil {
		return false, err
	}
	cutDurable = true

	// 4. Reopen tidwall/wal on what is left.
	tw, err := openTidwall(l.dir, l.opts.SegmentSize)
	if err != nil {
		return true, err
	}
	if last, err := tw.LastIndex(); err != nil || last != written {
		tw.Close()
		return true, fmt.Errorf("wal: reopen after a failed write: tidwall/wal sees last index %d, want %d (%v): %w",
			last, written, err, ErrCorrupt)
	}
	l.tw, l.twBroken = tw, false
	l.tailBytes, l.zeroed, l.lastRec = pre.tailBytes, pre.tailBytes, lastRec
	// The zero fill would find no more room now than the write did; the
	// next segment gets one again.
	l.noPrealloc = true
	l.mu.Lock()
	l.nothingUnsynced() // syncCut made every record left durable
	l.mu.Unlock()
	if len(removed) > 0 {
		l.log.Info("wal: removed segment files created by the failed write", "segments", removed)
	}
	return true, nil
}

// checkTail reads the tail segment back and checks that the record of
// revision written ends exactly at pre.tailBytes (the tail then holds
// records tailFirst..written), starting from the last record known
// written, or from the start of the segment. It returns where that last
// record starts.
func (l *Log) checkTail(tailFirst, written uint64, pre tailState) (int, error) {
	end := pre.tailBytes
	if end == 0 {
		if written+1 != tailFirst {
			return 0, fmt.Errorf("wal: recover a failed write: empty tail segment %s starts at %d, %d written: %w",
				segmentName(tailFirst), tailFirst, written, ErrCorrupt)
		}
		return 0, nil
	}
	from, rev := pre.lastRec, written
	if from == 0 {
		rev = tailFirst
	}
	if from >= end {
		from, rev = 0, tailFirst
	}
	buf := make([]byte, end-from)
	if _, err := l.syncF.ReadAt(buf, int64(from)); err != nil {
		return 0, fmt.Errorf("wal: recover a failed write: read back %s: %w", segmentName(tailFirst), err)
	}
	off, last := 0, from
	for off < len(buf) {
		_, n, reason := nextEntry(buf[off:], rev)
		if reason != "" {
			return 0, &CorruptError{Segment: segmentName(tailFirst), Offset: int64(from + off),
				Reason: "recovering a failed write, the last record written is not where the log put it: " + reason}
		}
		last = from + off
		off += n
		rev++
	}
	if rev != written+1 {
		return 0, &CorruptError{Segment: segmentName(tailFirst), Offset: int64(end),
			Reason: fmt.Sprintf("recovering a failed write, the tail ends at revision %d, want %d", rev-1, written)}
	}
	return last, nil
}

// removeSegmentsAfter removes the segment files of dir that start after
// revision tail: files a cycle created during a failed batch.
func removeSegmentsAfter(dir string, tail uint64) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("wal: recover a failed write: %w", err)
	}
	var removed []string
	for _, e := range ents {
		name := e.Name()
		if len(name) != segmentNameLen {
			continue
		}
		first, err := strconv.ParseUint(name, 10, 64)
		if err != nil || first <= tail {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			return removed, fmt.Errorf("wal: recover a failed write: %w", err)
		}
		removed = append(removed, name)
	}
	return removed, nil
}

// syncCut fsyncs the tail segment and the directory after a cut, as the
// sync leader, and makes every record up to written durable. If the fsync
// fails the log fails before another leader can fsync.
func (l *Log) syncCut(written uint64) error {
	l.smu.Lock()
	for l.syncing {
		l.swait.wait(0, &l.smu)
	}
	l.syncing = true
	durable := l.durable
	l.smu.Unlock()

	start := time.Now()
	err := l.opts.SyncFile(l.syncF)
	if err != nil {
		err = fmt.Errorf("wal: fsync %s after cutting a failed write: %w", l.syncF.Name(), err)
	} else {
		err = SyncDir(l.dir)
	}
	took := time.Since(start)
	if err != nil {
		l.fail(err)
	}

	l.smu.Lock()
	l.syncing = false
	synced := 0
	if err == nil && written > l.durable {
		synced = int(written - durable)
		l.durable = written
		l.durableMark.Store(written)
		l.countFsync(took, synced)
	}
	l.swait.wakeUpTo(l.durable)
	l.swait.wakeOne()
	l.smu.Unlock()
	if synced > 0 && l.opts.onSync != nil {
		l.opts.onSync(took, synced)
	}
	if synced > 0 && l.opts.OnDurable != nil {
		l.opts.OnDurable(written)
	}
	return err
}
