package engine

import "errors"

var (
	// ErrNotFound is returned by Get when the key holds no value.
	ErrNotFound = errors.New("engine: not found")

	// ErrClosed is returned by calls on a closed DB.
	ErrClosed = errors.New("engine: closed")

	// ErrEmptyKey is returned when a write names an empty key.
	ErrEmptyKey = errors.New("engine: empty key")

	// ErrKeyTooLarge is returned when a key is longer than Options.MaxKeySize.
	ErrKeyTooLarge = errors.New("engine: key too large")

	// ErrValueTooLarge is returned when a value is longer than
	// Options.MaxValueSize.
	ErrValueTooLarge = errors.New("engine: value too large")

	// ErrLogFailed is returned, wrapping the cause, by every write after an
	// fsync of the log failed, or a write of the log that could not be
	// recovered from, or a checkpoint in a way that is not a want of space.
	// The write was not executed, unless ErrOutcomeUnknown is returned with
	// it. The DB keeps serving reads; reopening it recovers what is on disk.
	ErrLogFailed = errors.New("engine: log failed, writes refused until restart")

	// ErrWriteRefused is returned, wrapping the cause, for a write that the
	// log could not write (for example for want of space) and cut from its
	// file before answering: the write was not executed and is not in the
	// log, so retrying it is safe. The DB stays open for writes; they
	// succeed again once the log can write.
	ErrWriteRefused = errors.New("engine: write refused, not executed")

	// ErrOutcomeUnknown is returned, together with ErrLogFailed, for a write
	// that may or may not have been executed: the log failed after the
	// write may have reached its file (an fsync failed after it was
	// written, or it was being written when a write failed and the log
	// could not cut it durably). It may or may not be there after a
	// restart: read before retrying a write that is not idempotent.
	ErrOutcomeUnknown = errors.New("engine: outcome unknown, the write may or may not have been executed")

	// ErrThrottled is returned by TrySubmit while the memtables are over
	// Options.MaxMemtableBytes: the write would have to wait for a
	// checkpoint to free memory. Nothing was written.
	ErrThrottled = errors.New("engine: writes wait for a checkpoint to free memory")

	// ErrBadBatch is returned by DecodeBatch and Apply for a malformed
	// encoded batch, and by a write whose PutIf condition is invalid.
	ErrBadBatch = errors.New("engine: malformed batch")

	// ErrNotInteger is the Result.Err of an IncrBy whose key holds a value
	// that is not a 64-bit integer in canonical decimal form.
	ErrNotInteger = errors.New("engine: value is not an integer or out of range")

	// ErrOverflow is the Result.Err of an IncrBy whose sum would overflow
	// a 64-bit signed integer.
	ErrOverflow = errors.New("engine: increment or decrement would overflow")

	// ErrRequireFailed is the Result.Err of every operation of a batch
	// that applied nothing because one of its require ops (Batch.Require)
	// found another mod revision.
	ErrRequireFailed = errors.New("engine: batch precondition failed, nothing applied")

	// ErrNotFloat is the Result.Err of an IncrByFloat whose key holds a
	// value that does not parse as a float (see ParseFloat).
	ErrNotFloat = errors.New("engine: value is not a valid float")

	// ErrFloatRange is the Result.Err of an IncrByFloat whose sum would be
	// NaN or infinite.
	ErrFloatRange = errors.New("engine: increment would produce NaN or Infinity")

	// ErrAlreadyApplied is returned by Apply for a revision the DB already
	// has: the batch was skipped. Its results are not kept; the state is
	// that of the batch having been applied once.
	ErrAlreadyApplied = errors.New("engine: revision already applied")

	// ErrRevisionGap is returned by Apply for a revision beyond the next
	// one: the batches before it must be applied first.
	ErrRevisionGap = errors.New("engine: revision is not the next one")

	// ErrLocked is returned by Open when another process holds the data
	// directory.
	ErrLocked = errors.New("engine: data directory is in use by another process")

	// ErrCorruptState is returned by Open when the state file is damaged
	// (for example truncated): kvd refuses it rather than guess. It is
	// also returned, wrapped with the detail (and the length and first
	// bytes of the key read), by a read (Get, GetEntry, GetEach, Scan,
	// Count) that met a damaged page of the state file, one bbolt would
	// have faulted or panicked on: reads of keys on other pages go on
	// working. A checkpoint or a write that meets one fails the DB
	// (ErrLogFailed, wrapping this). Either way Stats.Corruptions counts
	// it; Check tells what is damaged.
	ErrCorruptState = errors.New("engine: corrupt state file")

	// ErrCorruptValue is returned, wrapped with the length and first bytes
	// of the key, by a read (Get, GetEntry, GetEach, Scan, Count) that
	// found a value record of the state file whose checksum does not
	// match: the value is not returned. A write whose application reads
	// such a record (a conditional op or a delete of its key), or a
	// checkpoint that overwrites it, fails the DB instead (ErrLogFailed,
	// wrapping this); reopening it replays the write and fails again until
	// the record is repaired.
	ErrCorruptValue = errors.New("engine: corrupt value in the state file")

	// ErrCompacted is returned, as a *CompactedError naming the oldest
	// revision left, by Changes for a revision older than the change
	// history retains.
	ErrCompacted = errors.New("engine: history compacted")

	// ErrFormat is returned by Open when the state file was written by an
	// incompatible version.
	ErrFormat = errors.New("engine: unsupported state format")
)
