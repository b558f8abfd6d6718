package wal

import (
	"errors"
	"fmt"
)

var (
	// ErrCorrupt is returned (wrapped in a *CorruptError) when a record other
	// than a torn tail fails its checks.
	ErrCorrupt = errors.New("wal: corrupt")

	// ErrClosed is returned by calls on a closed Log.
	ErrClosed = errors.New("wal: closed")

	// ErrFormat is returned by Open when the directory holds a log of an
	// unknown format version.
	ErrFormat = errors.New("wal: unsupported format")

	// ErrFailed wraps the error that made a Log fail: a failed fsync, or a
	// write error the Log could not recover from (see ErrWriteRefused). It
	// is sticky: once returned, every later write and sync returns it too.
	// A record that gets ErrFailed alone never reached the log: it was still
	// queued when the log failed, and will not be found on reopening.
	ErrFailed = errors.New("wal: log failed")

	// ErrNotFound is returned by Read for a revision that is not written
	// yet (enqueued or not, or dropped by TruncateBack or Reset), and for
	// revision 0, which no record has.
	ErrNotFound = errors.New("wal: revision not found")

	// ErrShort is returned, with ErrCorrupt, by Open for a log whose last
	// record comes before from-1: it holds none of the records asked for.
	// A caller whose state (a snapshot) covers every record the log holds
	// may start a new log instead.
	ErrShort = errors.New("wal: the log ends before the first revision asked for")

	// ErrCompacted is returned by Read for a revision below the first one
	// the log holds (FirstIndex): TruncateFront or Reset dropped it.
	ErrCompacted = errors.New("wal: revision compacted")

	// ErrTruncated is returned by WaitWritten and WaitDurable to a caller
	// waiting for a record that TruncateBack or Reset dropped before it was
	// written (WaitWritten) or made durable (WaitDurable).
	ErrTruncated = errors.New("wal: record dropped by a truncation")

	// ErrWriteRefused is returned, wrapping the cause, by WaitWritten and
	// WaitDurable for a record that was not written and never will be: a
	// write to a segment file failed (for example with ENOSPC) while the
	// record was in the batch being written, or queued behind it, and the
	// Log cut the segment back to its last record written before the batch
	// and fsynced the cut before answering. The record is not on disk and
	// its revision is given to a later record; the log takes new records at
	// once, so the write can be retried. The Log is not failed.
	ErrWriteRefused = errors.New("wal: write refused, not written")

	// ErrOutcomeUnknown is returned, together with ErrFailed (both match),
	// for a record that may or may not be in the log: the Log failed after
	// the record may have reached its segment file and before it was known
	// durable. That is a record written whose fsync failed (WaitDurable), or
	// a record of a batch whose write failed and whose cut could not be made
	// durable. Reopening the log may or may not find it.
	ErrOutcomeUnknown = errors.New("wal: outcome unknown")
)

// CorruptError reports a bad record: the segment file and the byte offset of
// the record within it. It unwraps to ErrCorrupt.
type CorruptError struct {
	Segment string // segment file name
	Offset  int64  // byte offset of the bad record
	Reason  string
	// Hint says what the damage probably is.
	Hint string
}

func (e *CorruptError) Error() string {
	s := fmt.Sprintf("wal: corrupt record in segment %s at offset %d: %s", e.Segment, e.Offset, e.Reason)
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

// Unwrap returns ErrCorrupt.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }
