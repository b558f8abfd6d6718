package crash_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kvdstore/kvd/internal/watchcheck"
)

// pullChanges runs CHANGES FROM from PREFIX prefix with rdb and returns its
// deliveries (one per revision, then the progress mark) and next.
func pullChanges(ctx context.Context, rdb *redis.Client, from uint64, prefix string, extra ...any) ([]watchcheck.Delivery, uint64, error) {
	args := append([]any{"changes", "from", from, "prefix", prefix, "count", 100000}, extra...)
	res, err := rdb.Do(ctx, args...).Slice()
	if err != nil {
		return nil, 0, err
	}
	if len(res) != 3 {
		return nil, 0, fmt.Errorf("CHANGES reply %v", res)
	}
	var out []watchcheck.Delivery
	for _, e := range res[1].([]any) {
		f := e.([]any)
		rev := uint64(f[0].(int64))
		c := watchcheck.Change{Key: f[2].(string), Delete: f[1].(string) == "del"}
		if v, ok := f[3].(string); ok {
			c.Value = v
		}
		if len(out) == 0 || out[len(out)-1].Revision != rev {
			out = append(out, watchcheck.Delivery{Revision: rev})
		}
		out[len(out)-1].Changes = append(out[len(out)-1].Changes, c)
	}
	next := uint64(res[0].(int64))
	out = append(out, watchcheck.Delivery{Revision: uint64(res[2].(int64)), Progress: true})
	return out, next, nil
}

// pullAll pulls every change from revision from on, page by page (one
// CHANGES reply holds at most its COUNT of changes), up to the newest
// revision the store has.
func pullAll(ctx context.Context, rdb *redis.Client, from uint64, prefix string, extra ...any) ([]watchcheck.Delivery, error) {
	var out []watchcheck.Delivery
	for {
		ds, next, err := pullChanges(ctx, rdb, from, prefix, extra...)
		if err != nil {
			return nil, err
		}
		out = append(out, ds...)
		if len(ds) == 1 || next == from { // only the progress mark: the end
			return out, nil
		}
		from = next
	}
}

// TestKill9Watch watches a prefix (durable revisions, the default) while
// batches are written in async mode and kvd is killed with SIGKILL and
// restarted, the watch resuming each time from the revision after the last
// one it saw. At the end the recorded history is checked against the
// history kvd reports after the last restart: every revision delivered is
// there, with the same changes, nothing is missing or repeated, and every
// progress mark held.
func TestKill9Watch(t *testing.T) {
	rng := seeded(t)
	cfg := kvdConfig{dataDir: t.TempDir(), mode: "async", checkpointInterval: 50 * time.Millisecond}
	k := startKVD(t, cfg)
	h := watchcheck.History{From: 1}
	next := uint64(1)
	for cycle := range pick(3, 10) {
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { // the writer: batches of two keys, and deletes
			defer wg.Done()
			w := k.redis()
			defer w.Close()
			for i := 0; ctx.Err() == nil; i++ {
				var err error
				if i%5 == 4 {
					err = w.Del(ctx, fmt.Sprintf("w/%d", i%40)).Err()
				} else {
					err = w.MSet(ctx, fmt.Sprintf("w/%d", i%40), fmt.Sprint(cycle, ".", i), fmt.Sprintf("w/%d", (i+3)%40), "x").Err()
				}
				if err != nil {
					return // killed
				}
			}
		}()
		var mu sync.Mutex
		go func() { // the watcher
			defer wg.Done()
			r := k.redis()
			defer r.Close()
			for ctx.Err() == nil {
				ds, n, err := pullChanges(ctx, r, next, "w/", "block", 100)
				if err != nil {
					return
				}
				mu.Lock()
				h.Deliveries = append(h.Deliveries, ds...)
				next = n
				mu.Unlock()
			}
		}()
		time.Sleep(time.Duration(200+rng.IntN(400)) * time.Millisecond)
		k.kill()
		cancel()
		wg.Wait()
		k = startKVD(t, cfg)
	}
	// Catch up with what the last restart holds, then compare.
	r := k.redis()
	defer r.Close()
	ds, err := pullAll(t.Context(), r, next, "w/")
	if err != nil {
		t.Fatal(err)
	}
	h.Deliveries = append(h.Deliveries, ds...)
	all, err := pullAll(t.Context(), r, 1, "", "durability", "written")
	if err != nil {
		t.Fatal(err)
	}
	ref := map[uint64][]watchcheck.Change{}
	for _, d := range all {
		if !d.Progress {
			ref[d.Revision] = d.Changes
		}
	}
	if errs := watchcheck.Check(h, ref, func(k string) bool { return strings.HasPrefix(k, "w/") }); len(errs) > 0 {
		t.Fatalf("the watch across kill -9:\n%s", watchcheck.Summary(errs))
	}
	if len(ref) < 100 {
		t.Fatalf("only %d revisions written: the test wrote too little", len(ref))
	}
	t.Logf("%d revisions, %d deliveries", len(ref), len(h.Deliveries))
	if err := k.stop(); err != nil {
		t.Errorf("kvd stop: %v", err)
	}
}
