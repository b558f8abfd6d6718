package main

import (
	"context"
	"fmt"
)

func syncCommand() *command {
	c := &command{
		name:    "sync",
		summary: "wait until every acknowledged write is durable",
		help:    "A durability barrier (WAITAOF 1 0 0): prints OK once every write the server acknowledged\nbefore it is fsynced.",
	}
	c.run = func(ctx context.Context, e *env, args []string) error {
		if err := wantArgs(c, args, 0); err != nil {
			return err
		}
		cl, err := e.dial(ctx)
		if err != nil {
			return err
		}
		defer cl.Close()
		if err := cl.Sync(ctx); err != nil {
			return err
		}
		if e.json() {
			return e.writeJSON(map[string]any{"durable": true})
		}
		_, err = fmt.Fprintln(e.stdout, "OK")
		return err
	}
	return c
}
