package engine_test

import (
	"bytes"
	"errors"
	"fmt"
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
	checkMigration(t, "testdata/state-v1", 1, []migratedKey{
		{"b", "2b", 5, 6},
		{"d", "4", 7, 7},
		{"e", "5", 5, 5},
	})
}

// TestMigrateStateV2 opens a directory written by a build of state format
// 2 (testdata/state-v2, see its README): Open migrates the state file to
// format 3, the keys keep the revisions their records had, none has an
// expiry, and a second Open migrates nothing.
func TestMigrateStateV2(t *testing.T) {
	checkMigration(t, "testdata/state-v2", 2, []migratedKey{
		{"b", "2b", 2, 6},
		{"d", "4", 7, 7},
		{"e", "5", 5, 5},
	})
}

type migratedKey struct {
	key, value  string
	create, mod uint64
}

// checkMigration opens a copy of fixture, a store of state format from
// whose state file was checkpointed at revision 5 and which holds the keys
// want (and not a or c) once its log is replayed, twice: the first Open
// logs the migration to format 3, the second migrates nothing, and after
// each the keys, their revisions (and no expiry) are as wanted and Check
// finds a sound format-3 file.
func checkMigration(t *testing.T, fixture string, from int, want []migratedKey) {
	t.Helper()
	dir := t.TempDir()
	copyDir(t, fixture, dir)
	line := fmt.Sprintf(`msg="engine: migrated state file" from=%d to=3 keys=3 rev=5`, from)
	for round, wantLog := range []bool{true, false} {
		var logs bytes.Buffer
		db, err := engine.Open(dir, engine.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(logs.String(), line); got != wantLog {
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
