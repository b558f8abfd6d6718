package engine_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/kvdstore/kvd/engine"
)

// TestMigrateStateV1 opens a directory written by a build of state format
// 1 (testdata/state-v1, see its README): Open migrates the state file,
// gives its keys create = mod = the revision it was checkpointed at, and
// the keys the log then replays the revisions of their records. A second
// Open finds format 3 and migrates nothing.
func TestMigrateStateV1(t *testing.T) {
	dir := t.TempDir()
	copyDir(t, "testdata/state-v1", dir)
	want := []struct {
		key, value  string
		create, mod uint64
	}{
		{"b", "2b", 5, 6},
		{"d", "4", 7, 7},
		{"e", "5", 5, 5},
	}
	for round, wantLog := range []bool{true, false} {
		var logs bytes.Buffer
		db, err := engine.Open(dir, engine.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(logs.String(), `msg="engine: migrated state file" from=1 to=3 keys=3 rev=5`); got != wantLog {
			t.Errorf("open %d: logged the migration: %v, want %v; log:\n%s", round, got, wantLog, logs.String())
		}
		for _, w := range want {
			e, err := db.GetEntry([]byte(w.key))
			if err != nil || string(e.Value) != w.value || e.CreateRevision != w.create || e.ModRevision != w.mod {
				t.Errorf("open %d: GetEntry(%s) = %q create %d mod %d, %v; want %q create %d mod %d",
					round, w.key, e.Value, e.CreateRevision, e.ModRevision, err, w.value, w.create, w.mod)
			}
		}
		for _, k := range []string{"a", "c"} {
			if _, err := db.GetEntry([]byte(k)); !errors.Is(err, engine.ErrNotFound) {
				t.Errorf("open %d: GetEntry(%s): %v, want ErrNotFound", round, k, err)
			}
		}
		if n, err := db.Count(); err != nil || n != len(want) {
			t.Errorf("open %d: Count = %d, %v; want %d", round, n, err, len(want))
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDeleteAndSetAgainIsCreatedAgain: a key deleted and set again gets a
// new create revision; one set again without a deletion keeps its own.
func TestDeleteAndSetAgainIsCreatedAgain(t *testing.T) {
	db := open(t, t.TempDir(), engine.Options{})
	r1 := mustPut(t, db, "k", "1")
	r2 := mustPut(t, db, "k", "2")
	if e, err := db.GetEntry([]byte("k")); err != nil || e.CreateRevision != r1 || e.ModRevision != r2 {
		t.Fatalf("after two puts: %+v, %v; want create %d mod %d", e, err, r1, r2)
	}
	if _, err := db.Delete([]byte("k"), engine.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	r4 := mustPut(t, db, "k", "3")
	if e, err := db.GetEntry([]byte("k")); err != nil || e.CreateRevision != r4 || e.ModRevision != r4 {
		t.Fatalf("after delete and put: %+v, %v; want create %d mod %d", e, err, r4, r4)
	}
}

// TestMigrateStateV2 opens a directory written by a build of state format
// 2 (testdata/state-v2, see its README): Open migrates the state file to
// format 3, the keys keep the revisions their records had, none has an
// expiry, and a second Open migrates nothing.
func TestMigrateStateV2(t *testing.T) {
	dir := t.TempDir()
	copyDir(t, "testdata/state-v2", dir)
	want := []struct {
		key, value  string
		create, mod uint64
	}{
		{"b", "2b", 2, 6},
		{"d", "4", 7, 7},
		{"e", "5", 5, 5},
	}
	for round, wantLog := range []bool{true, false} {
		var logs bytes.Buffer
		db, err := engine.Open(dir, engine.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(logs.String(), `msg="engine: migrated state file" from=2 to=3 keys=3 rev=5`); got != wantLog {
			t.Errorf("open %d: logged the migration: %v, want %v; log:\n%s", round, got, wantLog, logs.String())
		}
		for _, w := range want {
			e, err := db.GetEntry([]byte(w.key))
			if err != nil || string(e.Value) != w.value || e.CreateRevision != w.create || e.ModRevision != w.mod || e.ExpiresAt != 0 {
				t.Errorf("open %d: GetEntry(%s) = %+v, %v; want %q create %d mod %d, no expiry",
					round, w.key, e, err, w.value, w.create, w.mod)
			}
		}
		for _, k := range []string{"a", "c"} {
			if _, err := db.GetEntry([]byte(k)); !errors.Is(err, engine.ErrNotFound) {
				t.Errorf("open %d: GetEntry(%s): %v, want ErrNotFound", round, k, err)
			}
		}
		if n, err := db.Count(); err != nil || n != len(want) {
			t.Errorf("open %d: Count = %d, %v; want %d", round, n, err, len(want))
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if r, err := engine.Check(dir, engine.CheckOptions{}); err != nil || !r.OK() || r.Format != "3" || r.Keys != len(want) {
			t.Errorf("open %d: Check after Close: %+v, %v", round, r, err)
		}
	}
}
