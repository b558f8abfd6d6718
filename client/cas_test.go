package client_test

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/engine"
)

// wantMismatch checks that err is a revision mismatch naming current.
func wantMismatch(t *testing.T, what string, err error, current uint64) {
	t.Helper()
	var rm *client.RevisionMismatchError
	if !errors.As(err, &rm) || !errors.Is(err, client.ErrRevisionMismatch) || rm.Current != current {
		t.Fatalf("%s: err = %v, want a revision mismatch at current %d", what, err, current)
	}
}

func TestRevisionsAndCAS(t *testing.T) {
	e := startServer(t, engine.Options{})
	for _, proto := range []int{2, 3} {
		t.Run(fmt.Sprint("protocol ", proto), func(t *testing.T) {
			ctx := t.Context()
			c := dial(t, e.addr, client.Options{Protocol: proto})
			a, b := fmt.Sprint("a", proto), fmt.Sprint("b", proto)
			entry := func(key string) client.Entry {
				t.Helper()
				en, err := c.GetEntry(ctx, key)
				if err != nil {
					t.Fatalf("GetEntry %s: %v", key, err)
				}
				return en
			}

			if _, err := c.GetEntry(ctx, a); !errors.Is(err, client.ErrNotFound) {
				t.Fatalf("GetEntry of a missing key: %v, want ErrNotFound", err)
			}
			if err := c.Put(ctx, a, []byte("1")); err != nil {
				t.Fatal(err)
			}
			first := entry(a)
			if string(first.Value) != "1" || first.ModRevision == 0 || first.CreateRevision != first.ModRevision {
				t.Fatalf("after one Put: %+v", first)
			}
			if err := c.Put(ctx, a, []byte("2")); err != nil {
				t.Fatal(err)
			}
			second := entry(a)
			if string(second.Value) != "2" || second.ModRevision <= first.ModRevision || second.CreateRevision != first.CreateRevision {
				t.Fatalf("after a second Put: %+v, first %+v: create must stay, mod move", second, first)
			}

			_, err := c.CompareAndPut(ctx, a, []byte("x"), first.ModRevision)
			wantMismatch(t, "CAS with an old revision", err, second.ModRevision)
			_, err = c.CompareAndPut(ctx, a, []byte("x"), 0)
			wantMismatch(t, "CAS 0 on an existing key", err, second.ModRevision)
			if got := entry(a); string(got.Value) != "2" || got.ModRevision != second.ModRevision {
				t.Fatalf("a failed CAS wrote: %+v", got)
			}

			rev, err := c.CompareAndPut(ctx, a, []byte("3"), second.ModRevision, client.WithDurability(client.DurabilitySync))
			if err != nil || rev <= second.ModRevision {
				t.Fatalf("CAS = %d, %v", rev, err)
			}
			if got := entry(a); string(got.Value) != "3" || got.ModRevision != rev || got.CreateRevision != first.CreateRevision {
				t.Fatalf("after CAS at %d: %+v", rev, got)
			}

			created, err := c.CompareAndPut(ctx, b, []byte("new"), 0)
			if err != nil {
				t.Fatalf("CAS 0 of a missing key: %v", err)
			}
			if got := entry(b); got.ModRevision != created || got.CreateRevision != created {
				t.Fatalf("created at %d: %+v", created, got)
			}
			_, err = c.CompareAndPut(ctx, b, []byte("again"), 0)
			wantMismatch(t, "CAS 0 again", err, created)

			wantMismatch(t, "CAD with an old revision", c.CompareAndDelete(ctx, a, second.ModRevision), rev)
			if err := c.CompareAndDelete(ctx, a, rev, client.WithDurability(client.DurabilityAsync)); err != nil {
				t.Fatalf("CAD: %v", err)
			}
			if _, err := c.GetEntry(ctx, a); !errors.Is(err, client.ErrNotFound) {
				t.Fatalf("GetEntry after CAD: %v", err)
			}
			wantMismatch(t, "CAD of a missing key", c.CompareAndDelete(ctx, a, rev), 0)
			if err := c.CompareAndDelete(ctx, a, 0); err != nil {
				t.Fatalf("CAD 0 of a missing key: %v", err)
			}
		})
	}
}

func TestCASErrorsMapBack(t *testing.T) {
	e := startServer(t, engine.Options{})
	ctx := t.Context()
	c := dial(t, e.addr, client.Options{})
	_, tooLarge := c.CompareAndPut(ctx, "k", make([]byte, 1001), 0)
	_, emptyKey := c.CompareAndPut(ctx, "", []byte("v"), 0)
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"value too large", tooLarge, client.ErrValueTooLarge},
		{"empty key", emptyKey, client.ErrEmptyKey},
		{"cad key too large", c.CompareAndDelete(ctx, strings.Repeat("k", 101), 1), client.ErrKeyTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !errors.Is(tc.err, tc.want) || errors.Is(tc.err, client.ErrRevisionMismatch) {
				t.Fatalf("err = %v, want %v", tc.err, tc.want)
			}
		})
	}
	if _, err := c.GetEntry(ctx, "k"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("a refused CAS wrote: %v", err)
	}
}

// TestCASRace has goroutines race to CompareAndPut one key from the same
// revision, round after round: in each round exactly one wins, and every
// loser is told the winner's revision.
func TestCASRace(t *testing.T) {
	e := startServer(t, engine.Options{})
	ctx := t.Context()
	c := dial(t, e.addr, client.Options{PoolSize: 8})
	rev, err := c.CompareAndPut(ctx, "race", []byte("start"), 0)
	if err != nil {
		t.Fatal(err)
	}
	const writers, rounds = 8, 20
	for round := range rounds {
		revs := make([]uint64, writers)
		errs := make([]error, writers)
		var wg sync.WaitGroup
		for i := range writers {
			wg.Go(func() { revs[i], errs[i] = c.CompareAndPut(ctx, "race", []byte(strconv.Itoa(i)), rev) })
		}
		wg.Wait()
		winner := -1
		for i, err := range errs {
			if err == nil {
				if winner >= 0 {
					t.Fatalf("round %d: writers %d and %d both won from revision %d", round, winner, i, rev)
				}
				winner = i
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: nobody won from revision %d: %v", round, rev, errs)
		}
		for i, err := range errs {
			if i != winner {
				wantMismatch(t, fmt.Sprintf("round %d writer %d", round, i), err, revs[winner])
			}
		}
		rev = revs[winner]
	}
}

// TestCASCounter increments a counter from several goroutines with
// read-modify-CAS loops: no increment is lost.
func TestCASCounter(t *testing.T) {
	e := startServer(t, engine.Options{CommitMode: engine.CommitAsync})
	ctx := t.Context()
	c := dial(t, e.addr, client.Options{PoolSize: 4})
	const workers, increments = 4, 25
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Go(func() {
			for range increments {
				for {
					var n int
					var rev uint64
					en, err := c.GetEntry(ctx, "counter")
					switch {
					case errors.Is(err, client.ErrNotFound):
					case err != nil:
						errs[w] = err
						return
					default:
						n, _ = strconv.Atoi(string(en.Value))
						rev = en.ModRevision
					}
					_, err = c.CompareAndPut(ctx, "counter", []byte(strconv.Itoa(n+1)), rev)
					if err == nil {
						break
					}
					if !errors.Is(err, client.ErrRevisionMismatch) {
						errs[w] = err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, "counter"); err != nil || string(v) != strconv.Itoa(workers*increments) {
		t.Fatalf("counter = %q, %v, want %d", v, err, workers*increments)
	}
}
