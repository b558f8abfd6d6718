package jobs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/jobs"
)

type env struct {
	dataDir, backupDir string
	db                 *engine.DB
	m                  *jobs.Manager
}

func (e *env) opts() jobs.Options {
	return jobs.Options{Dir: filepath.Join(e.dataDir, "jobs"), BackupDir: e.backupDir, ImportBatchBytes: 4 << 10}
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{dataDir: t.TempDir(), backupDir: t.TempDir()}
	e.openDB(t)
	e.openManager(t, e.opts())
	return e
}

func (e *env) openDB(t *testing.T) {
	t.Helper()
	db, err := engine.Open(e.dataDir, engine.Options{CommitMode: engine.CommitAsync})
	if err != nil {
		t.Fatal(err)
	}
	e.db = db
	t.Cleanup(func() { db.Close() })
}

func (e *env) openManager(t *testing.T, o jobs.Options) {
	t.Helper()
	m, err := jobs.Open(e.db, o)
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	t.Cleanup(func() { m.Close() })
}

func (e *env) restart(t *testing.T) {
	t.Helper()
	e.m.Close()
	e.db.Close()
	e.openDB(t)
	e.openManager(t, e.opts())
}

func (e *env) submit(t *testing.T, typ jobs.Type, p jobs.Params) jobs.Record {
	t.Helper()
	r, _, err := e.m.Submit(typ, p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (e *env) wait(t *testing.T, id string, want jobs.State) jobs.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := e.m.WaitFinal(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != want {
		t.Fatalf("job %s (%s): state %s, want %s; error %+v", id, r.Type, r.State, want, r.Error)
	}
	return r
}

func put(t *testing.T, db *engine.DB, n int, prefix string) {
	t.Helper()
	for i := range n {
		if _, err := db.Put([]byte(fmt.Sprintf("%s%05d", prefix, i)), []byte(strings.Repeat("v", i%100)), engine.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func count(t *testing.T, db *engine.DB) int {
	t.Helper()
	n, err := db.Count()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestBackupRestore backs the store up, changes it, restores the backup
// online and checks the store is what it was at the backup's revision.
func TestBackupRestore(t *testing.T) {
	e := newEnv(t)
	put(t, e.db, 2000, "a")
	b := e.wait(t, e.submit(t, jobs.Backup, jobs.Params{}).ID, jobs.Succeeded)
	if b.Result == nil || b.Result.Revision != 2000 || b.Result.Size == 0 {
		t.Fatalf("backup result %+v", b.Result)
	}
	if _, err := os.Stat(b.Result.Path + ".part"); err == nil {
		t.Fatal("a .part file is left beside the backup")
	}
	f, err := os.Open(b.Result.Path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := engine.ReadSnapshotInfo(f)
	f.Close()
	if err != nil || info.Keys != 2000 || info.Revision != 2000 {
		t.Fatalf("backup file: %+v, %v", info, err)
	}
	put(t, e.db, 500, "b")
	r := e.wait(t, e.submit(t, jobs.Restore, jobs.Params{Name: filepath.Base(b.Result.Path)}).ID, jobs.Succeeded)
	if r.Result.Revision != 2000 || r.Result.Keys != 2000 {
		t.Fatalf("restore result %+v", r.Result)
	}
	if n := count(t, e.db); n != 2000 {
		t.Fatalf("%d keys after the restore, want 2000", n)
	}
	if _, err := e.db.Get([]byte("b00001")); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("a key written after the backup survived the restore: %v", err)
	}
	last, _ := e.m.LastSave()
	if last.IsZero() {
		t.Fatal("LastSave is zero after a backup succeeded")
	}
}

// TestRules checks one backup at a time and that a restore runs alone.
func TestRules(t *testing.T) {
	e := newEnv(t)
	put(t, e.db, 20000, "k")
	// An import of a large file keeps the worker busy.
	var buf bytes.Buffer
	for i := range 100000 {
		fmt.Fprintf(&buf, "{\"key\":\"i%07d\",\"value\":\"x\"}\n", i)
	}
	if err := os.WriteFile(filepath.Join(e.backupDir, "big.ndjson"), buf.Bytes(), 0o640); err != nil {
		t.Fatal(err)
	}
	imp := e.submit(t, jobs.Import, jobs.Params{Name: "big.ndjson"})
	b1, ex1, err := e.m.Submit(jobs.Backup, jobs.Params{})
	if err != nil || ex1 {
		t.Fatalf("first backup: %v, existing %v", err, ex1)
	}
	b2, ex2, err := e.m.Submit(jobs.Backup, jobs.Params{})
	if err != nil || !ex2 || b2.ID != b1.ID {
		t.Fatalf("second backup got %s (existing %v, %v), want the first's ID %s", b2.ID, ex2, err, b1.ID)
	}
	if _, _, err := e.m.Submit(jobs.Restore, jobs.Params{Name: "big.ndjson"}); !errors.Is(err, jobs.ErrBusy) {
		t.Fatalf("restore beside other jobs: %v, want ErrBusy", err)
	}
	// Cancel the queued backup, then the running import.
	if r, err := e.m.Cancel(b1.ID); err != nil || r.State != jobs.Canceled {
		t.Fatalf("cancel queued backup: %+v %v", r.State, err)
	}
	e.m.Cancel(imp.ID)
	r := e.wait(t, imp.ID, jobs.Canceled)
	_ = r
	if _, _, err := e.m.Submit("nonsense", jobs.Params{}); !errors.Is(err, jobs.ErrBadParams) {
		t.Fatalf("unknown type: %v", err)
	}
	if _, _, err := e.m.Submit(jobs.Restore, jobs.Params{Name: "../etc/passwd"}); !errors.Is(err, jobs.ErrBadParams) {
		t.Fatalf("a path as a name: %v", err)
	}
}

func writeNDJSON(t *testing.T, path string, n int) {
	var buf bytes.Buffer
	for i := range n {
		fmt.Fprintf(&buf, "{\"key\":\"imp%06d\",\"value\":%q}\n", i, strings.Repeat("z", 100))
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o640); err != nil {
		t.Fatal(err)
	}
}

// TestImport imports NDJSON and RESP and refuses a malformed file with the
// offset of the damage.
func TestImport(t *testing.T) {
	e := newEnv(t)
	writeNDJSON(t, filepath.Join(e.backupDir, "a.ndjson"), 3000)
	r := e.wait(t, e.submit(t, jobs.Import, jobs.Params{Name: "a.ndjson"}).ID, jobs.Succeeded)
	if r.Result.Keys != 3000 || count(t, e.db) != 3000 {
		t.Fatalf("ndjson import: result %+v, %d keys in the store", r.Result, count(t, e.db))
	}
	var resp bytes.Buffer
	for i := range 1000 {
		k, v := fmt.Sprintf("resp%04d", i), "value\r\nwith crlf"
		fmt.Fprintf(&resp, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(k), k, len(v), v)
	}
	os.WriteFile(filepath.Join(e.backupDir, "b.resp"), resp.Bytes(), 0o640)
	r = e.wait(t, e.submit(t, jobs.Import, jobs.Params{Name: "b.resp"}).ID, jobs.Succeeded)
	if r.Result.Keys != 1000 || count(t, e.db) != 4000 {
		t.Fatalf("resp import: result %+v, %d keys in the store", r.Result, count(t, e.db))
	}
	if v, err := e.db.Get([]byte("resp0007")); err != nil || string(v) != "value\r\nwith crlf" {
		t.Fatalf("resp0007 = %q, %v", v, err)
	}
	os.WriteFile(filepath.Join(e.backupDir, "bad.ndjson"), []byte("{\"key\":\"x\",\"value\":\"1\"}\nnot json\n"), 0o640)
	r = e.wait(t, e.submit(t, jobs.Import, jobs.Params{Name: "bad.ndjson"}).ID, jobs.Failed)
	if r.Error.Code != jobs.CodeBadInput || !strings.Contains(r.Error.Message, "at byte 24") {
		t.Fatalf("bad input: %+v", r.Error)
	}
}

// TestImportResume lays out the record of an import that a crash stopped
// half way (its offset and count as the last sync left them) and checks
// that the restart finishes it with the exact key count.
func TestImportResume(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(e.backupDir, "r.ndjson")
	writeNDJSON(t, src, 2000)
	r := e.wait(t, e.submit(t, jobs.Import, jobs.Params{Name: "r.ndjson"}).ID, jobs.Succeeded)
	// The same job, as if caught at line 1000 by a crash.
	e.m.Close()
	b, _ := os.ReadFile(src)
	half := bytes.Index(b, []byte("imp001000"))
	half = bytes.LastIndexByte(b[:half], '\n') + 1
	recPath := filepath.Join(e.dataDir, "jobs", r.ID+".json")
	raw, _ := os.ReadFile(recPath)
	var rec map[string]any
	json.Unmarshal(raw, &rec)
	rec["state"], rec["offset"] = "running", half
	rec["progress"].(map[string]any)["done_keys"] = 1000
	delete(rec, "result")
	delete(rec, "finished_at")
	raw, _ = json.Marshal(rec)
	os.WriteFile(recPath, raw, 0o640)
	// The store lost the second half.
	for i := 1000; i < 2000; i++ {
		e.db.Delete([]byte(fmt.Sprintf("imp%06d", i)), engine.WriteOptions{})
	}
	e.restart(t)
	got := e.wait(t, r.ID, jobs.Succeeded)
	if got.Result.Keys != 2000 || got.Attempt != 2 || count(t, e.db) != 2000 {
		t.Fatalf("resumed import: result %+v, attempt %d, %d keys in the store", got.Result, got.Attempt, count(t, e.db))
	}
	// A changed source is refused on resume.
	os.WriteFile(recPath, raw, 0o640)
	os.WriteFile(src, append(b, "{\"key\":\"more\",\"value\":\"x\"}\n"...), 0o640)
	e.restart(t)
	if got := e.wait(t, r.ID, jobs.Failed); got.Error.Code != jobs.CodeSourceChanged {
		t.Fatalf("changed source: %+v", got.Error)
	}
}

// TestRestartRules: a running restore is failed "interrupted", a running
// backup runs again; finished records are pruned by age and count.
func TestRestartRules(t *testing.T) {
	e := newEnv(t)
	put(t, e.db, 100, "k")
	b := e.wait(t, e.submit(t, jobs.Backup, jobs.Params{}).ID, jobs.Succeeded)
	rs := e.wait(t, e.submit(t, jobs.Restore, jobs.Params{Name: filepath.Base(b.Result.Path)}).ID, jobs.Succeeded)
	e.m.Close()
	for _, id := range []string{b.ID, rs.ID} {
		p := filepath.Join(e.dataDir, "jobs", id+".json")
		raw, _ := os.ReadFile(p)
		raw = bytes.Replace(raw, []byte(`"state": "succeeded"`), []byte(`"state": "running"`), 1)
		os.WriteFile(p, raw, 0o640)
	}
	os.Remove(b.Result.Path)
	e.restart(t)
	if r := e.wait(t, rs.ID, jobs.Failed); r.Error.Code != jobs.CodeInterrupted {
		t.Fatalf("interrupted restore: %+v", r.Error)
	}
	if r := e.wait(t, b.ID, jobs.Succeeded); r.Attempt != 2 {
		t.Fatalf("backup run again: attempt %d", r.Attempt)
	}
	if _, err := os.Stat(b.Result.Path); err != nil {
		t.Fatalf("the backup run again left no file: %v", err)
	}
	// Pruning: at most 3 finished, and none older than an hour.
	e.m.Close()
	now := time.Now()
	clock := func() time.Time { return now }
	o := e.opts()
	o.MaxFinished = 3
	o.Retain = time.Hour
	e.openManager(t, jobs.WithClock(o, clock))
	var ids []string
	for range 5 {
		ids = append(ids, e.wait(t, e.submit(t, jobs.Compact, jobs.Params{Revision: 50}).ID, jobs.Succeeded).ID)
	}
	if l := e.m.List(jobs.Filter{}); len(l) != 3 || l[0].ID != ids[4] {
		t.Fatalf("after pruning by count: %d records, newest %v", len(l), l)
	}
	e.m.Close()
	now = now.Add(2 * time.Hour)
	e.openManager(t, jobs.WithClock(o, clock))
	if l := e.m.List(jobs.Filter{}); len(l) != 0 {
		t.Fatalf("after pruning by age: %d records", len(l))
	}
	// IDs are not reused after pruning.
	if r := e.submit(t, jobs.Verify, jobs.Params{}); r.ID <= ids[4] {
		t.Fatalf("new job got ID %s after %s", r.ID, ids[4])
	}
}

// TestDefragJob deletes most keys and defragments: the state file shrinks
// and the rest of the keys are there.
func TestDefragJob(t *testing.T) {
	e := newEnv(t)
	put(t, e.db, 3000, "d")
	for i := range 2900 {
		e.db.Delete([]byte(fmt.Sprintf("d%05d", i)), engine.WriteOptions{})
	}
	e.restart(t) // checkpoint everything
	r := e.wait(t, e.submit(t, jobs.Defrag, jobs.Params{}).ID, jobs.Succeeded)
	if r.Result == nil || r.Result.Size == 0 || r.Result.Size >= r.Result.SizeBefore {
		t.Fatalf("defrag result %+v", r.Result)
	}
	if n := count(t, e.db); n != 100 {
		t.Fatalf("%d keys after defrag, want 100", n)
	}
}

// TestCompactJob compacts the log and the change history below a revision:
// the result names the history's new oldest revision, a watch from below it
// gets a compacted error naming it, from it on the history is whole, and a
// restart keeps it so.
func TestCompactJob(t *testing.T) {
	e := newEnv(t)
	put(t, e.db, 3000, "c")
	e.restart(t) // checkpoint everything: the history is in the state file
	last := e.db.WrittenRevision()
	r := e.wait(t, e.submit(t, jobs.Compact, jobs.Params{Revision: 2000}).ID, jobs.Succeeded)
	if r.Result == nil || r.Result.OldestRevision != 2000 || r.Result.FirstRevision == 0 || r.Result.FirstRevision > 2000 {
		t.Fatalf("compact result %+v, want oldest_revision 2000", r.Result)
	}
	check := func(when string) {
		t.Helper()
		if got := e.db.OldestRevision(); got != 2000 {
			t.Fatalf("%s: oldest revision %d, want 2000", when, got)
		}
		_, _, err := e.db.Changes(1999, nil, 0, last)
		var ce *engine.CompactedError
		if !errors.As(err, &ce) || ce.Oldest != 2000 {
			t.Fatalf("%s: Changes from 1999: %v, want a compacted error naming 2000", when, err)
		}
		sets, next, err := e.db.Changes(2000, nil, 0, last)
		if err != nil || next != last+1 || uint64(len(sets)) != last+1-2000 || sets[0].Revision != 2000 {
			t.Fatalf("%s: Changes from 2000: %d sets, next %d, %v; want %d, next %d", when, len(sets), next, err, last+1-2000, last+1)
		}
	}
	check("after the job")
	e.restart(t)
	check("after a restart")
	// A revision past the last one compacts everything written, no more.
	r = e.wait(t, e.submit(t, jobs.Compact, jobs.Params{Revision: 1 << 40}).ID, jobs.Succeeded)
	if r.Result == nil || r.Result.OldestRevision != last+1 {
		t.Fatalf("compact past the end: result %+v, want oldest_revision %d", r.Result, last+1)
	}
}
