package main

import (
	"context"
	"fmt"
	"io"
)

func putCommand() *command {
	c := &command{
		name:    "put",
		args:    "KEY VALUE",
		summary: "store VALUE under KEY (VALUE - reads standard input)",
		help: "Prints OK once the server acknowledged the write: after fsync with --durability sync,\n" +
			"after the write with async, per the server's commit mode by default.\n" +
			"Use -- before a VALUE that starts with '-' (kvctl put k -- -1).",
	}
	c.run = func(ctx context.Context, e *env, args []string) error {
		if err := wantArgs(c, args, 2); err != nil {
			return err
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
		if err := cl.Put(ctx, args[0], value); err != nil {
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
