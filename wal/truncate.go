package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

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
//
// When tidwall/wal cannot write that copy (for want of space, say), it
// leaves the log as it was: TruncateFront then returns the error, not
// wrapped in ErrFailed, and the Log goes on; a later call tries again. Any
// other failure fails the Log. While the writer recovers from a failed
// write, TruncateFront does nothing.
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
	idx := segs[j+1] - 1 // the new first record: segment j's last
	if idx == segs[0] {
		return nil // segment 0 is that one record already
	}
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
	l.twMu.Lock()
	if l.twBroken {
		l.twMu.Unlock()
		os.RemoveAll(trash)
		return nil
	}
	err := l.tw.TruncateFront(idx)
	if err != nil {
		err = fmt.Errorf("wal: truncate front to %d: %w", idx, err)
		if untouched(l.tw, err) {
			l.twMu.Unlock()
			l.log.Warn("wal: cannot truncate the front of the log; trying again at the next checkpoint", "err", err)
			os.RemoveAll(trash)
			return err
		}
	}
	l.twMu.Unlock()
	if err != nil {
		return l.fail(err)
	}
	if err := syncDir(l.dir); err != nil {
		return l.fail(err)
	}
	l.mu.Lock()
	l.segFirst = append([]uint64{idx}, l.segFirst[j+1:]...)
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
