package engine_test

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/kvtest"
)

const faultKeys = 600

func faultKey(i int) string { return fmt.Sprintf("key-%04d", i) }
func faultValue(i int) string {
	return fmt.Sprintf("value-%04d-%s", i, strings.Repeat("v", 90))
}

// buildFaultState writes faultKeys keys in one batch into a new store in
// dir and closes it, which checkpoints them: a state file whose kv bucket
// is a tree of a branch page over some 25 leaf pages, the same on every
// run.
func buildFaultState(t testing.TB, dir string) {
	t.Helper()
	db := open(t, dir, engine.Options{})
	var b engine.Batch
	for i := range faultKeys {
		b.Put([]byte(faultKey(i)), []byte(faultValue(i)))
	}
	if _, err := db.Write(&b, engine.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// stateDamage is a bit flip in the state file and what it must cause.
type stateDamage struct {
	name string
	// flip damages the file (its pages given) and returns the page Check
	// must name and the keys that reads may fail on (nil: any key).
	flip func(t testing.TB, path string, pages []kvtest.BoltPage, f []byte) (page uint64, hit [][]byte)
	// faults: reads of the hit keys fault or panic in bbolt; without the
	// recover of fault.go the process dies. Then some reads must fail with
	// a corrupt error and Stats must count them.
	faults bool
	// notFound: reads of the hit keys may find nothing (bbolt's search
	// goes astray without faulting; only Check sees the damage).
	notFound bool
	want     string // in the text of Check's problem on the page
}

// leaves returns the leaf pages, in key order.
func leaves(pages []kvtest.BoltPage) []kvtest.BoltPage {
	var out []kvtest.BoltPage
	for _, p := range pages {
		if !p.Branch {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b kvtest.BoltPage) int { return bytes.Compare(a.Keys[0], b.Keys[0]) })
	return out
}

// underChild returns the keys of the leaves under child i of the root.
func underChild(pages []kvtest.BoltPage, i int) [][]byte {
	root := pages[0]
	for _, p := range pages {
		if p.ID == root.Children[i] {
			if p.Branch {
				panic("a tree deeper than two levels")
			}
			return p.Keys
		}
	}
	panic("child not found")
}

var stateDamages = []stateDamage{
	{
		name: "value",
		flip: func(t testing.TB, path string, pages []kvtest.BoltPage, f []byte) (uint64, [][]byte) {
			l := leaves(pages)[5]
			kvtest.XorFile(t, path, l.LeafValueOff(t, f, 3)+30, 0x04)
			return l.ID, l.Keys[3:4]
		},
		faults: true, // not a fault, but a checksum mismatch, counted the same
		want:   "does not match its checksum",
	},
	{
		name: "leaf flags",
		flip: func(t testing.TB, path string, pages []kvtest.BoltPage, f []byte) (uint64, [][]byte) {
			l := leaves(pages)[7]
			kvtest.XorFile(t, path, l.Offset+kvtest.PageFlagsOff, 0x04) // leaf 0x02 -> 0x06
			return l.ID, l.Keys
		},
		faults: true, // bbolt: "invalid page type"
		want:   "page flags 0x6",
	},
	{
		name: "leaf count",
		flip: func(t testing.TB, path string, pages []kvtest.BoltPage, f []byte) (uint64, [][]byte) {
			l := leaves(pages)[9]
			kvtest.XorFile(t, path, l.Offset+kvtest.PageCountOff+1, 0x80) // count + 0x8000
			return l.ID, l.Keys
		},
		notFound: true,
		want:     "do not fit",
	},
	{
		name: "leaf overflow",
		flip: func(t testing.TB, path string, pages []kvtest.BoltPage, f []byte) (uint64, [][]byte) {
			l := leaves(pages)[11]
			kvtest.XorFile(t, path, l.Offset+kvtest.PageOverflowOff+3, 0x01) // overflow + 2^24 pages
			return l.ID, [][]byte{}                                          // reads do not use it
		},
		want: "runs past the file",
	},
	{
		name: "branch pgid",
		flip: func(t testing.TB, path string, pages []kvtest.BoltPage, f []byte) (uint64, [][]byte) {
			root := pages[0]
			kvtest.XorFile(t, path, root.BranchElemOff(4)+8+5, 0x01) // pgid + 2^40
			return 0, underChild(pages, 4)
		},
		faults: true, // SIGSEGV far past the map
		want:   "outside the file's pages",
	},
	{
		name: "branch pos",
		flip: func(t testing.TB, path string, pages []kvtest.BoltPage, f []byte) (uint64, [][]byte) {
			root := pages[0]
			kvtest.XorFile(t, path, root.BranchElemOff(6)+3, 0x40) // pos + 1 GiB
			return root.ID, nil                                    // every search compares with its key
		},
		// 1 GiB past the page is usually unmapped, but the race
		// detector maps far more of the address space: there the key
		// read may be readable garbage, which routes searches without a
		// fault (seen once), or astray. No wrong data either way.
		faults:   !raceEnabled,
		notFound: raceEnabled,
		want:     "branch element 6",
	},
}

// TestStateFileDamage flips bits in the value records, the leaf page
// headers and the branch page elements of a state file and reads every key:
// the DB never crashes and never returns wrong data; a read either returns
// the key's value or a corrupt error (or, where bbolt's search goes astray
// without faulting, finds nothing); keys elsewhere read as before; a read
// that met damage counts in Stats; and Check names the damaged page.
//
// It runs in a process of its own: a damaged branch offset must point at
// memory nobody mapped, which the allocations of tests run before it in
// the same process can make untrue.
func TestStateFileDamage(t *testing.T) {
	if kvtest.InSubprocess(t) {
		return
	}
	pristine := t.TempDir()
	buildFaultState(t, pristine)
	pages, _ := kvtest.StatePages(t, filepath.Join(pristine, "state.db"), "kv")
	if len(pages) < 20 || !pages[0].Branch || pages[0].Count < 10 {
		t.Fatalf("the state file has %d pages under a root of %d children; the test wants a branch over 20 leaves", len(pages), pages[0].Count)
	}
	if r, err := engine.Check(pristine, engine.CheckOptions{}); err != nil || !r.OK() || r.Keys != faultKeys || r.Format != "3" {
		t.Fatalf("Check of the undamaged store: %+v, %v", r, err)
	}

	for _, tc := range stateDamages {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			copyDir(t, pristine, dir)
			path := filepath.Join(dir, "state.db")
			pages, f := kvtest.StatePages(t, path, "kv")
			page, hit := tc.flip(t, path, pages, f)
			isHit := func(k string) bool {
				return hit == nil || slices.ContainsFunc(hit, func(h []byte) bool { return string(h) == k })
			}

			r, err := engine.Check(dir, engine.CheckOptions{})
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			found := false
			for _, p := range r.Problems {
				t.Logf("Check: %s", p)
				if (page == 0 || p.Page == page) && strings.Contains(p.What, tc.want) {
					found = true
				}
			}
			if r.OK() || !found {
				t.Errorf("Check did not report %q on page %d: %+v", tc.want, page, r.Problems)
			}

			db := open(t, dir, engine.Options{})
			corrupt := 0
			check := func(what, k string, v []byte, err error) {
				t.Helper()
				switch {
				case err == nil:
					if i := keyIndex(k); string(v) != faultValue(i) {
						t.Errorf("%s(%s) returned wrong data %.20q", what, k, v)
					}
				case errors.Is(err, engine.ErrCorruptState), errors.Is(err, engine.ErrCorruptValue):
					corrupt++
					if !isHit(k) {
						t.Errorf("%s(%s), a key away from the damage: %v", what, k, err)
					}
				case errors.Is(err, engine.ErrNotFound) && tc.notFound && isHit(k):
				default:
					t.Errorf("%s(%s): %v", what, k, err)
				}
			}
			for i := range faultKeys {
				k := faultKey(i)
				v, err := db.Get([]byte(k))
				check("Get", k, v, err)
				e, err := db.GetEntry([]byte(k))
				check("GetEntry", k, e.Value, err)
				err = db.GetEach([][]byte{[]byte(k)}, func(_ int, v []byte, found bool) {
					if !found {
						check("GetEach", k, nil, engine.ErrNotFound)
						return
					}
					check("GetEach", k, v, nil)
				})
				if err != nil {
					check("GetEach", k, nil, err)
				}
			}
			kvs, scanErr := db.Scan(engine.ScanOptions{})
			for _, kv := range kvs {
				if string(kv.Value) != faultValue(keyIndex(string(kv.Key))) {
					t.Errorf("Scan returned wrong data for %q", kv.Key)
				}
			}
			_, countErr := db.Count()
			t.Logf("Scan: %d pairs, %v; Count: %v; %d corrupt reads", len(kvs), scanErr, countErr, corrupt)
			for _, err := range []error{scanErr, countErr} {
				if err != nil && !errors.Is(err, engine.ErrCorruptState) && !errors.Is(err, engine.ErrCorruptValue) {
					t.Errorf("Scan or Count: %v", err)
				}
			}
			st := db.Stats()
			if tc.faults {
				if corrupt == 0 {
					t.Errorf("no read met the damage")
				}
				if st.Corruptions == 0 || st.CorruptionErr == nil || st.CorruptionTime.IsZero() {
					t.Errorf("Stats after corrupt reads: %d corruptions, %v at %v", st.Corruptions, st.CorruptionErr, st.CorruptionTime)
				}
			}
			if (corrupt > 0 || scanErr != nil) != (st.Corruptions > 0) {
				t.Errorf("%d corrupt reads (scan: %v), Stats counts %d", corrupt, scanErr, st.Corruptions)
			}
			// Writes of keys away from the damage, and their checkpoint,
			// still work.
			mustPut(t, db, "zzz-new", "x")
			db.Close()
		})
	}
}

