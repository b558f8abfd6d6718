package crash_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/powerfs"
)

// TestPowerLossJobs cuts the power (the crash suite's FUSE file system,
// which drops what was not fsynced, or keeps part of it torn or
// reordered) at a random moment of a backup, an import, a restore and a
// defrag, and restarts kvd: the job reaches a final state by itself, no
// file is under a final name unless its checksum verifies, kvd check
// passes, the keys written with sync commits before the job are all there,
// an import ends with its exact key count (its offset is recorded only
// after a sync), and a restore leaves the old store or the new one.
func TestPowerLossJobs(t *testing.T) {
	requireFUSE(t)
	for _, typ := range []string{"backup", "import", "restore", "defrag"} {
		t.Run(typ, func(t *testing.T) {
			rng := seeded(t)
			row := results.row("power loss in a job", typ)
			m := newPowerMount(t)
			dir := filepath.Join(m.mnt, "data")
			if err := os.Mkdir(dir, 0o750); err != nil {
				t.Fatal(err)
			}
			syncPath(t, m.mnt)
			cfg := kvdConfig{dataDir: dir, mode: "sync"}
			backups := filepath.Join(dir, "backups")
			k := startKVD(t, cfg)
			const base, imported = 10000, 8000
			writeImportFile(t, filepath.Join(backups, "base.ndjson"), "base", base)
			if r := k.waitJob(k.submitJob(`{"type":"import","name":"base.ndjson"}`).ID); r.State != "succeeded" {
				t.Fatalf("base import: %+v", r)
			}
			switch typ {
			case "restore":
				if r := k.waitJob(k.submitJob(`{"type":"backup","name":"r.kvdsnap"}`).ID); r.State != "succeeded" {
					t.Fatalf("backup for the restore: %+v", r)
				}
			case "import":
				writeImportFile(t, filepath.Join(backups, "imp.ndjson"), "imp", imported)
			}
			syncPath(t, backups)
			kinds := []string{"plain", "torn", "reordered"}
			for cycle := range pick(2, 8) {
				if typ == "restore" {
					rdb := k.redis()
					for i := range 100 {
						if err := rdb.Set(context.Background(), fmt.Sprintf("extra%04d", i), "x", 0).Err(); err != nil {
							t.Fatal(err)
						}
					}
					rdb.Close()
				}
				body := map[string]string{
					"backup":  fmt.Sprintf(`{"type":"backup","name":"b%d.kvdsnap"}`, cycle),
					"import":  `{"type":"import","name":"imp.ndjson"}`,
					"restore": `{"type":"restore","name":"r.kvdsnap"}`,
					"defrag":  `{"type":"defrag"}`,
				}[typ]
				id := k.submitJob(body).ID
				time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
				k.kill()
				var opts powerfs.CrashOptions
				switch kinds[rng.IntN(3)] {
				case "torn":
					opts.Torn = rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
				case "reordered":
					opts.Reorder = rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
				}
				m.crash(opts)
				k = startAfterFault(t, row, cfg)
				row.recovered(len(cuts(k.Log())) > 0)
				r := k.waitJob(id)
				// A job whose record the power loss took back to queued, or
				// never saw, still ends; restore and defrag may end
				// interrupted.
				interrupted := r.Error != nil && r.Error.Code == "interrupted"
				if r.State != "succeeded" && !((typ == "restore" || typ == "defrag") && interrupted) {
					row.fail("%s job %s after a power loss", typ, r.State)
					t.Fatalf("cycle %d: %s job ended %s after a power loss: %+v", cycle, typ, r.State, r.Error)
				}
				checkArtifacts(t, backups)
				if n := k.keyCount("base"); n != base {
					row.fail("%d of %d base keys", n, base)
					t.Fatalf("cycle %d: %d of %d keys written before the job", cycle, n, base)
				}
				switch typ {
				case "import":
					if n := k.keyCount("imp"); n != imported || r.Result.Keys != imported {
						row.fail("import: %d keys", n)
						t.Fatalf("cycle %d: import (attempt %d) reports %d keys, the store has %d; want %d", cycle, r.Attempt, r.Result.Keys, n, imported)
					}
				case "restore":
					if extra := k.keyCount("extra"); extra != 0 && extra != 100 || r.State == "succeeded" && extra != 0 {
						row.fail("restore left a mix")
						t.Fatalf("cycle %d: after a power loss in a restore (%s) %d of 100 extra keys remain", cycle, r.State, extra)
					}
				}
				row.count(base, 0)
				k = boltCheck(t, k)
				if typ == "import" {
					rdb := k.redis()
					for key := range k.scanAll() {
						if len(key) > 3 && key[:3] == "imp" {
							rdb.Del(context.Background(), key)
						}
					}
					rdb.Close()
				}
			}
			if err := k.stop(); err != nil {
				t.Errorf("kvd stop: %v", err)
			}
		})
	}
}
