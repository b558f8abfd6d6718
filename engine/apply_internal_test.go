package engine

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// randomBatches returns n encoded batches of conditional and plain
// operations on a few keys, so that their outcomes depend on each other.
func randomBatches(rng *rand.Rand, n int) [][]byte {
	values := []string{"0", "1", "-5", "41", "9223372036854775807", "-9223372036854775808", "x", "", "01", "2.5", "1e3"}
	fdeltas := []float64{0.1, -2.5, 1e308, 3}
	deltas := []int64{1, -1, 100, -100, math.MaxInt64, math.MinInt64}
	conds := []PutCond{0, IfAbsent, IfPresent, ReturnOld, IfAbsent | ReturnOld, IfPresent | ReturnOld}
	econds := []ExpireCond{0, ExpireNX, ExpireXX, ExpireGT, ExpireLT, ExpireXX | ExpireGT, ExpireReturnValue | ExpireLT}
	out := make([][]byte, n)
	for i := range out {
		var b Batch
		// Batches 10ms apart, with expiries around them: a key set to
		// expire soon has expired for the batches a few revisions later.
		at := batchEpoch + int64(i)*10
		b.SetTimestamp(at)
		exp := func() int64 { return at - 20 + rng.Int64N(200) }
		if i%10 == 5 {
			// A key of its own that has expired by the next check (at
			// i%10 == 9, 40 ms later), whatever the random ops do: every
			// seed tests reads of expired keys.
			b.PutExpiresAt([]byte("kx"), []byte("x"), 0, at+5)
		}
		for range 1 + rng.IntN(5) {
			key := []byte("k" + strconv.Itoa(rng.IntN(6)))
			v := []byte(values[rng.IntN(len(values))])
			// A revision a compare-and-set may find: the batch's own
			// (i+1, after its earlier ops), recent ones, or 0.
			rev := uint64(max(0, i+1-rng.IntN(8)))
			switch rng.IntN(16) {
			case 12:
				c := conds[rng.IntN(len(conds))]
				if rng.IntN(3) == 0 {
					b.PutExpiresAt(key, v, c|KeepExpiry, 0)
				} else {
					b.PutExpiresAt(key, v, c, exp())
				}
			case 13, 14:
				b.Expire(key, exp(), econds[rng.IntN(len(econds))])
			case 15:
				b.Persist(key, econds[rng.IntN(2)]&ExpireReturnValue)
			case 0:
				b.Put(key, v)
			case 1:
				b.Delete(key)
			case 2:
				b.PutIf(key, v, conds[rng.IntN(len(conds))])
			case 3:
				b.IncrBy(key, deltas[rng.IntN(len(deltas))])
			case 4:
				b.CompareAndPut(key, v, rev)
			case 5:
				b.CompareAndDelete(key, rev)
			case 6:
				b.Get(key)
			case 7:
				// Rarer than the others, so that most batches apply.
				if rng.IntN(3) == 0 {
					b.Require(key, rev)
				} else {
					b.Get(key)
				}
			case 8:
				b.Append(key, v)
			case 9:
				b.IncrByFloat(key, fdeltas[rng.IntN(len(fdeltas))])
			case 10:
				b.GetDelete(key)
			case 11:
				// Rarely, so that the state is seldom empty.
				if rng.IntN(8) == 0 {
					b.DeleteAll()
				} else {
					b.Put(key, v)
				}
			}
		}
		out[i] = bytes.Clone(b.Bytes())
	}
	return out
}

