package engine_test

import (
	"errors"
	"testing"

	"github.com/kvdstore/kvd/engine"
)

// write commits the batch that build makes and returns its results.
func write(t testing.TB, db *engine.DB, build func(b *engine.Batch)) []engine.Result {
	t.Helper()
	var b engine.Batch
	build(&b)
	if _, err := db.Write(&b, engine.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(b.Results()) != b.Len() {
		t.Fatalf("%d results for %d ops", len(b.Results()), b.Len())
	}
	return b.Results()
}

func TestIncrBy(t *testing.T) {
	db := open(t, t.TempDir(), engine.Options{})
	k := []byte("n")
	for _, c := range []struct {
		set   string // "" leaves the key as it is
		delta int64
		int   int64
		err   error
		after string
	}{
		{"", 5, 5, nil, "5"}, // a missing key counts as 0
		{"", -7, -2, nil, "-2"},
		{"9223372036854775807", 1, 0, engine.ErrOverflow, "9223372036854775807"},
		{"-9223372036854775808", -1, 0, engine.ErrOverflow, "-9223372036854775808"},
		{"-9223372036854775808", 1, -9223372036854775807, nil, "-9223372036854775807"},
		{"abc", 1, 0, engine.ErrNotInteger, "abc"},
		{"01", 1, 0, engine.ErrNotInteger, "01"},
		{"-0", 1, 0, engine.ErrNotInteger, "-0"},
		{" 1", 1, 0, engine.ErrNotInteger, " 1"},
		{"+1", 1, 0, engine.ErrNotInteger, "+1"},
		{"<empty>", 1, 0, engine.ErrNotInteger, ""},
		{"0", 0, 0, nil, "0"},
		{"-10", 3, -7, nil, "-7"},
	} {
		switch c.set {
		case "":
		case "<empty>":
			mustPut(t, db, "n", "")
		default:
			mustPut(t, db, "n", c.set)
		}
		r := write(t, db, func(b *engine.Batch) { b.IncrBy(k, c.delta) })[0]
		if !errors.Is(r.Err, c.err) || (c.err == nil) != r.Applied || r.Int != c.int {
			t.Errorf("%q incr by %d: %+v, want int %d err %v", c.set, c.delta, r, c.int, c.err)
		}
		wantGet(t, db, "n", c.after)
	}
}

// TestOpErrorDoesNotAbortBatch: an op's error is its result; the other ops
// of its batch still apply, and see the state without it.
func TestOpErrorDoesNotAbortBatch(t *testing.T) {
	db := open(t, t.TempDir(), engine.Options{})
	mustPut(t, db, "s", "text")
	rs := write(t, db, func(b *engine.Batch) {
		b.Put([]byte("a"), []byte("1"))
		b.IncrBy([]byte("s"), 1)
		b.IncrBy([]byte("a"), 1)
	})
	if !rs[0].Applied || !errors.Is(rs[1].Err, engine.ErrNotInteger) || rs[1].Applied || rs[2].Int != 2 {
		t.Fatalf("results %+v", rs)
	}
	wantGet(t, db, "s", "text")
	wantGet(t, db, "a", "2")
}

func TestPutIf(t *testing.T) {
	db := open(t, t.TempDir(), engine.Options{})
	k := []byte("k")
	for _, c := range []struct {
		name    string
		before  string // "<missing>" or a value
		cond    engine.PutCond
		applied bool
		old     string // "<nil>" when Old must be nil
		after   string
	}{
		{"NX absent", "<missing>", engine.IfAbsent, true, "<nil>", "new"},
		{"NX present", "v", engine.IfAbsent, false, "<nil>", "v"},
		{"XX absent", "<missing>", engine.IfPresent, false, "<nil>", "<missing>"},
		{"XX present", "v", engine.IfPresent, true, "<nil>", "new"},
		{"GET absent", "<missing>", engine.ReturnOld, true, "<nil>", "new"},
		{"GET present", "v", engine.ReturnOld, true, "v", "new"},
		{"GET empty", "", engine.ReturnOld, true, "", "new"},
		{"NX GET present", "v", engine.IfAbsent | engine.ReturnOld, false, "v", "v"},
		{"XX GET absent", "<missing>", engine.IfPresent | engine.ReturnOld, false, "<nil>", "<missing>"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.before == "<missing>" {
				if _, err := db.Delete(k, engine.WriteOptions{}); err != nil {
					t.Fatal(err)
				}
			} else {
				mustPut(t, db, "k", c.before)
			}
			r := write(t, db, func(b *engine.Batch) { b.PutIf(k, []byte("new"), c.cond) })[0]
			if r.Applied != c.applied {
				t.Errorf("applied %v, want %v", r.Applied, c.applied)
			}
			if c.old == "<nil>" && r.Old != nil || c.old != "<nil>" && (r.Old == nil || string(r.Old) != c.old) {
				t.Errorf("old %q (nil %v), want %q", r.Old, r.Old == nil, c.old)
			}
			wantGet(t, db, "k", c.after)
		})
	}
	var bad engine.Batch
	bad.PutIf(k, nil, engine.IfAbsent|engine.IfPresent)
	if _, err := db.Write(&bad, engine.WriteOptions{}); !errors.Is(err, engine.ErrBadBatch) {
		t.Fatalf("NX and XX together: %v, want ErrBadBatch", err)
	}
}

