package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/pflag"
)

func putCommand() *command {
	var cas ifRev
	var ttl time.Duration
	c := &command{
		name:    "put",
		args:    "KEY VALUE",
		summary: "store VALUE under KEY (VALUE - reads standard input)",
		help: "Prints OK once the server acknowledged the write: after fsync with --durability sync,\n" +
			"after the write with async, per the server's commit mode by default.\n" +
			"Use -- before a VALUE that starts with '-' (kvctl put k -- -1).\n" +
			"With --if-rev N, writes only if the key's mod revision (kvctl get --rev) is N, or with\n" +
			"N = 0 only if the key is absent, and prints OK and the key's new mod revision\n" +
			"(\"mod_revision: 13\"); otherwise writes nothing, names the key's current mod revision\n" +
			"on standard error and exits with status 1.\n" +
			"With --ttl DURATION (30s, 1500ms, 2h), the key expires that long after the write;\n" +
			"without, a put clears the key's expiry. --ttl and --if-rev exclude each other.",
		flags: func(fs *pflag.FlagSet) {
			cas.addFlag(fs, "write")
			fs.DurationVar(&ttl, "ttl", 0, "make the key expire after this duration (at least 1ms)")
		},
	}
	c.run = func(ctx context.Context, e *env, args []string) error {
		if err := wantArgs(c, args, 2); err != nil {
			return err
		}
		switch {
		case ttl != 0 && ttl < time.Millisecond:
			return usagef("--ttl %v is under 1ms", ttl)
		case ttl != 0 && cas.set:
			return usagef("--ttl and --if-rev exclude each other")
		}
		value := []byte(args[1])
		if args[1] == "-" {
			b, err := io.ReadAll(e.stdin)
			if err != nil {
				return fmt.Errorf("reading standard input: %w", err)
			}
			value = b
		}
		cl, err := e.dial(ctx)
		if err != nil {
			return err
		}
		defer cl.Close()
		if cas.set {
			rev, err := cl.CompareAndPut(ctx, args[0], value, cas.rev)
			if err != nil {
				return reportMismatch(e, args[0], cas.rev, err)
			}
			if e.json() {
				return e.writeJSON(map[string]any{"ok": true, "mod_revision": rev})
			}
			_, err = fmt.Fprintf(e.stdout, "OK\nmod_revision: %d\n", rev)
			return err
		}
		if ttl != 0 {
			err = cl.PutWithTTL(ctx, args[0], value, ttl)
		} else {
			err = cl.Put(ctx, args[0], value)
		}
		if err != nil {
			return err
		}
		if e.json() {
			return e.writeJSON(map[string]any{"ok": true})
		}
		_, err = fmt.Fprintln(e.stdout, "OK")
		return err
	}
	return c
}