func keyIndex(k string) int {
	var i int
	if _, err := fmt.Sscanf(k, "key-%d", &i); err != nil {
		return -1
	}
	return i
}

// TestCheckpointOverDamagedPage: a checkpoint that writes a key whose leaf
// page is damaged fails the DB with ErrCorruptState rather than crashing.
func TestCheckpointOverDamagedPage(t *testing.T) {
	dir := t.TempDir()
	buildFaultState(t, dir)
	path := filepath.Join(dir, "state.db")
	pages, _ := kvtest.StatePages(t, path, "kv")
	l := leaves(pages)[7]
	kvtest.XorFile(t, path, l.Offset+kvtest.PageFlagsOff, 0x04)
	db, err := engine.Open(dir, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, db, string(l.Keys[0]), "new")
	err = db.Close()
	if !errors.Is(err, engine.ErrCorruptState) {
		t.Errorf("Close (checkpoint) over a damaged page: %v, want ErrCorruptState", err)
	}
}

// TestCheckLocked: Check refuses a store that a process has open.
func TestCheckLocked(t *testing.T) {
	dir := t.TempDir()
	buildFaultState(t, dir)
	db := open(t, dir, engine.Options{})
	defer db.Close()
	if _, err := engine.Check(dir, engine.CheckOptions{}); !errors.Is(err, engine.ErrLocked) {
		t.Errorf("Check of an open store: %v, want ErrLocked", err)
	}
}
