package crash_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/kvtest"
)

// jobRecord is the part of a job's record the suite reads.
type jobRecord = kvtest.JobRecord

func (k *kvd) submitJob(body string) jobRecord {
	k.t.Helper()
	status, r, reply, err := kvtest.SubmitJob(k.hc, k.url(""), body)
	if err != nil {
		k.t.Fatalf("submit job: %v", err)
	}
	if status != http.StatusAccepted {
		k.t.Fatalf("submit job %s: %d %s", body, status, reply)
	}
	return r
}

// waitJob waits for a job to reach a final state by itself.
func (k *kvd) waitJob(id string) jobRecord {
	k.t.Helper()
	r, err := kvtest.WaitJob(context.Background(), k.url(""), id)
	if err != nil {
		k.t.Fatal(err)
	}
	return r
}

// checkArtifacts fails the test for a file under a final name in dir
// whose checksum does not verify: a backup's last 32 bytes are the sha256
// of the rest.
func checkArtifacts(t testing.TB, dir string) int {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	n := 0
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".kvdsnap") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if len(b) < 32 {
			t.Fatalf("%s: %d bytes under a final name", e.Name(), len(b))
		}
		sum := sha256.Sum256(b[:len(b)-32])
		if !bytes.Equal(sum[:], b[len(b)-32:]) {
			t.Fatalf("%s: under a final name, but its sha256 does not verify", e.Name())
		}
		n++
	}
	return n
}

// boltCheck stops k, runs kvd check on its data dir, and starts it again.
func boltCheck(t testing.TB, k *kvd) *kvd {
	t.Helper()
	if err := k.stop(); err != nil {
		t.Fatalf("kvd stop: %v", err)
	}
	out, err := exec.Command(kvdBin, "check", "--data-dir", k.cfg.dataDir).CombinedOutput()
	if err != nil {
		t.Fatalf("kvd check after the crash: %v\n%s", err, out)
	}
	return startKVD(t, k.cfg)
}

// writeImportFile writes n NDJSON records of 100-byte values, durably.
func writeImportFile(t testing.TB, path, prefix string, n int) {
	t.Helper()
	var b bytes.Buffer
	v := strings.Repeat("v", 100)
	for i := range n {
		fmt.Fprintf(&b, "{\"key\":\"%s%07d\",\"value\":\"%s\"}\n", prefix, i, v)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o640); err != nil {
		t.Fatal(err)
	}
	syncPath(t, path) // a power loss must not take it
	syncPath(t, filepath.Dir(path))
}

func (k *kvd) keyCount(prefix string) int {
	k.t.Helper()
	n := 0
	for key := range k.scanAll() {
		if strings.HasPrefix(key, prefix) {
			n++
		}
	}
	return n
}

