package main

import (
	"context"
	"fmt"

	"github.com/spf13/pflag"
)

func delCommand() *command {
	var cas ifRev
	c := &command{
		name:    "del",
		args:    "KEY",
		summary: "delete KEY",
		help: "Prints \"deleted\", or \"not found\" if there was no such key (exit status 0 either way).\n" +
			"With --if-rev N, deletes only if the key's mod revision (kvctl get --rev) is N (N = 0: only\n" +
			"if the key is absent, which deletes nothing and prints \"not found\"); otherwise deletes\n" +
			"nothing, names the key's current mod revision on standard error and exits with status 1.",
		flags: func(fs *pflag.FlagSet) { cas.addFlag(fs, "delete") },
	}
	c.run = func(ctx context.Context, e *env, args []string) error {
		if err := wantArgs(c, args, 1); err != nil {
			return err
		}
		cl, err := e.dial(ctx)
		if err != nil {
			return err
		}
		defer cl.Close()
		var existed bool
		if cas.set {
			if err := cl.CompareAndDelete(ctx, args[0], cas.rev); err != nil {
				return reportMismatch(e, args[0], cas.rev, err)
			}
			existed = cas.rev != 0
		} else if existed, err = cl.Delete(ctx, args[0]); err != nil {
			return err
		}
		if e.json() {
			return e.writeJSON(map[string]any{"deleted": existed})
		}
		msg := "deleted"
		if !existed {
			msg = "not found"
		}
		_, err = fmt.Fprintln(e.stdout, msg)
		return err
	}
	return c
}
