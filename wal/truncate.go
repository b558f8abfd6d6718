package wal

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	twal "github.com/tidwall/wal"
)

// TruncateFront drops records below keep, by whole segments: when segments
// 0..j hold only records below keep, it truncates tidwall/wal at the last
// record of segment j. tidwall/wal copies the records of the segment that
// holds the truncation point, from that point on, into a new segment file
// (fsynced, under the lock that writes take) before it deletes the older
// files; at a segment's last record that copy is one record, where at the
// next segment's first record it would be the whole next segment. The log
// then starts with a one-record segment (that record is below keep, which
// the caller allows). It is a no-op when no whole segment is below keep.
// Reads wait while it changes the files; Read then returns ErrCompacted
// below the new FirstIndex.
//
// When tidwall/wal cannot write that copy (for want of space, say), it
// leaves the log as it was: TruncateFront then returns the error, not
// wrapped in ErrFailed, and the Log goes on; a later call tries again. Any
// other failure fails the Log. While the writer recovers from a failed
// write, TruncateFront does nothing.
func (l *Log) TruncateFront(keep uint64) error {
	trash, err := l.truncateFront(keep)
	if err != nil || trash == "" {
		return err
	}
	// Emptying the trash frees blocks: neither writes nor reads wait for it.
	if testHookTruncated != nil {
		testHookTruncated(trash)
	}
	if err := os.RemoveAll(trash); err != nil {
		// Garbage only: the next truncation or Open tries again.
		l.log.Warn("wal: empty the trash", "dir", trash, "err", err)
	}
	return nil
}

// truncateFront is TruncateFront up to the trash, which it returns ("" when
// it dropped nothing). It holds segMu, so that no Read uses a file it drops.
func (l *Log) truncateFront(keep uint64) (string, error) {
	l.segMu.Lock()
	defer l.segMu.Unlock()
	if err := l.failure(); err != nil {
		return "", err
	}
	l.mu.Lock()
	segs, closed := l.segFirst, l.closed
	l.mu.Unlock()
	if closed {
		return "", ErrClosed
	}
	j := -1 // last segment (not the tail) whose records are all below keep
	for i := 0; i+1 < len(segs); i++ {
		if segs[i+1] <= keep {
			j = i
		}
	}
	if j < 0 {
		return "", nil
	}
	idx := segs[j+1] - 1 // the new first record: segment j's last
	if idx == segs[0] {
		return "", nil // segment 0 is that one record already
	}
	// tidwall/wal deletes the dropped segment files while it holds the lock
	// that every write takes, and deleting a full segment frees its blocks,
	// a stall of every writer (BenchmarkWriteStalls: 33-37 ms). A second
	// link to each file, made first, turns that deletion into the removal of
	// a name; the blocks are freed when the trash is emptied, with no lock
	// held. A link that fails only loses that saving.
	trash := filepath.Join(l.dir, trashDir)
	if err := os.MkdirAll(trash, 0o750); err == nil {
		for _, f := range segs[:j+1] {
			name := segmentName(f)
			if err := os.Link(filepath.Join(l.dir, name), filepath.Join(trash, name)); err != nil {
				l.log.Debug("wal: link a dropped segment into the trash", "err", err)
			}
		}
	}
	l.twMu.Lock()
	if l.twBroken {
		// The writer is recovering from a failed write: try again later.
		l.twMu.Unlock()
		os.RemoveAll(trash)
		return "", nil
	}
	err := l.tw.TruncateFront(idx)
	if err != nil {
		err = fmt.Errorf("wal: truncate front to %d: %w", idx, err)
		if untouched(l.tw, err) {
			l.twMu.Unlock()
			l.log.Warn("wal: cannot truncate the front of the log; trying again at the next checkpoint", "err", err)
			os.RemoveAll(trash)
			return "", err
		}
	}
	l.twMu.Unlock()
	if err != nil {
		return "", l.fail(err)
	}
	if err := SyncDir(l.dir); err != nil {
		return "", l.fail(err)
	}
	l.mu.Lock()
	l.segFirst = append([]uint64{idx}, l.segFirst[j+1:]...)
	l.first = idx
	l.mu.Unlock()
	l.dropReads(idx + 1) // segment idx is a new file too
	return trash, nil
}

// untouched reports whether tidwall/wal's TruncateFront failed with err
// before it changed anything. tidwall/wal first writes the copy of the
// records it keeps to a temporary file and renames it into place; from then
// on it marks itself corrupt on any error, so FirstIndex fails. Before,
// the temporary file is removed and nothing else changed. A failed fsync of
// that copy still counts as a failure.
func untouched(tw *twal.Log, err error) bool {
	var pe *os.PathError
	if errors.As(err, &pe) && pe.Op == "sync" {
		return false
	}
	_, ferr := tw.FirstIndex()
	return ferr == nil
}

// testHookTruncated, if set, is called by TruncateFront between the
// truncation and the emptying of the trash.
var testHookTruncated func(trash string)

