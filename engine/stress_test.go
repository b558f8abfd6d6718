package engine_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
)

// TestConcurrentReadersWritersCheckpoints runs writers, point readers,
// scanners and frequent checkpoints at once. Each writer owns its keys and
// writes increasing values, so a reader may never see a value older than one
// it saw before, nor a value of another writer. Run it with -race.
func TestConcurrentReadersWritersCheckpoints(t *testing.T) {
	db := open(t, t.TempDir(), engine.Options{
		CommitMode:       engine.CommitAsync,
		CheckpointBytes:  4 << 10,
		MaxMemtableBytes: 16 << 10,
		SegmentSize:      32 << 10,
	})
	const writers, keysPer = 4, 50
	var latest [writers][keysPer]atomic.Int64 // last acknowledged value
	for w := range writers {
		for k := range keysPer {
			latest[w][k].Store(-1)
		}
	}
	key := func(w, k int) []byte { return []byte(fmt.Sprintf("w%d/k%03d", w, k)) }
	deadline := time.Now().Add(1500 * time.Millisecond)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				k := i % keysPer
				if _, err := db.Put(key(w, k), []byte(fmt.Sprint(i)), engine.WriteOptions{}); err != nil {
					t.Error(err)
					return
				}
				latest[w][k].Store(int64(i))
			}
		}()
	}
	for r := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 9))
			var seen [writers][keysPer]int64
			for time.Now().Before(deadline) {
				w, k := rng.IntN(writers), rng.IntN(keysPer)
				floor := latest[w][k].Load() // acknowledged before the read began
				v, err := db.Get(key(w, k))
				if errors.Is(err, engine.ErrNotFound) {
					if floor >= 0 {
						t.Errorf("%s missing after value %d was acknowledged", key(w, k), floor)
						return
					}
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				var n int64
				fmt.Sscan(string(v), &n)
				if n < floor || n < seen[w][k] || int(n)%keysPer != k {
					t.Errorf("%s = %d, acknowledged %d, seen %d", key(w, k), n, floor, seen[w][k])
					return
				}
				seen[w][k] = n
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for time.Now().Before(deadline) {
			kvs, err := db.Scan(engine.ScanOptions{Prefix: []byte("w1/")})
			if err != nil {
				t.Error(err)
				return
			}
			for i := 1; i < len(kvs); i++ {
				if string(kvs[i-1].Key) >= string(kvs[i].Key) {
					t.Errorf("scan out of order: %s then %s", kvs[i-1].Key, kvs[i].Key)
					return
				}
			}
		}
	}()
	wg.Wait()
	if st := db.Stats(); st.Checkpoints < 3 {
		t.Fatalf("only %d checkpoints ran: the test did not exercise them", st.Checkpoints)
	}
}
