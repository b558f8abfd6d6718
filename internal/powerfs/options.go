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
	// Torn, if not nil, tears the tail of files instead of dropping all of
	// their unsynced data: for every file that is in the durable namespace
	// and has unsynced bytes past its durable size (and no unsynced
	// truncation below it), a random prefix of those bytes is kept (from
	// none to all), optionally followed by up to 16 bytes of zeros or
	// garbage that never extend the file past its size before the crash.
	// Unsynced overwrites of durable bytes are still dropped. Files are
	// visited in the lexical order of their durable paths, so the same
	// seed and the same operations give the same result.
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
