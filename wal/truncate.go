package wal

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

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