// TestDeleteCount: a delete's result says whether the key held a value, in
// the state left by earlier ops of its batch (DEL a a b counts 1).
func TestDeleteCount(t *testing.T) {
	db := open(t, t.TempDir(), engine.Options{})
	mustPut(t, db, "a", "1")
	mustPut(t, db, "e", "")
	rs := write(t, db, func(b *engine.Batch) {
		b.Delete([]byte("a"))
		b.Delete([]byte("a"))
		b.Delete([]byte("b"))
		b.Delete([]byte("e"))
		b.Put([]byte("c"), []byte("3"))
		b.Delete([]byte("c"))
	})
	want := []bool{true, false, false, true, true, true}
	for i, r := range rs {
		if r.Applied != want[i] {
			t.Fatalf("op %d applied %v, want %v (%+v)", i, r.Applied, want[i], rs)
		}
	}
	wantGet(t, db, "a", "<missing>")
	wantGet(t, db, "c", "<missing>")
}

// TestConditionsReadTheStateFile evaluates ops on keys that a checkpoint
// (here, Close) moved out of memory, and reads results after Submit.
func TestConditionsReadTheStateFile(t *testing.T) {
	dir := t.TempDir()
	db, err := engine.Open(dir, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, db, "n", "41")
	mustPut(t, db, "v", "old")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir, engine.Options{})
	var b engine.Batch
	b.IncrBy([]byte("n"), 1)
	b.PutIf([]byte("v"), []byte("x"), engine.IfAbsent|engine.ReturnOld)
	b.Delete([]byte("v"))
	c, err := db.Submit(&b, engine.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitWritten(); err != nil {
		t.Fatal(err)
	}
	rs := b.Results()
	if len(rs) != 3 || rs[0].Int != 42 || rs[1].Applied || string(rs[1].Old) != "old" || !rs[2].Applied {
		t.Fatalf("results %+v", rs)
	}
	b.Reset()
	if b.Results() != nil && len(b.Results()) != 0 {
		t.Fatalf("results after Reset: %+v", b.Results())
	}
}

func TestApplyRefusesBadPayload(t *testing.T) {
	db := open(t, t.TempDir(), engine.Options{})
	if _, err := db.Apply(1, []byte{0, 0, 0, 0, 1, 9}, engine.WriteOptions{}); !errors.Is(err, engine.ErrBadBatch) {
		t.Fatalf("apply of a malformed batch: %v, want ErrBadBatch", err)
	}
	if r := db.WrittenRevision(); r != 0 {
		t.Fatalf("revision %d after a refused apply", r)
	}
}

