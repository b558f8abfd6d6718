package main

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/spf13/pflag"

	"github.com/kvdstore/kvd/client"
)

// ifRev is the --if-rev flag of put and del: the mod revision a write
// expects of its key (0: the key must hold no value), if it was given.
type ifRev struct {
	rev uint64
	set bool
}

func (r *ifRev) String() string {
	if !r.set {
		return ""
	}
	return strconv.FormatUint(r.rev, 10)
}

func (r *ifRev) Set(s string) error {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return errors.New("want a mod revision (an unsigned integer; 0: only if the key is absent)")
	}
	r.rev, r.set = n, true
	return nil
}

func (r *ifRev) Type() string { return "N" }

func (r *ifRev) addFlag(fs *pflag.FlagSet, what string) {
	fs.Var(r, "if-rev", what+" only if the key's mod revision is N (0: only if the key is absent)")
}

// reportMismatch reports on standard error that key's mod revision was not
// the one a write expected, and returns silentError; other errors it
// returns as they are.
func reportMismatch(e *env, key string, expected uint64, err error) error {
	var rm *client.RevisionMismatchError
	if !errors.As(err, &rm) {
		return err
	}
	switch {
	case rm.Current == 0:
		fmt.Fprintf(e.stderr, "kvctl: %q: revision mismatch: the key is absent (current mod revision 0), not at %d\n", key, expected)
	case expected == 0:
		fmt.Fprintf(e.stderr, "kvctl: %q: revision mismatch: the key exists, current mod revision %d (--if-rev 0: only if absent)\n", key, rm.Current)
	default:
		fmt.Fprintf(e.stderr, "kvctl: %q: revision mismatch: current mod revision %d, not %d\n", key, rm.Current, expected)
	}
	return silentError{}
}
