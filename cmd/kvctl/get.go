package main

import (
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/kvdstore/kvd/client"
)

func getCommand() *command {
	c := &command{
		name:    "get",
		args:    "KEY",
		summary: "print the value of KEY",
		help: "Prints the value followed by a newline (with -o json: {\"key\",\"value\"}, or value_base64\n" +
			"for a value that is not UTF-8). A missing key is reported on standard error, exit status 1.",
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
		v, err := cl.Get(ctx, args[0])
		if errors.Is(err, client.ErrNotFound) {
			fmt.Fprintf(e.stderr, "kvctl: %q: not found\n", args[0])
			return silentError{}
		}
		if err != nil {
			return err
		}
		if e.json() {
			out := map[string]any{"key": args[0]}
			if utf8.Valid(v) {
				out["value"] = string(v)
			} else {
				out["value_base64"] = v
			}
			return e.writeJSON(out)
		}
		if _, err := e.stdout.Write(v); err != nil {
			return err
		}
		_, err = fmt.Fprintln(e.stdout)
		return err
	}
	return c
}
