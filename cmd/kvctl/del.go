package main

import (
	"context"
	"fmt"
)

func delCommand() *command {
	c := &command{
		name:    "del",
		args:    "KEY",
		summary: "delete KEY",
		help:    "Prints \"deleted\", or \"not found\" if there was no such key (exit status 0 either way).",
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
		existed, err := cl.Delete(ctx, args[0])
		if err != nil {
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