// TestCompareAndSet: a compare-and-set puts or deletes only if the key's
// mod revision is the one given (0: only if it holds no value), evaluated
// when its batch is applied, against the memtables, the state file and the
// batch's own earlier ops; its Result reports whether it applied and the
// key's mod revision after it.
func TestCompareAndSet(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, engine.Options{})
	cas := func(key, value string, rev uint64) engine.Result {
		t.Helper()
		return write(t, db, func(b *engine.Batch) { b.CompareAndPut([]byte(key), []byte(value), rev) })[0]
	}
	casDel := func(key string, rev uint64) engine.Result {
		t.Helper()
		return write(t, db, func(b *engine.Batch) { b.CompareAndDelete([]byte(key), rev) })[0]
	}
	want := func(what string, r engine.Result, applied bool, mod uint64) {
		t.Helper()
		if r.Applied != applied || r.ModRevision != mod {
			t.Errorf("%s: applied %v, mod revision %d; want %v, %d", what, r.Applied, r.ModRevision, applied, mod)
		}
	}
	r1 := db.WrittenRevision() + 1
	want("create absent k with 0", cas("k", "1", 0), true, r1)
	want("create present k with 0", cas("k", "2", 0), false, r1)
	want("put k with a wrong revision", cas("k", "2", r1+1), false, r1)
	wantGet(t, db, "k", "1")
	want("put k with its revision", cas("k", "2", r1), true, r1+3)
	if e, err := db.GetEntry([]byte("k")); err != nil || string(e.Value) != "2" || e.CreateRevision != r1 || e.ModRevision != r1+3 {
		t.Errorf("GetEntry(k) = %+v, %v; want 2 created %d modified %d", e, err, r1, r1+3)
	}
	want("delete k with a wrong revision", casDel("k", r1), false, r1+3)
	wantGet(t, db, "k", "2")
	want("delete absent x with 0", casDel("x", 0), true, 0)
	want("delete absent x with 1", casDel("x", 1), false, 0)
	want("put absent x with 1", cas("x", "1", 1), false, 0)
	wantGet(t, db, "x", "<missing>")

	// Against the state file, after a checkpoint.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir, engine.Options{})
	want("delete k with its revision, from the state file", casDel("k", r1+3), true, 0)
	wantGet(t, db, "k", "<missing>")

	// Against the batch's own earlier op, and at apply time: of two
	// batches queued before either is applied, only the first creates.
	var b1, b2 engine.Batch
	b1.Put([]byte("n"), []byte("a"))
	b1.CompareAndPut([]byte("n"), []byte("b"), db.WrittenRevision()+1)
	b2.CompareAndPut([]byte("m"), []byte("2"), 0)
	b1.CompareAndPut([]byte("m"), []byte("1"), 0)
	c1, err := db.Submit(&b1, engine.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := db.Submit(&b2, engine.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rev1, rev2 := c1.Revision(), c2.Revision()
	if err := c2.WaitWritten(); err != nil {
		t.Fatal(err)
	}
	if err := c1.WaitWritten(); err != nil {
		t.Fatal(err)
	}
	want("cas after the batch's own put", b1.Results()[1], true, rev1)
	want("first cas of m", b1.Results()[2], true, rev1)
	want("second cas of m", b2.Results()[0], false, rev1)
	if rev2 != rev1+1 {
		t.Fatalf("revisions %d, %d", rev1, rev2)
	}
	wantGet(t, db, "n", "b")
	wantGet(t, db, "m", "1")
}

// TestGetReadsBatchState: a get op reads the key as the batch's earlier
// ops left it, with its revisions, and writes nothing; the create revision
// comes from the state file when a checkpoint moved the key there.
func TestGetReadsBatchState(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, engine.Options{})
	r1 := mustPut(t, db, "a", "old")
	r2 := r1 + 1
	type want struct {
		applied     bool
		old         string // "<nil>" for a nil Old
		mod, create uint64
	}
	check := func(rs []engine.Result, wants map[int]want) {
		t.Helper()
		for i, w := range wants {
			r := rs[i]
			old := string(r.Old)
			if r.Old == nil {
				old = "<nil>"
			}
			if r.Applied != w.applied || old != w.old || r.ModRevision != w.mod || r.CreateRevision != w.create || r.Err != nil {
				t.Errorf("op %d: %+v, want %+v", i, r, w)
			}
		}
	}
	rs := write(t, db, func(b *engine.Batch) {
		b.Get([]byte("a"))
		b.Put([]byte("a"), []byte("new"))
		b.Get([]byte("a"))
		b.Get([]byte("none"))
		b.Put([]byte("e"), nil)
		b.Get([]byte("e"))
		b.Delete([]byte("a"))
		b.Get([]byte("a"))
	})
	check(rs, map[int]want{
		0: {true, "old", r1, r1}, 2: {true, "new", r2, r1}, 3: {false, "<nil>", 0, 0},
		5: {true, "", r2, r2}, 7: {false, "<nil>", 0, 0},
	})
	wantGet(t, db, "a", "<missing>")
	wantGet(t, db, "none", "<missing>")

	// e is in the state file after Close; a put in the memtable keeps
	// its create revision.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir, engine.Options{})
	r3 := mustPut(t, db, "e", "again")
	rs = write(t, db, func(b *engine.Batch) { b.Get([]byte("e")) })
	check(rs, map[int]want{0: {true, "again", r3, r2}})
}

