package engine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestRestoreCrashPoints lays out the data directory as a crash at each
// step of a staged restore leaves it, opens it, and checks that the store
// is the old one or the new one, never a mix (the new store's state with
// the old log's records replayed over it, say).
func TestRestoreCrashPoints(t *testing.T) {
	// The new store: 50 revisions. Its state file, as staged.
	src := t.TempDir()
	sdb, err := Open(src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := sdb.Put([]byte(fmt.Sprintf("new%02d", i)), []byte("n"), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	snap, err := sdb.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Close()
	sdb.Close()
	restored := filepath.Join(t.TempDir(), "r")
	if _, err := RestoreSnapshot(bytes.NewReader(buf.Bytes()), restored); err != nil {
		t.Fatal(err)
	}
	staged, err := os.ReadFile(filepath.Join(restored, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := fileSHA256(filepath.Join(restored, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	mark, _ := json.Marshal(restoreMark{Revision: 50, SHA256: sum})
	badMark, _ := json.Marshal(restoreMark{Revision: 50, SHA256: "00" + sum[2:]})

	// The old store: 120 revisions, its log keeping them all.
	oldStore := func(t *testing.T) string {
		dir := t.TempDir()
		db, err := Open(dir, Options{WALRetain: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 120 {
			if _, err := db.Put([]byte(fmt.Sprintf("old%03d", i)), []byte("o"), WriteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		db.Close()
		return dir
	}
	write := func(t *testing.T, path string, b []byte) {
		if err := os.WriteFile(path, b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name    string
		layout  func(t *testing.T, dir string)
		wantNew bool
	}{
		{"staging torn, no marker", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, restoreStaged), staged[:len(staged)/2])
		}, false},
		{"staged, no marker", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, restoreStaged), staged)
		}, false},
		{"staged and marker", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, restoreStaged), staged)
			write(t, filepath.Join(dir, restoreMarker), mark)
		}, true},
		{"staged file renamed, old log left", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "state.db"), staged)
			write(t, filepath.Join(dir, restoreMarker), mark)
		}, true},
		{"log removed, marker left", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, "state.db"), staged)
			if err := os.RemoveAll(filepath.Join(dir, "wal")); err != nil {
				t.Fatal(err)
			}
			write(t, filepath.Join(dir, restoreMarker), mark)
		}, true},
		{"staged file not matching its marker", func(t *testing.T, dir string) {
			write(t, filepath.Join(dir, restoreStaged), staged)
			write(t, filepath.Join(dir, restoreMarker), badMark)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := oldStore(t)
			tc.layout(t, dir)
			db, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			n, err := db.Count()
			if err != nil {
				t.Fatal(err)
			}
			_, oldErr := db.Get([]byte("old000"))
			_, newErr := db.Get([]byte("new00"))
			rev := db.WrittenRevision()
			switch {
			case tc.wantNew && (n != 50 || oldErr == nil || newErr != nil || rev != 50):
				t.Fatalf("want the new store (50 keys at revision 50): %d keys at revision %d, old key: %v, new key: %v", n, rev, oldErr, newErr)
			case !tc.wantNew && (n != 120 || oldErr != nil || newErr == nil || rev != 120):
				t.Fatalf("want the old store (120 keys at revision 120): %d keys at revision %d, old key: %v, new key: %v", n, rev, oldErr, newErr)
			}
			for _, f := range []string{restoreStaged, restoreMarker} {
				if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
					t.Errorf("%s left after Open", f)
				}
			}
		})
	}
}
