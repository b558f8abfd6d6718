package main

import (
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/spf13/pflag"

	"github.com/kvdstore/kvd/client"
)

func watchCommand() *command {
	var (
		from    uint64
		key     bool
		written bool
		count   int
	)
	c := &command{
		ownTimeout: true, // runs until interrupted; --timeout bounds the dial
		name:       "watch",
		args:       "[PREFIX]",
		summary:    "print the changes of the keys starting with PREFIX as they happen",
		help: "Prints one line per change: REVISION put KEY VALUE, or REVISION del KEY (with -o json,\n" +
			"one object per revision: {\"revision\",\"changes\":[{\"key\",\"value\" or \"value_base64\",\"deleted\"}]}).\n" +
			"Without PREFIX it watches every key. It starts after the current revision, or at --from\n" +
			"REV (the changes of REV included), reconnects by itself and goes on without a gap, and\n" +
			"runs until interrupted or --count revisions were printed. Only durable revisions are\n" +
			"printed unless --written. A --from older than the server's change history fails with\n" +
			"\"compacted\" and the oldest revision it has (exit status 1).",
		flags: func(fs *pflag.FlagSet) {
			fs.Uint64Var(&from, "from", 0, "first revision to print (0: the next one)")
			fs.BoolVar(&key, "key", false, "PREFIX is a key, watched alone")
			fs.BoolVar(&written, "written", false, "print revisions once written, before they are durable (a power loss in async mode can take them back)")
			fs.IntVar(&count, "count", 0, "stop after this many revisions (0: run until interrupted)")
		},
	}
	c.run = func(ctx context.Context, e *env, args []string) error {
		if len(args) > 1 {
			return usagef("watch takes [PREFIX] (got %d arguments)", len(args))
		}
		prefix := ""
		if len(args) == 1 {
			prefix = args[0]
		}
		if key && prefix == "" {
			return usagef("watch --key needs a KEY")
		}
		if count < 0 {
			return usagef("--count must not be negative")
		}
		dctx, dcancel := context.WithTimeout(ctx, e.cfg.timeout)
		cl, err := e.dial(dctx)
		dcancel()
		if err != nil {
			return err
		}
		defer cl.Close()
		var opts []client.WatchOption
		if key {
			opts = append(opts, client.WatchKey())
		}
		if written {
			opts = append(opts, client.WatchWritten())
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		n := 0
		for ev := range cl.Watch(ctx, prefix, from, opts...) {
			if ev.Err != nil {
				var ce *client.CompactedError
				if errors.As(ev.Err, &ce) {
					return fmt.Errorf("compacted: revision %d is older than the server's change history, which starts at %d", ce.Requested, ce.Oldest)
				}
				return ev.Err
			}
			if ev.Progress {
				continue
			}
			if err := printRevision(e, ev); err != nil {
				return err
			}
			if n++; count > 0 && n >= count {
				return nil
			}
		}
		return nil // interrupted
	}
	return c
}

func printRevision(e *env, ev client.WatchEvent) error {
	if e.json() {
		changes := make([]map[string]any, len(ev.Changes))
		for i, c := range ev.Changes {
			m := map[string]any{"key": c.Key, "deleted": c.Deleted}
			if !c.Deleted {
				if utf8.Valid(c.Value) {
					m["value"] = string(c.Value)
				} else {
					m["value_base64"] = c.Value
				}
			}
			changes[i] = m
		}
		return e.writeJSON(map[string]any{"revision": ev.Revision, "changes": changes})
	}
	for _, c := range ev.Changes {
		var err error
		if c.Deleted {
			_, err = fmt.Fprintf(e.stdout, "%d del %s\n", ev.Revision, c.Key)
		} else {
			_, err = fmt.Fprintf(e.stdout, "%d put %s %s\n", ev.Revision, c.Key, c.Value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
