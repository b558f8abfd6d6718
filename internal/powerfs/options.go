package powerfs

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// defaultBusyTimeout is Options.BusyTimeout when it is zero.
const defaultBusyTimeout = 2 * time.Second

// Options configure Mount. The zero value is valid.
type Options struct {
	// Logger receives mount, crash and unmount events, and diagnostics of
	// the FUSE library. Nil discards them.
	Logger *slog.Logger

	// BusyTimeout bounds how long Crash and Unmount wait for the files
	// open on the mount to be closed (a process killed with SIGKILL
	// closes its files while it exits) before they abort the FUSE
	// connection, after which every remaining handle fails with ENOTCONN.
	// Zero means 2s.
	BusyTimeout time.Duration
}

// withDefaults validates o and fills in its defaults. It reports every
// invalid field.
func (o Options) withDefaults() (Options, error) {
	var errs []error
	if o.BusyTimeout < 0 {
		errs = append(errs, fmt.Errorf("powerfs: Options.BusyTimeout %v is negative", o.BusyTimeout))
	}
	if o.BusyTimeout == 0 {
		o.BusyTimeout = defaultBusyTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, errors.Join(errs...)
}

// CrashOptions configure Crash. The zero value drops every unsynced change.
type CrashOptions struct {
	// Torn, if not nil, keeps part of each file's unsynced content instead
	// of none, as a disk that writes in order and loses power midway
	// does: for every file that is in the durable namespace and has
	// unsynced changes (and no unsynced truncation below its durable
	// size), the changes are kept in file order up to a random 512-byte
	// sector boundary (file offsets) or all of them, and none after; a
	// file that grows ends at the cut, or is followed by zeros up to a
	// later sector boundary or its size before the crash. Appends and
	// overwrites of durable bytes are torn alike. Files are visited in
	// the lexical order of their durable paths, so the same seed and the
	// same operations give the same result.
	Torn *rand.Rand
	// Reorder, if not nil, keeps a random subset of each file's unsynced
	// 4 KiB pages instead of none, as a disk that lost power with some of
	// its cached writes persisted and others not can: a later page without
	// an earlier one, an overwrite without the append before it. Each kept
	// page is written whole, in place; a file grows to cover its last kept
	// page, with zeros where pages between were not kept. Files with an
	// unsynced truncation below their durable size lose all their unsynced
	// data. Files are visited as with Torn; Reorder takes precedence.
	Reorder *rand.Rand
}