// TestRequireAborts: a failed require op makes its batch apply nothing,
// wherever it stands, yet the batch takes its revision; one that holds lets
// the batch apply.
func TestRequireAborts(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, engine.Options{})
	ra := mustPut(t, db, "a", "1")
	mustPut(t, db, "n", "5")
	batch := func(b *engine.Batch, aRev, zRev uint64) {
		b.Put([]byte("a"), []byte("2"))
		b.IncrBy([]byte("n"), 1)
		b.Require([]byte("a"), aRev)
		b.Delete([]byte("n"))
		b.Get([]byte("a"))
		b.Require([]byte("z"), zRev)
	}
	for _, c := range []struct {
		name       string
		aRev, zRev uint64
	}{
		{"a changed", ra + 1, 0},
		{"z absent, required present", ra, 7},
	} {
		before := db.WrittenRevision()
		var b engine.Batch
		batch(&b, c.aRev, c.zRev)
		rev, err := db.Write(&b, engine.WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if rev != before+1 || !b.Aborted() {
			t.Fatalf("%s: revision %d after %d, aborted %v", c.name, rev, before, b.Aborted())
		}
		for i, r := range b.Results() {
			if !errors.Is(r.Err, engine.ErrRequireFailed) {
				t.Errorf("%s: op %d result %+v, want ErrRequireFailed", c.name, i, r)
			}
			if i != 2 && i != 5 && (r.Applied || r.Old != nil) {
				t.Errorf("%s: op %d result %+v after an abort", c.name, i, r)
			}
		}
		if r := b.Results()[2]; r.ModRevision != ra || r.Applied != (c.aRev == ra) {
			t.Errorf("%s: require a: %+v, want mod revision %d", c.name, r, ra)
		}
		wantGet(t, db, "a", "1")
		wantGet(t, db, "n", "5")
		if e, err := db.GetEntry([]byte("a")); err != nil || e.ModRevision != ra {
			t.Fatalf("%s: a is %+v, %v", c.name, e, err)
		}
	}

	// Against the state file, after a checkpoint (Close): a batch whose
	// requires hold applies whole.
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir, engine.Options{})
	wantGet(t, db, "a", "1")
	var b engine.Batch
	batch(&b, ra, 0)
	if _, err := db.Write(&b, engine.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	rs := b.Results()
	if b.Aborted() || !rs[2].Applied || !rs[5].Applied || string(rs[4].Old) != "2" || rs[1].Int != 6 || !rs[3].Applied {
		t.Fatalf("batch whose requires hold: aborted %v, results %+v", b.Aborted(), rs)
	}
	wantGet(t, db, "a", "2")
	wantGet(t, db, "n", "<missing>")
}