// stateHash hashes a full scan of db.
func stateHash(t testing.TB, db *DB) [32]byte {
	t.Helper()
	kvs, err := db.Scan(ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	hashKVs(h, kvs)
	return [32]byte(h.Sum(nil))
}

// hashKVs writes kvs to h as Snapshot.StateHash writes a store's keys.
func hashKVs(h hash.Hash, kvs []KV) {
	for _, kv := range kvs {
		h.Write(binary.AppendUvarint(nil, uint64(len(kv.Key))))
		h.Write(kv.Key)
		h.Write(binary.AppendUvarint(nil, uint64(len(kv.Value))))
		h.Write(kv.Value)
		h.Write(binary.AppendUvarint(nil, kv.CreateRevision))
		h.Write(binary.AppendUvarint(nil, kv.ModRevision))
		h.Write(binary.AppendVarint(nil, kv.ExpiresAt))
	}
}

// resultString renders a result for comparison: errors by identity, Old
// with its nil-ness.
func resultString(r Result) string {
	old := "nil"
	if r.Old != nil {
		old = strconv.Quote(string(r.Old))
	}
	return fmt.Sprintf("applied=%v modrev=%d createrev=%d old=%s int=%d value=%q notint=%v overflow=%v notfloat=%v floatrange=%v required=%v other=%v",
		r.Applied, r.ModRevision, r.CreateRevision, old, r.Int, r.Value,
		errors.Is(r.Err, ErrNotInteger), errors.Is(r.Err, ErrOverflow), errors.Is(r.Err, ErrNotFloat), errors.Is(r.Err, ErrFloatRange),
		errors.Is(r.Err, ErrRequireFailed),
		r.Err != nil && !errors.Is(r.Err, ErrNotInteger) && !errors.Is(r.Err, ErrOverflow) &&
			!errors.Is(r.Err, ErrNotFloat) && !errors.Is(r.Err, ErrFloatRange) && !errors.Is(r.Err, ErrRequireFailed))
}

// batchEpoch is the timestamp of the first of randomBatches, in Unix ms.
const batchEpoch = 1_700_000_000_000

// testClock is a clock a test sets, in Unix ms.
type testClock struct{ ms atomic.Int64 }

func (c *testClock) now() time.Time { return time.UnixMilli(c.ms.Load()) }

// scanAt scans db with its clock c at ms, then puts the clock back.
func scanAt(t testing.TB, db *DB, c *testClock, ms int64) []KV {
	t.Helper()
	old := c.ms.Swap(ms)
	defer c.ms.Store(old)
	kvs, err := db.Scan(ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return kvs
}

// TestApplyIsDeterministic applies the same encoded batches to two fresh
// engines: one commits them as local writes, the other applies them with
// Apply and is restarted halfway without a final checkpoint, so that it
// replays (and re-evaluates) the conditional operations of its log. Both
// checkpoint often, so evaluation also reads the state file. Per-op results
// and state hashes must be equal. The batches carry timestamps and expiry
// operations, and the two engines' clocks jump about, before the batches'
// times and after them: what expiry decides when a batch is applied
// depends on its timestamp, never on the clock of the engine applying it.
// (The hashes are taken with the clocks at 0, when reads see every key as
// the batches left it, expired or not.)
func TestApplyIsDeterministic(t *testing.T) {
	seed := testSeed(t, "KVD_APPLY_SEED")
	const n = 400
	batches := randomBatches(rand.New(rand.NewPCG(seed, 0)), n)
	rng := rand.New(rand.NewPCG(seed, 1))
	opts := Options{CheckpointLogBytes: 2 << 10, CommitMode: CommitAsync, NoExpiryRemoval: true}
	wo := WriteOptions{}
	var localClock, appliedClock testClock
	localOpts, appliedOpts := opts, opts
	localOpts.clock, appliedOpts.clock = localClock.now, appliedClock.now
	opts = appliedOpts

	local, err := Open(t.TempDir(), localOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	dirB := t.TempDir()
	applied, err := Open(dirB, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { applied.Close() }()

	// restart closes the applied engine without its final checkpoint, as
	// a crash after the log is written would, and opens it with o.
	quiet := opts
	quiet.CheckpointLogBytes, quiet.CheckpointInterval = 1<<30, time.Hour
	hash := func(db *DB) [32]byte {
		t.Helper()
		l, a := localClock.ms.Load(), appliedClock.ms.Load()
		localClock.ms.Store(0)
		appliedClock.ms.Store(0)
		defer localClock.ms.Store(l)
		defer appliedClock.ms.Store(a)
		return stateHash(t, db)
	}
	var expired int // keys hidden from a read at the last batch's time
	restart := func(o Options) {
		t.Helper()
		if err := applied.close(false); err != nil {
			t.Fatal(err)
		}
		if applied, err = Open(dirB, o); err != nil {
			t.Fatal(err)
		}
	}
	var differ, aborted int
	for i, p := range batches {
		rev := uint64(i + 1)
		localClock.ms.Store(batchEpoch + rng.Int64N(int64(n)*20) - int64(n)*5)
		appliedClock.ms.Store(rng.Int64N(2) * (batchEpoch + int64(n)*20))
		b, err := DecodeBatch(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := local.Write(b, wo)
		if err != nil || got != rev {
			t.Fatalf("write %d: revision %d, %v", rev, got, err)
		}
		rs, err := applied.Apply(rev, p, wo)
		if err != nil {
			t.Fatalf("apply %d: %v", rev, err)
		}
		if len(rs) != b.Len() || len(b.Results()) != b.Len() {
			t.Fatalf("revision %d: %d and %d results for %d ops", rev, len(b.Results()), len(rs), b.Len())
		}
		for j, r := range rs {
			if w, a := resultString(b.Results()[j]), resultString(r); w != a {
				t.Fatalf("revision %d op %d: local write gave %s, Apply %s", rev, j, w, a)
			}
			if !r.Applied {
				differ++
			}
		}
		if b.Aborted() {
			aborted++
		}

		if i%10 == 9 {
			// A read at the batch's time hides the keys that have
			// expired by then, and only those.
			at := batchEpoch + int64(i)*10
			all := scanAt(t, applied, &appliedClock, 0)
			live := scanAt(t, local, &localClock, at)
			n := 0
			for _, kv := range all {
				if kv.ExpiresAt != 0 && kv.ExpiresAt <= at {
					n++
				}
			}
			if len(live) != len(all)-n {
				t.Fatalf("revision %d: of %d keys %d have expired, yet a read sees %d", rev, len(all), n, len(live))
			}
			expired += n
		}
		if i == n/4 {
			// Checkpoints run in the background: let both engines
			// have one, so that later batches read the state file.
			deadline := time.Now().Add(10 * time.Second)
			for local.checkpoints.Load() == 0 || applied.checkpoints.Load() == 0 {
				if time.Now().After(deadline) {
					t.Fatal("no checkpoint: evaluation would never read the state file")
				}
				time.Sleep(time.Millisecond)
			}
			// No checkpoint from here to the restart at n/2, whose
			// replay then evaluates these batches again.
			restart(quiet)
		}
		if i == n/2 {
			restart(opts)
			if applied.memRev.Load() <= applied.applied.Load() {
				t.Fatalf("nothing replayed at the restart (state file at %d)", applied.applied.Load())
			}
			if hash(applied) != hash(local) {
				t.Fatalf("state after the restart at revision %d differs", rev)
			}
			// A state machine that restarts applies its tail again.
			for _, again := range []uint64{1, rev - 1, rev} {
				if _, err := applied.Apply(again, batches[again-1], wo); !errors.Is(err, ErrAlreadyApplied) {
					t.Fatalf("apply of revision %d again: %v, want ErrAlreadyApplied", again, err)
				}
			}
			if _, err := applied.Apply(rev+2, batches[rev+1], wo); !errors.Is(err, ErrRevisionGap) {
				t.Fatalf("apply of revision %d after %d: %v, want ErrRevisionGap", rev+2, rev, err)
			}
		}
	}
	if differ == 0 {
		t.Fatal("every operation applied: the batches test no condition")
	}
	if aborted == 0 || aborted > n/2 {
		t.Fatalf("%d of %d batches aborted by a require: the batches test it badly", aborted, n)
	}
	if hash(applied) != hash(local) {
		t.Fatal("final states differ")
	}
	if expired == 0 {
		t.Fatal("no key had expired at any of the checks: the batches test no expiry")
	}
	if r := applied.WrittenRevision(); r != n {
		t.Fatalf("applied engine at revision %d, want %d", r, n)
	}
}
