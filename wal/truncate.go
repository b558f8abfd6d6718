package wal

import (
	"fmt"
	"os"
	"path/filepath"
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
	if err := l.tw.TruncateFront(idx); err != nil {
		return "", l.fail(fmt.Errorf("wal: truncate front to %d: %w", idx, err))
	}
	if err := syncDir(l.dir); err != nil {
		return "", l.fail(err)
	}
	l.mu.Lock()
	l.segFirst = append([]uint64{idx}, l.segFirst[j+1:]...)
	l.first = idx
	l.mu.Unlock()
	l.dropReads(idx + 1) // segment idx is a new file too
	return trash, nil
}

// testHookTruncated, if set, is called by TruncateFront between the
// truncation and the emptying of the trash.
var testHookTruncated func(trash string)
