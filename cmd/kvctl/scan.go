package main

import (
	"context"
	"fmt"
	"unicode/utf8"

	"github.com/spf13/pflag"

	"github.com/kvdstore/kvd/client"
)

func scanCommand() *command {
	var prefix string
	var limit int
	var values bool
	c := &command{
		name:    "scan",
		summary: "list keys in order",
		args:    "[--prefix P] [--limit N] [--values]",
		help: "Prints one key per line (KEY<TAB>VALUE with --values); with -o json, an array of\n" +
			"{\"key\"} objects (and \"value\" or \"value_base64\").",
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&prefix, "prefix", "", "only keys starting with this prefix")
			fs.IntVar(&limit, "limit", 0, "at most this many keys (0: all)")
			fs.BoolVar(&values, "values", false, "print the values too")
		},
	}
	c.run = func(ctx context.Context, e *env, args []string) error {
		if len(args) != 0 {
			return usagef("scan takes no arguments (got %q)", args)
		}
		if limit < 0 {
			return usagef("--limit must not be negative")
		}
		cl, err := e.dial(ctx)
		if err != nil {
			return err
		}
		defer cl.Close()
		kvs, err := cl.Scan(ctx, client.ScanOptions{Prefix: prefix, Limit: limit, Values: values})
		if err != nil {
			return err
		}
		if e.json() {
			items := make([]map[string]any, 0, len(kvs))
			for _, kv := range kvs {
				it := map[string]any{"key": kv.Key}
				if values {
					if utf8.Valid(kv.Value) {
						it["value"] = string(kv.Value)
					} else {
						it["value_base64"] = kv.Value
					}
				}
				items = append(items, it)
			}
			return e.writeJSON(items)
		}
		for _, kv := range kvs {
			var err error
			if values {
				_, err = fmt.Fprintf(e.stdout, "%s\t%s\n", kv.Key, kv.Value)
			} else {
				_, err = fmt.Fprintln(e.stdout, kv.Key)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
	return c
}
