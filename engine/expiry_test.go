package engine_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
)

// fakeClock is a clock a test moves, in Unix ms.
type fakeClock struct{ ms atomic.Int64 }

func newClock() *fakeClock {
	c := &fakeClock{}
	c.ms.Store(1_700_000_000_000)
	return c
}

func (c *fakeClock) now() time.Time { return time.UnixMilli(c.ms.Load()) }
func (c *fakeClock) at() int64      { return c.ms.Load() }
func (c *fakeClock) add(ms int64)   { c.ms.Add(ms) }
func (c *fakeClock) opts(o engine.Options) engine.Options {
	return engine.WithClock(o, c.now)
}

// expiresAt returns key's expiry and whether a read finds it.
func expiresAt(t testing.TB, db *engine.DB, key string) (int64, bool) {
	t.Helper()
	e, err := db.GetEntry([]byte(key))
	if errors.Is(err, engine.ErrNotFound) {
		return 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return e.ExpiresAt, true
}

func TestExpiryOperations(t *testing.T) {
	c := newClock()
	db := open(t, t.TempDir(), c.opts(engine.Options{NoExpiryRemoval: true}))
	now := c.at()
	k := []byte("k")

	// SET EX: live until its expiry, then no read finds it.
	write(t, db, func(b *engine.Batch) { b.PutExpiresAt(k, []byte("v"), 0, now+1000) })
	if exp, ok := expiresAt(t, db, "k"); !ok || exp != now+1000 {
		t.Fatalf("after SET EX: expiry %d, found %v", exp, ok)
	}
	c.add(999)
	wantGet(t, db, "k", "v")
	c.add(1)
	wantExpired(t, db, "k")

	// An expired key is absent for NX, and INCR keeps an expiry.
	now = c.at()
	if rs := write(t, db, func(b *engine.Batch) { b.PutExpiresAt(k, []byte("5"), engine.IfAbsent, now+500) }); !rs[0].Applied {
		t.Fatal("SET NX on an expired key not applied")
	}
	if rs := write(t, db, func(b *engine.Batch) { b.IncrBy(k, 1) }); rs[0].Int != 6 {
		t.Fatalf("INCR: %+v", rs[0])
	}
	if exp, _ := expiresAt(t, db, "k"); exp != now+500 {
		t.Fatalf("INCR left expiry %d, want %d", exp, now+500)
	}
	// KEEPTTL keeps it, a plain SET clears it.
	write(t, db, func(b *engine.Batch) { b.PutExpiresAt(k, []byte("7"), engine.KeepExpiry, 0) })
	if exp, _ := expiresAt(t, db, "k"); exp != now+500 {
		t.Fatalf("SET KEEPTTL left expiry %d, want %d", exp, now+500)
	}
	write(t, db, func(b *engine.Batch) { b.Put(k, []byte("8")) })
	if exp, ok := expiresAt(t, db, "k"); !ok || exp != 0 {
		t.Fatalf("plain SET left expiry %d (found %v), want none", exp, ok)
	}

	// EXPIRE's conditions, in order, on the same key.
	for _, tc := range []struct {
		cond    engine.ExpireCond
		at      int64 // relative to now; 0: Persist
		applied bool
		want    int64 // expiry after, relative to now; -1: none
	}{
		{engine.ExpireXX, 100, false, -1},
		{engine.ExpireGT, 100, false, -1}, // no expiry counts as infinite
		{engine.ExpireLT, 100, true, 100},
		{engine.ExpireNX, 200, false, 100},
		{engine.ExpireGT, 50, false, 100},
		{engine.ExpireGT, 300, true, 300},
		{engine.ExpireLT, 400, false, 300},
		{engine.ExpireXX | engine.ExpireLT, 200, true, 200},
		{0, 0, true, -1},  // PERSIST
		{0, 0, false, -1}, // PERSIST of a key without expiry
		{engine.ExpireNX, 1000, true, 1000},
	} {
		now := c.at()
		var rs []engine.Result
		if tc.at == 0 {
			rs = write(t, db, func(b *engine.Batch) { b.Persist(k, 0) })
		} else {
			rs = write(t, db, func(b *engine.Batch) { b.Expire(k, now+tc.at, tc.cond) })
		}
		exp, ok := expiresAt(t, db, "k")
		want := now + tc.want
		if tc.want < 0 {
			want = 0
		}
		if rs[0].Applied != tc.applied || !ok || exp != want {
			t.Fatalf("%+v: applied %v, expiry %d (found %v); want applied %v, expiry %d", tc, rs[0].Applied, exp, ok, tc.applied, want)
		}
	}
	// GETEX-like: the value returned with the change; EXPIRE in the past
	// deletes; EXPIRE and PERSIST of a missing key do nothing.
	rs := write(t, db, func(b *engine.Batch) { b.Expire(k, c.at()-1, engine.ExpireReturnValue) })
	if !rs[0].Applied || string(rs[0].Old) != "8" {
		t.Fatalf("EXPIRE in the past: %+v", rs[0])
	}
	wantExpired(t, db, "k")
	rs = write(t, db, func(b *engine.Batch) {
		b.Expire(k, c.at()+10, 0)
		b.Persist(k, engine.ExpireReturnValue)
		b.Delete(k)
	})
	for i, r := range rs {
		if r.Applied || r.Old != nil {
			t.Fatalf("op %d on a missing key: %+v", i, r)
		}
	}
	// A delete of a key that has expired counts nothing.
	write(t, db, func(b *engine.Batch) { b.PutExpiresAt(k, []byte("v"), 0, c.at()+1) })
	c.add(1)
	if rs := write(t, db, func(b *engine.Batch) { b.Delete(k) }); rs[0].Applied {
		t.Fatal("DEL of an expired key counted")
	}
	// A key set again after it expired is created anew.
	r1 := mustPut(t, db, "c", "1")
	write(t, db, func(b *engine.Batch) { b.Expire([]byte("c"), c.at()+1, 0) })
	c.add(1)
	r3 := mustPut(t, db, "c", "2")
	if e, err := db.GetEntry([]byte("c")); err != nil || e.CreateRevision != r3 || r3 == r1 {
		t.Fatalf("set again after expiry: %+v, %v; want create %d", e, err, r3)
	}
	// Bad conditions fail the write.
	for _, bad := range []func(b *engine.Batch){
		func(b *engine.Batch) { b.Expire(k, 1, engine.ExpireNX|engine.ExpireXX) },
		func(b *engine.Batch) { b.PutExpiresAt(k, nil, engine.KeepExpiry, 5) },
		func(b *engine.Batch) { b.PutExpiresAt(k, nil, 0, -5) },
		func(b *engine.Batch) { b.Persist(k, engine.ExpireGT) },
	} {
		var b engine.Batch
		bad(&b)
		if _, err := db.Write(&b, engine.WriteOptions{}); !errors.Is(err, engine.ErrBadBatch) {
			t.Errorf("bad batch written: %v", err)
		}
	}
}

// wantExpired checks that no read returns key.
func wantExpired(t testing.TB, db *engine.DB, key string) {
	t.Helper()
	if _, err := db.Get([]byte(key)); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("Get(%s): %v, want ErrNotFound", key, err)
	}
	if _, err := db.GetEntry([]byte(key)); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("GetEntry(%s): %v, want ErrNotFound", key, err)
	}
	if v, err := db.AppendGet(nil, []byte(key)); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("AppendGet(%s): %q, %v, want ErrNotFound", key, v, err)
	}
	if err := db.GetEach([][]byte{[]byte(key)}, func(_ int, v []byte, found bool) {
		if found {
			t.Errorf("GetEach(%s) found %q", key, v)
		}
	}); err != nil {
		t.Fatal(err)
	}
	kvs, err := db.Scan(engine.ScanOptions{Prefix: []byte(key)})
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range kvs {
		if string(kv.Key) == key {
			t.Errorf("Scan returned %s", key)
		}
	}
}

