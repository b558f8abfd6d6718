package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/kvdstore/kvd/engine"
)

func restoreCommand() *command {
	var dataDir string
	c := &command{
		name:    "restore",
		args:    "FILE --data-dir DIR",
		summary: "restore a backup file into a new data directory (offline)",
		help: `Installs the backup FILE as the store in DIR, which must not exist or be empty; then start kvd
with --data-dir DIR. Every checksum of the backup is checked first: a damaged or torn file is
refused and DIR is left without a store. The store opens at the backup's revision, and its next
write gets the revision after it. To restore into a running server instead, submit a restore job
(kvctl job submit restore NAME, with the file in the server's --backup-dir).`,
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&dataDir, "data-dir", "", "the new data directory (required)")
		},
		ownTimeout: true,
	}
	c.run = func(ctx context.Context, e *env, args []string) error {
		if err := wantArgs(c, args, 1); err != nil {
			return err
		}
		if dataDir == "" {
			return usagef("restore: --data-dir is required")
		}
		f, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer f.Close()
		info, err := engine.RestoreSnapshot(f, dataDir)
		if err != nil {
			return fmt.Errorf("restore %s: %w", args[0], err)
		}
		if e.json() {
			return e.writeJSON(map[string]any{"data_dir": dataDir, "revision": info.Revision, "keys": info.Keys,
				"sha256": hex.EncodeToString(info.SHA256[:])})
		}
		_, err = fmt.Fprintf(e.stdout, "restored %s into %s: revision %d, %d keys\n", args[0], dataDir, info.Revision, info.Keys)
		return err
	}
	return c
}
