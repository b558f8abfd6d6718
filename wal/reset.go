package wal

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	twal "github.com/tidwall/wal"
)

// resetFile, while it exists, says that a Reset has begun: it holds the
// revision the log restarts at, and Open finishes the Reset (finishReset).
const resetFile = "RESET"

// Reset makes the log empty, starting at revision start (any revision from
// 1, above or below the current ones), durably: the next Enqueue gets
// start, FirstIndex is start, WrittenIndex and DurableIndex are start-1.
// It is what a Raft follower does once it has installed a snapshot that
// covers revisions below start. Every record goes, queued or written:
// waiters for them get ErrTruncated, and so does a WaitWritten or
// WaitDurable called later for a revision at or above start (TruncateBack
// says when not); one called later for a revision below start returns nil,
// since revisions below start count as written and durable. Reopen the log
// with Open(dir, start, ...). Reset waits for the write and fsync in
// progress, and writes, fsyncs and reads wait for it; a failure is the
// log's, and Open then finishes the Reset if it had begun.
//
// A crash leaves either the old log or the new empty one. Reset closes
// tidwall/wal, then writes the RESET file (written and fsynced under a
// temporary name, renamed, the directory fsynced): before that rename the
// directory holds the old log; after it, Open finishes the Reset whatever
// else it finds (finishReset: it removes every segment, creates the empty
// one and removes RESET, in the order Reset does). Reset then removes the
// old segments (each with a second link in the trash first, so that their
// blocks are freed later, with no lock held), creates the empty segment
// named for start, fsyncs the directory, removes RESET, fsyncs the
// directory again, and reopens tidwall/wal on the new segment.
func (l *Log) Reset(start uint64) error {
	if start == 0 {
		return errors.New("wal: reset to revision 0: revisions start at 1")
	}
	trash, err := l.reset(start)
	if trash != "" {
		if err := os.RemoveAll(trash); err != nil {
			// Garbage only: the next truncation or Open tries again.
			l.log.Warn("wal: empty the trash", "dir", trash, "err", err)
		}
	}
	return err
}

// reset is Reset up to the trash, which it returns. It holds segMu and
// claims the writing and sync leads.
func (l *Log) reset(start uint64) (string, error) {
	l.segMu.Lock()
	defer l.segMu.Unlock()
	if err := l.claim(); err != nil {
		return "", err
	}
	defer l.release()
	if err := l.tw.Close(); err != nil && !errors.Is(err, twal.ErrClosed) {
		return "", l.fail(fmt.Errorf("wal: reset: close tidwall/wal: %w", err))
	}
	// From here on, a failure leaves tidwall/wal closed: it is the log's.
	l.dropReads(math.MaxUint64)
	if err := writeResetFile(l.dir, start); err != nil {
		return "", l.fail(err)
	}
	hookReset("marked")
	trash := filepath.Join(l.dir, trashDir)
	if err := replaceSegments(l.dir, start, trash); err != nil {
		return trash, l.fail(err)
	}
	tw, err := openTidwall(l.dir, l.opts.SegmentSize)
	if err != nil {
		return trash, l.fail(err)
	}
	l.tw = tw
	if first, err := tw.FirstIndex(); err != nil || first != start {
		return trash, l.fail(fmt.Errorf("wal: reset to %d: tidwall/wal starts at %d (%v)", start, first, err))
	}

	l.mu.Lock()
	l.segFirst = []uint64{start}
	l.first = start
	err = l.newTail()
	l.dropped = max(l.dropped, l.next-1)
	l.written, l.next = start-1, start
	l.dropQueue()
	l.nothingUnsynced()
	l.wwait.drop(0)
	l.mu.Unlock()
	if err != nil {
		return trash, l.fail(err)
	}
	l.smu.Lock()
	l.durable = start - 1
	l.durableMark.Store(start - 1)
	l.cuts.Add(1)
	l.swait.drop(0)
	l.smu.Unlock()
	return trash, nil
}

// writeResetFile writes the RESET file durably, atomically: the Reset's
// point of no return.
func writeResetFile(dir string, start uint64) error {
	path := filepath.Join(dir, resetFile)
	tmp := path + ".TEMP" // removed by Open (finishTruncation) if left behind
	if err := os.WriteFile(tmp, []byte(strconv.FormatUint(start, 10)+"\n"), 0o640); err != nil {
		return fmt.Errorf("wal: reset: %w", err)
	}
	if err := syncFile(tmp); err != nil {
		return err
	}
	hookReset("temp")
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("wal: reset: %w", err)
	}
	return SyncDir(dir)
}

// replaceSegments carries out a Reset to start whose RESET file is in dir:
// it removes every segment file, creates an empty segment named for start,
// fsyncs the directory, then removes the RESET file and fsyncs the
// directory again. If trash is set, each removed segment gets a second link
// there first.
func replaceSegments(dir string, start uint64, trash string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("wal: reset: %w", err)
	}
	if trash != "" {
		if err := os.MkdirAll(trash, 0o750); err != nil {
			trash = "" // the blocks are freed now, that is all
		}
	}
	removed := 0
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !isSegmentFile(name) {
			continue
		}
		path := filepath.Join(dir, name)
		if trash != "" {
			_ = os.Link(path, filepath.Join(trash, name)) // best effort, as in TruncateFront
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("wal: reset: %w", err)
		}
		if removed++; removed == 1 {
			hookReset("removing")
		}
	}
	f, err := os.OpenFile(filepath.Join(dir, segmentName(start)), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("wal: reset: create segment: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("wal: reset: create segment: %w", err)
	}
	if err := SyncDir(dir); err != nil {
		return err
	}
	hookReset("created")
	if err := os.Remove(filepath.Join(dir, resetFile)); err != nil {
		return fmt.Errorf("wal: reset: %w", err)
	}
	if err := SyncDir(dir); err != nil {
		return err
	}
	hookReset("done")
	return nil
}

// isSegmentFile reports whether name is one that tidwall/wal takes for a
// segment: a segment, or the .START or .END file of a truncation.
func isSegmentFile(name string) bool {
	if len(name) < segmentNameLen {
		return false
	}
	if n, err := strconv.ParseUint(name[:segmentNameLen], 10, 64); err != nil || n == 0 {
		return false
	}
	rest := name[segmentNameLen:]
	return rest == "" || rest == ".START" || rest == ".END"
}

// finishReset completes a Reset that a crash interrupted after its RESET
// file was written: the log is then the empty one the Reset was making.
func finishReset(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, resetFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("wal: read %s: %w", resetFile, err)
	}
	start, err := strconv.ParseUint(strings.TrimSuffix(string(b), "\n"), 10, 64)
	if err != nil || start == 0 {
		return fmt.Errorf("wal: %s holds %q, not a revision: %w", resetFile, b, ErrCorrupt)
	}
	return replaceSegments(dir, start, "")
}

// testHookReset, if set, is called at each step of a Reset (and of
// finishReset).
var testHookReset func(step string)

func hookReset(step string) {
	if testHookReset != nil {
		testHookReset(step)
	}
}