// TestExpirySurvivesRestart: an expiry is kept across a clean restart (in
// the state file) and one without a checkpoint (replayed from the log),
// and a key that expires while the store is closed is gone after it.
func TestExpirySurvivesRestart(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	o := c.opts(engine.Options{NoExpiryRemoval: true, CheckpointInterval: time.Hour})
	db := open(t, dir, o)
	now := c.at()
	write(t, db, func(b *engine.Batch) {
		b.PutExpiresAt([]byte("long"), []byte("1"), 0, now+10_000)
		b.PutExpiresAt([]byte("short"), []byte("2"), 0, now+100)
		b.Put([]byte("none"), []byte("3"))
	})
	check := func(when string) {
		t.Helper()
		if exp, ok := expiresAt(t, db, "long"); !ok || exp != now+10_000 {
			t.Fatalf("%s: long expires %d (found %v)", when, exp, ok)
		}
		if exp, ok := expiresAt(t, db, "none"); !ok || exp != 0 {
			t.Fatalf("%s: none expires %d (found %v)", when, exp, ok)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir, o)
	check("after Close")
	write(t, db, func(b *engine.Batch) { b.Expire([]byte("none"), now+20_000, 0) })
	write(t, db, func(b *engine.Batch) { b.Persist([]byte("none"), 0) })
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	// Reopen from a copy taken while it runs: the log only.
	crashed := t.TempDir()
	copyDir(t, dir, crashed)
	db.Close()
	os.Remove(crashed + "/LOCK")
	c.add(100)
	db = open(t, crashed, o)
	check("after a crash")
	wantExpired(t, db, "short")
}

// TestExpiryNeverReturned is a property test: random SET, SET with an
// expiry, EXPIRE, PERSIST and DEL with a clock that moves, checkpoints and
// restarts; after every step each read returns exactly what a model says,
// so an expired key is never returned.
func TestExpiryNeverReturned(t *testing.T) {
	seed := rand.Uint64()
	if s := os.Getenv("KVD_EXPIRY_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (set KVD_EXPIRY_SEED to repeat)", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	c := newClock()
	dir := t.TempDir()
	o := engine.WithSweep(c.opts(engine.Options{CheckpointLogBytes: 4 << 10}), time.Millisecond, 3)
	db := open(t, dir, o)
	defer func() { db.Close() }()

	type item struct {
		value   string
		expires int64
	}
	model := map[string]item{}
	live := func(k string) (item, bool) {
		it, ok := model[k]
		if ok && it.expires != 0 && it.expires <= c.at() {
			return item{}, false
		}
		return it, ok
	}
	const keys = 12
	hidden := 0
	var removed uint64 // keys the expirer removed, over every open
	for step := range 2000 {
		k := "k" + strconv.Itoa(rng.IntN(keys))
		now := c.at()
		exp := now + rng.Int64N(50)
		v := strconv.Itoa(step)
		switch rng.IntN(8) {
		case 0, 1:
			write(t, db, func(b *engine.Batch) { b.PutExpiresAt([]byte(k), []byte(v), 0, exp) })
			model[k] = item{v, exp}
		case 2:
			write(t, db, func(b *engine.Batch) { b.Put([]byte(k), []byte(v)) })
			model[k] = item{v, 0}
		case 3:
			write(t, db, func(b *engine.Batch) { b.Expire([]byte(k), exp, 0) })
			if it, ok := live(k); ok {
				if exp <= now {
					delete(model, k)
				} else {
					model[k] = item{it.value, exp}
				}
			}
		case 4:
			write(t, db, func(b *engine.Batch) { b.Persist([]byte(k), 0) })
			if it, ok := live(k); ok {
				model[k] = item{it.value, 0}
			}
		case 5:
			write(t, db, func(b *engine.Batch) { b.Delete([]byte(k)) })
			delete(model, k)
		case 6:
			c.add(rng.Int64N(20))
		case 7:
			if rng.IntN(20) == 0 {
				removed += db.Stats().ExpiredRemoved // the count starts again at open
				if err := db.Close(); err != nil {
					t.Fatal(err)
				}
				db = open(t, dir, o)
			}
		}
		// Every read agrees with the model at the clock's time.
		for i := range keys {
			k := "k" + strconv.Itoa(i)
			want, ok := live(k)
			if _, inModel := model[k]; inModel && !ok {
				hidden++
			}
			got, err := db.GetEntry([]byte(k))
			switch {
			case !ok && !errors.Is(err, engine.ErrNotFound):
				t.Fatalf("step %d: %s has expired or is gone, GetEntry = %+v, %v", step, k, got, err)
			case ok && (err != nil || string(got.Value) != want.value || got.ExpiresAt != want.expires):
				t.Fatalf("step %d: GetEntry(%s) = %+v, %v; want %+v", step, k, got, err, want)
			}
		}
		kvs, err := db.Scan(engine.ScanOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range kvs {
			if want, ok := live(string(kv.Key)); !ok || want.value != string(kv.Value) {
				t.Fatalf("step %d: Scan returned %s=%s, model %+v %v", step, kv.Key, kv.Value, want, ok)
			}
		}
		n, err := db.Count()
		if err != nil || n != len(kvs) {
			t.Fatalf("step %d: Count = %d, %v; Scan found %d", step, n, err, len(kvs))
		}
	}
	if hidden == 0 {
		t.Fatal("no read met an expired key: the test tests nothing")
	}
	// The expirer removes what reads and its sweep found in the background:
	// on a loaded machine the steps may all have run before it did.
	waitFor(t, func() bool { return removed+db.Stats().ExpiredRemoved > 0 })
}

// TestSweepRemovesExpiredKeys: expired keys in the state file and in the
// memtable are all removed by the sweep, with no read to find them, a
// bounded number per batch; keys not expired stay.
func TestSweepRemovesExpiredKeys(t *testing.T) {
	c := newClock()
	dir := t.TempDir()
	const limit, n = 50, 1000
	o := engine.WithSweep(c.opts(engine.Options{CheckpointInterval: time.Hour}), 5*time.Millisecond, limit)
	db := open(t, dir, o)
	put := func(from, to int, exp int64) {
		write(t, db, func(b *engine.Batch) {
			for i := from; i < to; i++ {
				b.PutExpiresAt([]byte(fmt.Sprintf("k%04d", i)), []byte("v"), 0, exp)
			}
		})
	}
	now := c.at()
	put(0, n/2, now+1000)
	put(n, n+10, now+5000)             // stay
	if err := db.Close(); err != nil { // into the state file
		t.Fatal(err)
	}
	db = open(t, dir, o)
	defer db.Close()
	put(n/2, n, now+1000) // in the memtable
	rev := db.WrittenRevision()
	c.add(1000)
	waitFor(t, func() bool { return db.Stats().ExpiredRemoved == n })
	if removals := db.WrittenRevision() - rev; removals < n/limit {
		t.Fatalf("%d keys removed in %d batches: more than %d a batch", n, removals, limit)
	}
	if got, err := db.Count(); err != nil || got != 10 {
		t.Fatalf("Count = %d, %v; want the 10 keys not expired", got, err)
	}
	c.add(100_000) // nothing left to find: the expired keys are gone, not hidden
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir, engine.WithClock(o, func() time.Time { return time.UnixMilli(now) }))
	if got, err := db.Count(); err != nil || got != 10 {
		t.Fatalf("after a restart at the old time: Count = %d, %v; want 10", got, err)
	}
}