func TestAppendIncrByFloatGetDelete(t *testing.T) {
	db := open(t, t.TempDir(), engine.Options{MaxValueSize: 8})
	k := []byte("k")
	rs := write(t, db, func(b *engine.Batch) {
		b.Append(k, []byte("ab"))   // missing: counts as empty
		b.Append(k, []byte("cde"))  // 5 bytes
		b.Append(k, []byte("fghi")) // 9 > 8: refused
		b.GetDelete(k)
		b.GetDelete(k)
		b.IncrByFloat(k, 10.5)
		b.IncrByFloat(k, 0.1)
		b.IncrByFloat(k, -10.6)
	})
	if rs[0].Int != 2 || rs[1].Int != 5 || !errors.Is(rs[2].Err, engine.ErrValueTooLarge) || rs[2].Applied {
		t.Errorf("appends: %+v %+v %+v", rs[0], rs[1], rs[2])
	}
	if string(rs[3].Old) != "abcde" || !rs[3].Applied || rs[4].Old != nil || rs[4].Applied {
		t.Errorf("get-deletes: %+v %+v", rs[3], rs[4])
	}
	if string(rs[5].Value) != "10.5" || string(rs[6].Value) != "10.6" || string(rs[7].Value) != "0" {
		t.Errorf("incr-by-float values %q %q %q, want 10.5 10.6 0", rs[5].Value, rs[6].Value, rs[7].Value)
	}
	for _, c := range []struct {
		set   string
		delta float64
		value string
		err   error
	}{
		{"5.0e3", 200, "5200", nil},
		{"3", 1e-20, "3", nil},
		{"0", 1e-10, "0.0000000001", nil},
		{"abc", 1, "", engine.ErrNotFloat},
		{" 1", 1, "", engine.ErrNotFloat},
		{"nan", 1, "", engine.ErrNotFloat},
		{"1e308", 1e308, "", engine.ErrFloatRange},
		{"inf", 1, "", engine.ErrFloatRange},
	} {
		mustPut(t, db, "f", c.set)
		r := write(t, db, func(b *engine.Batch) { b.IncrByFloat([]byte("f"), c.delta) })[0]
		if !errors.Is(r.Err, c.err) || string(r.Value) != c.value || r.Applied != (c.err == nil) {
			t.Errorf("%q incr by float %g: %+v, want %q %v", c.set, c.delta, r, c.value, c.err)
		}
		want := c.value
		if c.err != nil {
			want = c.set
		}
		wantGet(t, db, "f", want)
	}
}

// TestDeleteAll deletes keys of the state file, of the memtable and of its
// own batch, and nothing comes back after a restart.
func TestDeleteAll(t *testing.T) {
	dir := t.TempDir()
	db := open(t, dir, engine.Options{})
	for _, k := range []string{"a", "b", "c"} {
		mustPut(t, db, k, "1")
	}
	if err := db.Close(); err != nil { // checkpoints: a, b, c are in the state file
		t.Fatal(err)
	}
	db = open(t, dir, engine.Options{})
	mustPut(t, db, "d", "1")
	if _, err := db.Delete([]byte("b"), engine.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	rs := write(t, db, func(b *engine.Batch) {
		b.Put([]byte("e"), []byte("1"))
		b.DeleteAll()
		b.Put([]byte("f"), []byte("1"))
		b.DeleteAll()
	})
	if rs[1].Int != 4 || !rs[1].Applied || rs[3].Int != 1 { // a, c, d, e; then f
		t.Fatalf("delete-all results %+v %+v, want 4 and 1 deleted", rs[1], rs[3])
	}
	mustPut(t, db, "g", "1")
	for reopen := range 2 {
		if n, err := db.Count(); err != nil || n != 1 {
			t.Fatalf("after delete-all (reopen %d): %d keys, %v; want only g", reopen, n, err)
		}
		wantGet(t, db, "g", "1")
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		db = open(t, dir, engine.Options{})
	}
}
