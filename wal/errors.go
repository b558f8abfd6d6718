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

	// ErrFailed wraps the first write or fsync error of a Log. It is sticky:
	// once returned, every later write and sync returns it too.
	ErrFailed = errors.New("wal: log failed")

	// ErrNotFound is returned by Read for a revision that is not written
	// yet (enqueued or not, or dropped by TruncateBack or Reset), and for
	// revision 0, which no record has.
	ErrNotFound = errors.New("wal: revision not found")

	// ErrCompacted is returned by Read for a revision below the first one
	// the log holds (FirstIndex): TruncateFront or Reset dropped it.
	ErrCompacted = errors.New("wal: revision compacted")

	// ErrTruncated is returned by WaitWritten and WaitDurable to a caller
	// waiting for a record that TruncateBack or Reset dropped before it was
	// written (WaitWritten) or made durable (WaitDurable).
	ErrTruncated = errors.New("wal: record dropped by a truncation")
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
