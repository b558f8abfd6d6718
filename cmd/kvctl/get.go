package main

import (
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/spf13/pflag"

	"github.com/kvdstore/kvd/client"
)

func getCommand() *command {
	var rev bool
	c := &command{
		name:    "get",
		args:    "KEY",
		summary: "print the value of KEY",
		help: "Prints the value followed by a newline (with -o json: {\"key\",\"value\"}, or value_base64\n" +
			"for a value that is not UTF-8). A missing key is reported on standard error, exit status 1.\n" +
			"With --rev, prints the key's revisions first, one per line, then the value:\n" +
			"  mod_revision: 12\n  create_revision: 3\n  value: VALUE\n" +
			"(with -o json, \"mod_revision\" and \"create_revision\" fields). The mod revision is what\n" +
			"put --if-rev and del --if-rev compare.",
		flags: func(fs *pflag.FlagSet) {
			fs.BoolVar(&rev, "rev", false, "print the key's mod and create revisions too")
		},
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
		var en client.Entry
		if rev {
			en, err = cl.GetEntry(ctx, args[0])
		} else {
			en.Value, err = cl.Get(ctx, args[0])
		}
		if errors.Is(err, client.ErrNotFound) {
			fmt.Fprintf(e.stderr, "kvctl: %q: not found\n", args[0])
			return silentError{}
		}
		if err != nil {
			return err
		}
		v := en.Value
		if e.json() {
			out := map[string]any{"key": args[0]}
			if utf8.Valid(v) {
				out["value"] = string(v)
			} else {
				out["value_base64"] = v
			}
			if rev {
				out["mod_revision"] = en.ModRevision
				out["create_revision"] = en.CreateRevision
			}
			return e.writeJSON(out)
		}
		if rev {
			if _, err := fmt.Fprintf(e.stdout, "mod_revision: %d\ncreate_revision: %d\nvalue: ", en.ModRevision, en.CreateRevision); err != nil {
				return err
			}
		}
		if _, err := e.stdout.Write(v); err != nil {
			return err
		}
		_, err = fmt.Fprintln(e.stdout)
		return err
	}
	return c
}
