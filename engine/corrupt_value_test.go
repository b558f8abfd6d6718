package engine_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/kvtest"
)

// TestCorruptValue flips one bit in each part of a stored value record
// (checksum, create and mod revisions, value), and stores another key's
// record under the key: every read of the key fails with ErrCorruptValue,
// logged with the key's length and hex prefix but not the key, and never
// returns data; other keys read as before; an operation that must read
// the value to apply fails the DB; and a rewrite of the record fails the
// checkpoint.
func TestCorruptValue(t *testing.T) {
	const key = "secret-key-name"
	flip := func(off int) func(k, rec []byte) []byte {
		return func(k, rec []byte) []byte {
			rec[min(off, len(rec)-1)] ^= 0x10
			return rec
		}
	}
	pristine := t.TempDir()
	db := open(t, pristine, engine.Options{})
	mustPut(t, db, "a", "1")
	mustPut(t, db, key, "the value")
	mustPut(t, db, "z", "the value")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	var zRec []byte
	kvtest.DamageValue(t, pristine, "z", func(k, rec []byte) []byte { zRec = bytes.Clone(rec); return rec })

	for _, tc := range []struct {
		name   string
		damage func(k, rec []byte) []byte
	}{
		{"checksum", flip(0)},
		{"create", flip(7)},
		{"mod", flip(15)},
		{"value", flip(24)},
		{"short", func(k, rec []byte) []byte { return rec[:19] }},
		{"another key's record", func(k, rec []byte) []byte { return bytes.Clone(zRec) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			copyDir(t, pristine, dir)
			kvtest.DamageValue(t, dir, key, tc.damage)
			var logs bytes.Buffer
			db := open(t, dir, engine.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			wantCorrupt := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, engine.ErrCorruptValue) {
					t.Errorf("%s: %v, want ErrCorruptValue", what, err)
				}
			}
			v, err := db.Get([]byte(key))
			wantCorrupt("Get", err)
			if v != nil {
				t.Errorf("Get returned %q with its error", v)
			}
			_, err = db.GetEntry([]byte(key))
			wantCorrupt("GetEntry", err)
			_, err = db.AppendGet(nil, []byte(key))
			wantCorrupt("AppendGet", err)
			called := 0
			err = db.GetEach([][]byte{[]byte("a"), []byte(key)}, func(i int, v []byte, found bool) { called++ })
			wantCorrupt("GetEach", err)
			if called != 1 {
				t.Errorf("GetEach called fn %d times, want 1 (for a)", called)
			}
			_, err = db.Scan(engine.ScanOptions{})
			wantCorrupt("Scan", err)
			_, err = db.Count()
			wantCorrupt("Count", err)
			wantGet(t, db, "a", "1")
			if kvs, err := db.Scan(engine.ScanOptions{Limit: 1}); err != nil || len(kvs) != 1 {
				t.Errorf("Scan of a alone: %d pairs, %v", len(kvs), err)
			}

			l := logs.String()
			if !strings.Contains(l, "engine: corrupt value in the state file") ||
				!strings.Contains(l, "key_len=15") || !strings.Contains(l, "key_prefix=7365637265742d6b") {
				t.Errorf("the corruption was not logged with the key's length and prefix:\n%s", l)
			}
			if strings.Contains(l, key) {
				t.Errorf("the key was logged:\n%s", l)
			}

			// An op that reads the value fails the DB, changing nothing.
			var b engine.Batch
			b.Put([]byte("a"), []byte("2"))
			b.IncrBy([]byte(key), 1)
			_, err = db.Write(&b, engine.WriteOptions{})
			wantCorrupt("a write reading the value", err)
			if !errors.Is(err, engine.ErrLogFailed) {
				t.Errorf("a write reading the value: %v, want ErrLogFailed", err)
			}
			wantGet(t, db, "a", "1")
		})
	}

	t.Run("checkpoint over it", func(t *testing.T) {
		dir := t.TempDir()
		copyDir(t, pristine, dir)
		kvtest.DamageValue(t, dir, key, flip(24))
		db, err := engine.Open(dir, engine.Options{})
		if err != nil {
			t.Fatal(err)
		}
		// A blind put does not read the value; the checkpoint does, for
		// the key's create revision.
		mustPut(t, db, key, "new")
		if err := db.Close(); !errors.Is(err, engine.ErrCorruptValue) {
			t.Errorf("Close (checkpoint) over a corrupt value: %v, want ErrCorruptValue", err)
		}
	})
}
