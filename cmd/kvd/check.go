package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/pflag"

	"github.com/kvdstore/kvd/engine"
)

// exitStatus is an error that asks for an exit status of its own.
type exitStatus struct {
	code int
	err  error
}

func (e *exitStatus) Error() string { return e.err.Error() }
func (e *exitStatus) Unwrap() error { return e.err }

// errDamaged is what kvd check returns when it found damage (exit 1).
var errDamaged = errors.New("check: the state file is damaged")

// runCheck is "kvd check": an offline check of the state file of a
// stopped store (engine.Check). It prints a summary and every problem to
// stdout and returns nil if the file is sound, errDamaged (exit 1) if it is
// damaged, and an error with exit status 2 for a bad command line or a
// check that could not be made.
func runCheck(args []string, stdout io.Writer) error {
	var dataDir string
	fs := pflag.NewFlagSet("kvd check", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&dataDir, "data-dir", "./kvd-data", "directory of the store to check")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(stdout, checkUsage(fs))
			return nil
		}
		return &usageError{err}
	}
	if fs.NArg() > 0 {
		return &usageError{fmt.Errorf("check: unexpected argument %q", fs.Arg(0))}
	}
	r, err := engine.Check(dataDir, engine.CheckOptions{})
	if errors.Is(err, engine.ErrLocked) {
		return &exitStatus{2, fmt.Errorf("check: %w: stop the kvd using it first", err)}
	}
	if err != nil {
		return &exitStatus{2, err}
	}
	fmt.Fprintf(stdout, "state file: %s (format %s)\n", filepath.Join(dataDir, "state.db"), r.Format)
	fmt.Fprintf(stdout, "pages read: %d\nkeys checked: %d\nproblems: %d\n", r.Pages, r.Keys, len(r.Problems))
	for _, p := range r.Problems {
		fmt.Fprintf(stdout, "  %s\n", p)
	}
	if r.Truncated {
		fmt.Fprintln(stdout, "  (more problems not listed)")
	}
	if !r.OK() {
		fmt.Fprintln(stdout, `damaged: see "When the state file is damaged" in README.md`)
		return errDamaged
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}

func checkUsage(fs *pflag.FlagSet) string {
	return `kvd check: check the state file of a stopped kvd store, changing nothing.

Usage:
  kvd check [--data-dir DIR]

It reads every page of DIR/state.db, checks that each is whole and in its
place and that every value matches its checksum, then runs bbolt's own
consistency check, and prints what it found, with the page and key of each
problem. It refuses a directory that a running kvd holds.

Flags:
` + fs.FlagUsagesWrapped(100) + `
Exit status: 0 if the state file is sound, 1 if it is damaged, 2 on a bad
command line or if the check could not be made.
`
}
