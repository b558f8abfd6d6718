package watch_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/watchcheck"
	"github.com/kvdstore/kvd/watch"
)

// record reads w until it has seen revision last (progress included),
// recording every delivery.
func record(t *testing.T, w *watch.Watcher, h *watchcheck.History, last uint64, limit int) error {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		sets, progress, err := w.Next(limit)
		if err != nil {
			return err
		}
		for _, cs := range sets {
			d := watchcheck.Delivery{Revision: cs.Revision}
			for _, c := range cs.Changes {
				d.Changes = append(d.Changes, watchcheck.Change{Key: string(c.Key), Value: string(c.Value), Delete: c.Delete})
			}
			h.Deliveries = append(h.Deliveries, d)
		}
		h.Deliveries = append(h.Deliveries, watchcheck.Delivery{Revision: progress, Progress: true})
		if progress >= last {
			return nil
		}
		if len(sets) == 0 {
			select {
			case <-w.Ready():
			case <-deadline:
				return fmt.Errorf("no progress past %d, want %d", progress, last)
			}
		}
	}
}

// writeLoad writes n batches over keys a/0..a/9 and b/0..b/9, each batch two
// or three keys, some deletes, and returns the reference of each revision.
func writeLoad(t *testing.T, db *engine.DB, n int, ref map[uint64][]watchcheck.Change) uint64 {
	t.Helper()
	var last uint64
	for i := range n {
		var b engine.Batch
		var cs []watchcheck.Change
		for j := range 2 + i%2 {
			k := fmt.Sprintf("%c/%d", "ab"[(i+j)%2], (i*7+j)%10)
			if i%5 == 4 && j == 0 {
				b.Delete([]byte(k))
				cs = append(cs, watchcheck.Change{Key: k, Delete: true})
				continue
			}
			v := fmt.Sprintf("v%d", i)
			b.Put([]byte(k), []byte(v))
			cs = append(cs, watchcheck.Change{Key: k, Value: v})
		}
		rev, err := db.Write(&b, engine.WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ref[rev] = cs
		last = rev
	}
	return last
}

func open(t *testing.T, opts engine.Options) *engine.DB {
	t.Helper()
	db, err := engine.Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestHubDeliversEveryRevision watches a prefix, an exact key and every
// key, durable and written, live and from an old revision, with a buffer so
// small that the live watchers overflow into catch-up, and checks each
// recorded history with the validator.
func TestHubDeliversEveryRevision(t *testing.T) {
	db := open(t, engine.Options{CommitMode: engine.CommitAsync, CheckpointLogBytes: 16 << 10})
	h := watch.NewHub(db, watch.Options{Buffer: 8})
	defer h.Close()
	ref := map[uint64][]watchcheck.Change{}
	first := writeLoad(t, db, 50, ref)
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		f       watch.Filter
		from    uint64
		written bool
	}{
		{"prefix a/ from 1", watch.Filter{Key: []byte("a/"), Prefix: true}, 1, false},
		{"every key from 10, written", watch.Filter{Prefix: true}, 10, true},
		{"key b/3 live", watch.Filter{Key: []byte("b/3")}, 0, false},
		{"prefix b/ live, written", watch.Filter{Key: []byte("b/"), Prefix: true}, 0, true},
	}
	ws := make([]*watch.Watcher, len(cases))
	hs := make([]watchcheck.History, len(cases))
	for i, c := range cases {
		w, err := h.Watch(c.f, c.from, c.written)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		ws[i] = w
		hs[i].From = c.from
		if c.from == 0 {
			hs[i].From = first + 1
		}
	}
	// Half read as the writes go, half only after them (they overflow).
	errc := make(chan error, 2)
	var last uint64
	done := make(chan struct{})
	for i := range 2 {
		go func() {
			<-done
			errc <- record(t, ws[i], &hs[i], last, 5)
		}()
	}
	last = writeLoad(t, db, 400, ref)
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	close(done)
	for i := 2; i < len(cases); i++ {
		if err := record(t, ws[i], &hs[i], last, 0); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range cases {
		match := func(k string) bool { return c.f.Match([]byte(k)) }
		if errs := watchcheck.Check(hs[i], ref, match); len(errs) > 0 {
			t.Errorf("%s:\n%s", c.name, watchcheck.Summary(errs))
		}
		if len(hs[i].Deliveries) < 3 {
			t.Errorf("%s: only %d deliveries", c.name, len(hs[i].Deliveries))
		}
	}
	if s := h.Stats(); s.Overflows == 0 {
		t.Errorf("no watcher overflowed its buffer of 8: the catch-up path went untested (%+v)", s)
	}
}

// TestHubCompacted checks that a watcher that stays behind while the
// history is pruned past it ends with a CompactedError naming the oldest
// revision, and that one from a future revision waits for it.
func TestHubCompacted(t *testing.T) {
	db := open(t, engine.Options{HistoryRevisions: 5, HistoryAge: time.Nanosecond, CheckpointLogBytes: 1 << 10})
	h := watch.NewHub(db, watch.Options{Buffer: 4})
	defer h.Close()
	slow, err := h.Watch(watch.Filter{Prefix: true}, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	future, err := h.Watch(watch.Filter{Key: []byte("k")}, 205, false)
	if err != nil {
		t.Fatal(err)
	}
	ref := map[uint64][]watchcheck.Change{}
	writeLoad(t, db, 200, ref)
	var ce *engine.CompactedError
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, _, err := slow.Next(1)
		if errors.As(err, &ce) {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("a watcher behind the history: %v, want a CompactedError", err)
		}
		if _, err := db.Put([]byte("x"), []byte("y"), engine.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if ce.Oldest <= ce.Requested || ce.Oldest != db.OldestRevision() && ce.Oldest > db.OldestRevision() {
		t.Fatalf("compacted: %+v, oldest now %d", ce, db.OldestRevision())
	}
	if s := h.Stats(); s.Compacted != 1 {
		t.Fatalf("stats %+v: want 1 compacted", s)
	}
	// The future watcher has nothing until revision 205 is written.
	for db.WrittenRevision() < 204 {
		if _, err := db.Put([]byte("k"), []byte("early"), engine.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sets, _, err := future.Next(0)
	if err != nil || len(sets) != 0 {
		t.Fatalf("a watch from the future revision 205 at %d: %v, %v", db.WrittenRevision(), sets, err)
	}
	rev, err := db.Put([]byte("k"), []byte("now"), engine.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []engine.ChangeSet
	for len(got) == 0 {
		select {
		case <-future.Ready():
		case <-time.After(20 * time.Second):
			t.Fatal("the future watcher was not woken")
		}
		if got, _, err = future.Next(0); err != nil {
			t.Fatal(err)
		}
	}
	if got[0].Revision != rev || rev < 205 || string(got[0].Changes[0].Value) != "now" {
		t.Fatalf("future watcher got %v, want revision %d's put", got, rev)
	}
}

// TestHubLimits checks MaxWatchers and that Close ends watchers.
func TestHubLimits(t *testing.T) {
	db := open(t, engine.Options{})
	h := watch.NewHub(db, watch.Options{MaxWatchers: 2})
	w1, _ := h.Watch(watch.Filter{Key: []byte("a")}, 0, false)
	if _, err := h.Watch(watch.Filter{Key: []byte("a")}, 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Watch(watch.Filter{Key: []byte("a")}, 0, false); !errors.Is(err, watch.ErrTooManyWatchers) {
		t.Fatalf("a third watcher over a limit of 2: %v", err)
	}
	w1.Close()
	if _, err := h.Watch(watch.Filter{Key: []byte("a")}, 0, false); err != nil {
		t.Fatalf("after one closed: %v", err)
	}
	h.Close()
	if _, _, err := w1.Next(0); !errors.Is(err, watch.ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
}

// TestWatchFuncTryNext drives a watcher as an event loop does: it waits for
// WatchFunc's notify, not Ready, takes what the hub holds with TryNext, and
// calls Next only when TryNext says the watcher is catching up. Started
// from an old revision, with a buffer small enough to overflow, the history
// it records must pass the validator, and Close must notify too.
func TestWatchFuncTryNext(t *testing.T) {
	db := open(t, engine.Options{CommitMode: engine.CommitAsync})
	ref := map[uint64][]watchcheck.Change{}
	writeLoad(t, db, 30, ref)
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	// Started after the writes, the hub dispatches from revision 31 on.
	h := watch.NewHub(db, watch.Options{Buffer: 4})
	defer h.Close()
	notified := make(chan struct{}, 1)
	w, err := h.WatchFunc(watch.Filter{Key: []byte("a/"), Prefix: true}, 1, false, func() {
		select {
		case notified <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok, err := w.TryNext(0); ok || err != nil {
		t.Fatalf("TryNext of a watcher catching up: ok %v, err %v; want ok false", ok, err)
	}
	hist := watchcheck.History{From: 1}
	var last uint64
	var reads, takes int
	// consume takes what the watcher has each time it notifies, until
	// it has been given revision want (0: until want arrives on writes).
	consume := func(want uint64, writes <-chan uint64) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for want == 0 || last < want {
			select {
			case <-notified:
			case want = <-writes:
				if err := db.Sync(); err != nil {
					t.Error(err)
				}
				continue
			case <-deadline:
				t.Fatalf("at revision %d, want %d (%d reads, %d takes)", last, want, reads, takes)
			}
			sets, progress, ok, err := w.TryNext(3)
			if ok {
				takes++
			} else {
				reads++
				sets, progress, err = w.Next(3)
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, cs := range sets {
				d := watchcheck.Delivery{Revision: cs.Revision}
				for _, c := range cs.Changes {
					d.Changes = append(d.Changes, watchcheck.Change{Key: string(c.Key), Value: string(c.Value), Delete: c.Delete})
				}
				hist.Deliveries = append(hist.Deliveries, d)
			}
			hist.Deliveries = append(hist.Deliveries, watchcheck.Delivery{Revision: progress, Progress: true})
			last = progress
		}
	}
	// Catching up while the writes go on, then live.
	writes := make(chan uint64, 1)
	go func() { writes <- writeLoad(t, db, 300, ref) }()
	consume(0, writes)
	for range 10 { // every batch of writeLoad changes a key of a/
		rev := writeLoad(t, db, 1, ref)
		if err := db.Sync(); err != nil {
			t.Fatal(err)
		}
		consume(rev, nil)
	}
	if errs := watchcheck.Check(hist, ref, func(k string) bool { return k[:2] == "a/" }); len(errs) > 0 {
		t.Fatal(watchcheck.Summary(errs))
	}
	if reads == 0 || takes == 0 {
		t.Fatalf("%d reads of the history and %d takes from the hub, want both", reads, takes)
	}
	select {
	case <-notified:
	default:
	}
	w.Close()
	select {
	case <-notified:
	default:
		t.Fatal("Close did not notify")
	}
	if _, _, ok, err := w.TryNext(0); !ok || !errors.Is(err, watch.ErrClosed) {
		t.Fatalf("TryNext after Close: ok %v, err %v", ok, err)
	}
}

// TestWrittenDeliveryNotHeldUntilFlush: a watcher of written revisions
// gets a write as soon as it is written, not at the next fsync. The log's
// flush interval is 3 seconds, so a delivery held until the fsync (or
// until a later write wakes the hub) misses the bound of one second.
func TestWrittenDeliveryNotHeldUntilFlush(t *testing.T) {
	db := open(t, engine.Options{CommitMode: engine.CommitAsync, FlushInterval: 3 * time.Second})
	h := watch.NewHub(db, watch.Options{})
	defer h.Close()
	w, err := h.Watch(watch.Filter{Key: []byte("k")}, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := range 300 {
		// Wait for the flush of the previous write: each write then comes
		// to an idle log, with the next fsync three seconds away.
		if err := db.Sync(); err != nil {
			t.Fatal(err)
		}
		var b engine.Batch
		b.Put([]byte("k"), fmt.Appendf(nil, "v%d", i))
		rev, err := db.Write(&b, engine.WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		deadline := time.After(time.Second)
	wait:
		for {
			sets, _, _, err := w.TryNext(10)
			if err != nil {
				t.Fatal(err)
			}
			for _, cs := range sets {
				if cs.Revision == rev {
					break wait
				}
			}
			select {
			case <-w.Ready():
			case <-deadline:
				t.Fatalf("write %d (revision %d): not delivered to a watcher of written revisions within a second (durable %d)", i, rev, db.DurableRevision())
			}
		}
		if d := time.Since(start); d > 10*time.Millisecond {
			t.Logf("write %d delivered after %v", i, d)
		}
	}
}

// TestHubIdleBetweenWatchers: with no watcher the hub dispatches nothing;
// the writes made while it was idle, and those after, reach watchers that
// come later, live and from an old revision, whole and in order.
func TestHubIdleBetweenWatchers(t *testing.T) {
	db := open(t, engine.Options{CommitMode: engine.CommitAsync})
	h := watch.NewHub(db, watch.Options{})
	defer h.Close()
	ref := map[uint64][]watchcheck.Change{}
	for round := range 3 {
		idle := writeLoad(t, db, 30, ref) // no watcher
		if err := db.Sync(); err != nil {
			t.Fatal(err)
		}
		live, err := h.Watch(watch.Filter{Prefix: true}, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		old, err := h.Watch(watch.Filter{Key: []byte("a/"), Prefix: true}, 1, true)
		if err != nil {
			t.Fatal(err)
		}
		last := writeLoad(t, db, 30, ref)
		if err := db.Sync(); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			w     *watch.Watcher
			from  uint64
			match func(string) bool
		}{
			{live, idle + 1, func(string) bool { return true }},
			{old, 1, func(k string) bool { return len(k) >= 2 && k[:2] == "a/" }},
		} {
			hist := watchcheck.History{From: c.from}
			if err := record(t, c.w, &hist, last, 0); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			if errs := watchcheck.Check(hist, ref, c.match); len(errs) > 0 {
				t.Fatalf("round %d, from %d:\n%s", round, c.from, watchcheck.Summary(errs))
			}
		}
		live.Close()
		old.Close()
	}
}