// TruncateBack drops every record above revision n, written or queued, so
// that the log ends at n and the next Enqueue gets n+1 (how a Raft follower
// drops a conflicting suffix). It is durable when it returns: a crash then
// leaves no record above n. Waiters for the dropped records get
// ErrTruncated, and so does a WaitWritten or WaitDurable called after its
// record was dropped, unless its revision was enqueued again meanwhile: it
// then waits for the new record, which it cannot tell from its own (Raft
// truncates and appends from one goroutine). The log does not know what its
// caller applied: the caller must not truncate records it has applied. n
// below FirstIndex-1 is refused with ErrCompacted; n = FirstIndex-1 empties
// the log. It waits for the write and fsync in progress, and writes, fsyncs
// and reads wait for it; a failure is the log's.
//
// tidwall/wal's TruncateBack writes the records of the segment holding n, up
// to n, to an .END file (fsynced, renamed from a temporary name), deletes
// that segment and every later one, and renames the .END file into the
// segment's place; Open completes those steps after a crash
// (finishTruncation), so a crash leaves either the old log or the truncated
// one. tidwall/wal fsyncs no directory, between its steps or after them: a
// crash leaves its steps in order on a file system that journals directory
// changes in order (ext4, xfs), and TruncateBack fsyncs the directory once
// they are done, which makes them durable. Every record up to n is then
// durable (the .END file was fsynced, earlier segments were when sealed),
// and DurableIndex is n.
func (l *Log) TruncateBack(n uint64) error {
	l.segMu.Lock()
	defer l.segMu.Unlock()
	if err := l.claim(); err != nil {
		return err
	}
	defer l.release()
	l.mu.Lock()
	first, written, next := l.first, l.written, l.next
	l.mu.Unlock()
	switch {
	case n < first-1:
		return fmt.Errorf("wal: truncate back to %d: the log starts at %d: %w", n, first, ErrCompacted)
	case n >= next-1:
		return nil
	case n >= written:
		// Only queued records go.
		l.mu.Lock()
		if k := int(n - written); k == 0 {
			l.dropQueue()
		} else {
			l.queue = l.queue[:l.queueRecs[k-1]]
			l.queueRecs = l.queueRecs[:k]
			clear(l.queueVals[k:])
			l.queueVals = l.queueVals[:k]
			// queueSync stays, though the records that set it may be
			// gone: an fsync more at worst.
		}
		l.dropped = max(l.dropped, l.next-1)
		l.next = n + 1
		l.wwait.drop(n)
		l.mu.Unlock()
		return nil
	}
	if last, err := l.tw.LastIndex(); err != nil || last != written {
		return l.fail(fmt.Errorf("wal: truncate back: tidwall/wal ends at %d (%v), the log at %d", last, err, written))
	}
	if err := l.tw.TruncateBack(n); err != nil {
		return l.fail(fmt.Errorf("wal: truncate back to %d: %w", n, err))
	}
	if err := SyncDir(l.dir); err != nil {
		return l.fail(err)
	}
	l.dropReads(math.MaxUint64)

	l.mu.Lock()
	// tidwall/wal kept the segments up to the one holding n (the first, if
	// n is below it) and rewrote that one, which is now the tail: it holds
	// records only, no zero fill.
	k := max(sort.Search(len(l.segFirst), func(i int) bool { return l.segFirst[i] > n })-1, 0)
	l.segFirst = slices.Clone(l.segFirst[:k+1])
	err := l.newTail()
	l.dropped = max(l.dropped, l.next-1)
	l.written, l.next = n, n+1
	l.dropQueue()
	l.nothingUnsynced()
	l.wwait.drop(n)
	l.mu.Unlock()
	if err != nil {
		return l.fail(err)
	}
	l.smu.Lock()
	l.durable = n
	l.durableMark.Store(n)
	l.cuts.Add(1)
	l.swait.drop(n)
	l.smu.Unlock()
	return nil
}

// newTail points the log's tail bookkeeping at the tail segment after
// TruncateBack or Reset replaced it. Called with mu held and the writing
// and sync leads claimed, so that nobody uses the old descriptors.
func (l *Log) newTail() error {
	f, err := l.openTail()
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("wal: open tail segment: %w", err)
	}
	closeAll(l.retired)
	l.retired = nil
	l.syncF.Close()
	l.syncF = f
	l.tailBytes = int(fi.Size())
	l.zeroed, l.noPrealloc = l.tailBytes, false
	l.unsynced = 0
	return nil
}

// dropQueue drops every queued record. Called with mu held.
// nothingUnsynced clears the books of unsynced records (the flusher's and
// the exposure figures') once every record left is durable, as after a
// truncation or a Reset. Called with mu held.
func (l *Log) nothingUnsynced() {
	l.unsynced = 0
	l.unclaimedAt, l.claimedAt = time.Time{}, time.Time{}
}

func (l *Log) dropQueue() {
	l.queue, l.queueRecs = l.queue[:0], l.queueRecs[:0]
	clear(l.queueVals)
	l.queueVals = l.queueVals[:0]
	l.queueSync = false
}

// claim makes the caller the log's only writer and fsyncer, so that it may
// change the segment files and the books of both: it waits for the
// goroutine writing queued records (the writing flag) and for the fsync in
// progress (syncing) to finish, in that order, as the writer of a flagged
// batch does, and takes both. Called with segMu held, which keeps Close out;
// release gives them back and wakes every waiter to look again.
func (l *Log) claim() error {
	l.mu.Lock()
	for l.writing {
		l.wwait.wait(0, &l.mu) // revision 0: woken after every batch
	}
	err := l.failure()
	if err == nil && l.closed {
		err = ErrClosed
	}
	if err != nil {
		l.mu.Unlock()
		return err
	}
	l.writing = true
	l.mu.Unlock()
	l.smu.Lock()
	for l.syncing {
		l.swait.wait(0, &l.smu) // revision 0: woken when that fsync ends
	}
	l.syncing = true
	l.smu.Unlock()
	if err := l.failure(); err != nil {
		l.release()
		return err
	}
	return nil
}

// release undoes claim.
func (l *Log) release() {
	l.smu.Lock()
	l.syncing = false
	l.swait.wakeAll()
	l.smu.Unlock()
	l.mu.Lock()
	l.writing = false
	l.wwait.wakeAll()
	l.mu.Unlock()
}