// TestKill9Jobs kills kvd with SIGKILL at a random moment of each type of
// job and restarts it: the job must reach a final state by itself (backup,
// verify, compact and import succeed, being resumed; a restore or a defrag
// succeeds or fails "interrupted"), no file is under a final name unless its checksum
// verifies, the state file passes kvd check, and: under a write load
// (backup, verify, compact, defrag) no acknowledged write is lost; an import ends
// with its exact key count; a restore leaves the old store or the new one.
func TestKill9Jobs(t *testing.T) {
	for _, typ := range []string{"backup", "verify", "compact", "defrag", "import", "restore"} {
		t.Run(typ, func(t *testing.T) {
			rng := seeded(t)
			row := results.row("kill -9 in a job", typ)
			dir := t.TempDir()
			cfg := kvdConfig{dataDir: dir, mode: "async", walRetain: 100000}
			backups := filepath.Join(dir, "backups")
			k := startKVD(t, cfg)
			// A store large enough for jobs to take a while.
			const base = 20000
			writeImportFile(t, filepath.Join(backups, "base.ndjson"), "base", base)
			if r := k.waitJob(k.submitJob(`{"type":"import","name":"base.ndjson"}`).ID); r.State != "succeeded" {
				t.Fatalf("base import: %+v", r)
			}
			var backupName string
			if typ == "restore" {
				r := k.waitJob(k.submitJob(`{"type":"backup","name":"r.kvdsnap"}`).ID)
				if r.State != "succeeded" {
					t.Fatalf("backup for the restore: %+v", r)
				}
				backupName = "r.kvdsnap"
			}
			if typ == "import" {
				writeImportFile(t, filepath.Join(backups, "imp.ndjson"), "imp", 20000)
			}
			st := newStore()
			st.lastRev = hasLastRev(k)
			st.base = k.scanAll()
			st.baseRev = k.status().Revisions.Written
			cycles := pick(2, 20)
			for cycle := range cycles {
				var l *load
				switch typ {
				case "backup", "verify", "compact", "defrag":
					l = startLoad(t, k, st, rng, randomLoad(rng, "async"))
				case "restore":
					// Writes the backup lacks: a restore removes them all,
					// a failed one none.
					rdb := k.redis()
					for i := range 200 {
						if err := rdb.Set(context.Background(), fmt.Sprintf("extra%04d", i), "x", 0).Err(); err != nil {
							t.Fatal(err)
						}
					}
					rdb.Close()
				}
				var body string
				var compactTo uint64
				switch typ {
				case "backup":
					body = fmt.Sprintf(`{"type":"backup","name":"b%d.kvdsnap"}`, cycle)
				case "compact":
					compactTo = k.status().Revisions.Written
					body = fmt.Sprintf(`{"type":"compact","revision":%d}`, compactTo)
				case "import":
					body = `{"type":"import","name":"imp.ndjson"}`
				case "restore":
					body = fmt.Sprintf(`{"type":"restore","name":%q}`, backupName)
				default:
					body = fmt.Sprintf(`{"type":%q}`, typ)
				}
				time.Sleep(time.Duration(rng.IntN(100)) * time.Millisecond)
				id := k.submitJob(body).ID
				time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
				crashAt := time.Now()
				k.kill()
				var ops []*op
				var readBad []string
				var maxDurable uint64
				if l != nil {
					ops = l.stop()
					readBad = l.readViolations()
					maxDurable, _, _ = l.snapshot()
				}
				k = restart(t, row, cfg)
				r := k.waitJob(id)
				switch {
				case (typ == "restore" || typ == "defrag") && (r.State == "succeeded" || r.Error != nil && r.Error.Code == "interrupted"):
				case r.State != "succeeded":
					row.fail("job %s %s after the crash", typ, r.State)
					t.Fatalf("cycle %d: %s job ended %s after a kill: %+v", cycle, typ, r.State, r.Error)
				}
				checkArtifacts(t, backups)
				switch typ {
				case "import":
					if n := k.keyCount("imp"); n != 20000 || r.Result.Keys != 20000 {
						row.fail("import: %d keys", n)
						t.Fatalf("cycle %d: resumed import (attempt %d) reports %d keys, the store has %d; want 20000", cycle, r.Attempt, r.Result.Keys, n)
					}
					row.count(20000, 0)
				case "restore":
					extra := k.keyCount("extra")
					if extra != 0 && extra != 200 || k.keyCount("base") != base {
						row.fail("restore left a mix")
						t.Fatalf("cycle %d: after a kill in a restore (%s) the store has %d of 200 extra keys and %d of %d base keys: a mix", cycle, r.State, extra, k.keyCount("base"), base)
					}
					if r.State == "succeeded" && extra != 0 {
						t.Fatalf("cycle %d: restore succeeded but %d extra keys remain", cycle, extra)
					}
					row.count(base, 0)
				default:
					v := recoverAndCheck(t, k, st, ops, readBad, checkSpec{mode: "async", required: all, maxDurable: maxDurable, crashAt: crashAt})
					row.add(v, 0)
					if typ == "compact" {
						checkCompactedHistory(t, k, row, cycle, compactTo, r, ops)
					}
				}
				// kvd check needs kvd stopped: every cycle in the short pass,
				// every tenth and the last in the long one.
				if !longRun || cycle%10 == 9 || cycle == cycles-1 {
					k = boltCheck(t, k)
				}
				if t.Failed() {
					return
				}
				if typ == "import" {
					// Start the next cycle's import afresh.
					rdb := k.redis()
					for key := range k.scanAll() {
						if strings.HasPrefix(key, "imp") {
							rdb.Del(context.Background(), key)
						}
					}
					rdb.Close()
				}
				if l != nil {
					st.base = k.scanAll()
					st.baseRev = k.status().Revisions.Written
				}
			}
			if err := k.stop(); err != nil {
				t.Errorf("kvd stop: %v", err)
			}
		})
	}
}

// checkCompactedHistory checks the change history after a compact job that
// a kill interrupted and a restart resumed: a watch from before the job's
// oldest revision gets COMPACTED naming it, never a silent gap, and from it
// on the history holds every acknowledged write at its revision.
func checkCompactedHistory(t *testing.T, k *kvd, row *resultRow, cycle int, to uint64, r jobRecord, ops []*op) {
	t.Helper()
	oldest := r.Result.OldestRevision
	if oldest == 0 || oldest > to+1 {
		row.fail("compact: oldest revision %d", oldest)
		t.Fatalf("cycle %d: compact below revision %d reports oldest history revision %d", cycle, to, oldest)
	}
	rdb := k.redis()
	defer rdb.Close()
	ctx := context.Background()
	if oldest > 1 {
		_, _, err := pullChanges(ctx, rdb, oldest-1, "")
		want := fmt.Sprintf("COMPACTED oldest=%d ", oldest)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			row.fail("compact: no COMPACTED below the oldest revision")
			t.Fatalf("cycle %d: CHANGES FROM %d after compacting to %d: %v, want %q...", cycle, oldest-1, oldest, err, want)
		}
	}
	ds, err := pullAll(ctx, rdb, oldest, "", "durability", "written")
	if err != nil {
		row.fail("compact: history from the oldest revision")
		t.Fatalf("cycle %d: CHANGES FROM %d (the oldest revision): %v", cycle, oldest, err)
	}
	hist := map[uint64]map[string]string{}
	for _, d := range ds {
		if d.Progress {
			continue
		}
		m := map[string]string{}
		for _, c := range d.Changes {
			if !c.Delete {
				m[c.Key] = c.Value
			}
		}
		hist[d.Revision] = m
	}
	checked := 0
	for _, o := range ops {
		if o.out != outOK || o.rev < oldest || (o.kind != opSet && o.kind != opMSet) {
			continue
		}
		got, ok := hist[o.rev]
		for i, key := range o.keys {
			if !ok || got[key] != o.vals[i] {
				row.fail("compact: an acknowledged write missing from the history")
				t.Fatalf("cycle %d: %s %s at revision %d (at or above the oldest, %d) is not in the change history: %v", cycle, o.kind, key, o.rev, oldest, got)
			}
		}
		checked++
	}
	t.Logf("cycle %d: history from the oldest revision %d (compacted below %d): %d revisions, %d acknowledged writes at or above it found",
		cycle, oldest, to, len(hist), checked)
}
