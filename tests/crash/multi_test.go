package crash_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestKill9Transactions streams MULTI/EXEC transactions, each setting the
// keys of one group to the same counter value and incrementing the group's
// counter key, kills kvd with SIGKILL mid-stream and restarts it. Every
// group must be all or nothing: its keys share one value, which the
// counter key equals; and no acknowledged transaction is lost (a process
// crash leaves the page cache, so in either commit mode).
func TestKill9Transactions(t *testing.T) {
	const groups, keys = 3, 6
	for _, mode := range []string{"sync", "async"} {
		t.Run(mode, func(t *testing.T) {
			rng := seeded(t)
			cfg := kvdConfig{dataDir: t.TempDir(), mode: mode}
			k := startKVD(t, cfg)
			// next[g] is the value group g's next transaction sets;
			// acked[g] the last one acknowledged.
			next := make([]int, groups)
			acked := make([]atomic.Int64, groups)
			for g := range next {
				next[g] = 1
			}
			for round := range pick(3, 20) {
				var wg sync.WaitGroup
				ctx, cancel := context.WithCancel(context.Background())
				sent := make([]atomic.Int64, groups)
				for g := range groups {
					wg.Add(1)
					go func() {
						defer wg.Done()
						rdb := k.redis()
						defer rdb.Close()
						for v := next[g]; ctx.Err() == nil; v++ {
							sent[g].Store(int64(v))
							_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
								for i := range keys {
									p.Set(ctx, txKey(g, i), v, 0)
								}
								p.Incr(ctx, txKey(g, -1))
								return nil
							})
							if err != nil {
								return // killed
							}
							acked[g].Store(int64(v))
						}
					}()
				}
				// Let every group commit a few, then crash at a random
				// moment of the stream.
				deadline := time.Now().Add(30 * time.Second)
				for {
					done := true
					for g := range groups {
						done = done && acked[g].Load() >= int64(next[g]+2)
					}
					if done {
						break
					}
					if time.Now().After(deadline) {
						cancel()
						wg.Wait()
						t.Fatalf("round %d: transactions do not commit", round)
					}
					time.Sleep(time.Millisecond)
				}
				time.Sleep(time.Duration(rng.IntN(150)) * time.Millisecond)
				k.kill()
				cancel()
				wg.Wait()

				k = startKVD(t, cfg)
				got := k.scanAll()
				for g := range groups {
					want := got[txKey(g, 0)]
					for i := range keys {
						if v := got[txKey(g, i)]; v != want {
							t.Fatalf("round %d: group %d holds half a transaction: key %d = %q, key 0 = %q", round, g, i, v, want)
						}
					}
					if n := got[txKey(g, -1)]; n != want {
						t.Fatalf("round %d: group %d: counter %q, keys %q", round, g, n, want)
					}
					v, _ := strconv.Atoi(want)
					if a, s := acked[g].Load(), sent[g].Load(); int64(v) < a || int64(v) > s {
						t.Fatalf("round %d: group %d recovered %d; acknowledged %d, sent up to %d", round, g, v, a, s)
					}
					next[g] = v + 1
				}
			}
			if err := k.stop(); err != nil {
				t.Errorf("kvd stop: %v", err)
			}
		})
	}
}

// txKey names key i of group g; i = -1 is the group's counter.
func txKey(g, i int) string {
	if i < 0 {
		return fmt.Sprintf("tx:%d:n", g)
	}
	return fmt.Sprintf("tx:%d:%d", g, i)
}
