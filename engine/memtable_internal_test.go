package engine

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// TestMemtableOrdered interleaves writes with ordered and checks that the
// tree holds exactly the map's keys, in order, each with its newest entry.
func TestMemtableOrdered(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	m := newMemtable()
	want := map[string]string{}
	for round := range 50 {
		for range rng.IntN(200) {
			k := fmt.Sprintf("k%04d", rng.IntN(1000))
			v := fmt.Sprintf("v%d", round)
			m.set([]byte(k), memEntry{value: []byte(v)})
			want[k] = v
		}
		var got []string
		m.ordered().Scan(func(k string, e *memEntry) bool {
			if string(e.value) != want[k] {
				t.Fatalf("round %d: %q = %q, want %q", round, k, e.value, want[k])
			}
			got = append(got, k)
			return true
		})
		keys := make([]string, 0, len(want))
		for k := range want {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(got, keys) {
			t.Fatalf("round %d: ordered has %d keys %v..., want %d", round, len(got), got[:min(5, len(got))], len(keys))
		}
	}
}

// TestMemtableOrderedConcurrent runs ordered from several goroutines at
// once, as concurrent scans do under the shared lock (run with -race).
func TestMemtableOrderedConcurrent(t *testing.T) {
	m := newMemtable()
	for i := range 5000 {
		m.set(fmt.Appendf(nil, "k%05d", (i*7919)%5000), memEntry{value: []byte("v")})
	}
	var wg sync.WaitGroup
	counts := make([]int, 4)
	for g := range counts {
		wg.Go(func() {
			m.ordered().Scan(func(string, *memEntry) bool { counts[g]++; return true })
		})
	}
	wg.Wait()
	for g, n := range counts {
		if n != 5000 {
			t.Errorf("goroutine %d saw %d keys, want 5000", g, n)
		}
	}
}

// TestMemtableCountsExpiryIndex: an entry with an expiry costs its index
// entry once, however often the key is written with the same expiry.
func TestMemtableCountsExpiryIndex(t *testing.T) {
	m := newMemtable()
	m.set([]byte("k"), memEntry{value: []byte("v")})
	plain := m.bytes
	m.set([]byte("k"), memEntry{value: []byte("v"), expires: 5})
	once := m.bytes
	if want := plain + 9 + expiryIndexOverhead; once != want {
		t.Fatalf("with an expiry: %d bytes, want %d", once, want)
	}
	for range 10 {
		m.set([]byte("k"), memEntry{value: []byte("v"), expires: 5})
	}
	if m.bytes != once || m.expiring.Len() != 1 {
		t.Fatalf("after rewrites with the same expiry: %d bytes, %d index entries; want %d, 1", m.bytes, m.expiring.Len(), once)
	}
}
