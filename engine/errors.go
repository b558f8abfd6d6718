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

	// ErrLogFailed is returned, wrapping the cause, by every write after a
	// write or fsync of the log (or a checkpoint) failed. The DB keeps serving
	// reads; reopening it recovers what is on disk.
	ErrLogFailed = errors.New("engine: log failed, writes refused until restart")

	// ErrThrottled is returned by TrySubmit while the memtables are over
	// Options.MaxMemtableBytes: the write would have to wait for a
	// checkpoint to free memory. Nothing was written.
	ErrThrottled = errors.New("engine: writes wait for a checkpoint to free memory")

	// ErrLocked is returned by Open when another process holds the data
	// directory.
	ErrLocked = errors.New("engine: data directory is in use by another process")

	// ErrCorruptState is returned by Open when the state file is damaged
	// (for example truncated): kvd refuses it rather than guess.
	ErrCorruptState = errors.New("engine: corrupt state file")

	// ErrFormat is returned by Open when the state file was written by an
	// incompatible version.
	ErrFormat = errors.New("engine: unsupported state format")
)
