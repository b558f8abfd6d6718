package watch_test

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/watch"
)

// The watch benchmarks, in process over an engine in async mode:
//
//	go test -run '^$' -bench 'DeliveryLatency|CatchUp' -benchtime 1x ./watch/
//	go test -run '^$' -bench WriteThroughput -benchtime 50000x -count 3 ./watch/
//
// BenchmarkDeliveryLatency: commit-to-delivery latency (from just before
// the write is submitted to the moment a watcher's consumer has its change)
// at 10,000 writes/s with 100 prefix watchers, each write matching one of
// them, for written delivery (durable delivery adds the flush interval).
// BenchmarkWriteThroughput: writes/s with 0 and with 1,000 idle watchers.
// BenchmarkCatchUp: events/s a watcher reads from 100,000 revisions of
// history, most of them checkpointed.

func BenchmarkDeliveryLatency(b *testing.B) {
	const watchers, rate, writes = 100, 10_000, 20_000
	for b.Loop() {
		db, err := engine.Open(b.TempDir(), engine.Options{CommitMode: engine.CommitAsync})
		if err != nil {
			b.Fatal(err)
		}
		h := watch.NewHub(db, watch.Options{})
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		ws := make([]*watch.Watcher, watchers)
		for i := range ws {
			w, err := h.Watch(watch.Filter{Key: fmt.Appendf(nil, "p/%02d/", i), Prefix: true}, 0, true)
			if err != nil {
				b.Fatal(err)
			}
			ws[i] = w
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				for n := 0; n < writes/watchers; {
					<-w.Ready()
					sets, _, err := w.Next(0)
					if err != nil {
						b.Error(err)
						return
					}
					now := time.Now()
					for _, cs := range sets {
						for _, c := range cs.Changes {
							mine = append(mine, now.Sub(time.Unix(0, int64(binary.BigEndian.Uint64(c.Value)))))
							n++
						}
					}
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
		}
		start := time.Now()
		for i := range writes {
			if d := time.Until(start.Add(time.Duration(i) * time.Second / rate)); d > 0 {
				time.Sleep(d)
			}
			v := binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixNano()))
			if _, err := db.Put(fmt.Appendf(nil, "p/%02d/%d", i%watchers, i), v, engine.WriteOptions{}); err != nil {
				b.Fatal(err)
			}
		}
		elapsed := time.Since(start)
		wg.Wait()
		h.Close()
		db.Close()
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		b.ReportMetric(float64(writes)/elapsed.Seconds(), "writes/s")
	}
}

func BenchmarkWriteThroughput(b *testing.B) {
	for _, idle := range []int{0, 1000} {
		b.Run(fmt.Sprintf("idle-watchers=%d", idle), func(b *testing.B) {
			db, err := engine.Open(b.TempDir(), engine.Options{CommitMode: engine.CommitAsync})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			h := watch.NewHub(db, watch.Options{})
			defer h.Close()
			for i := range idle {
				f := watch.Filter{Key: fmt.Appendf(nil, "idle/%d", i), Prefix: i%2 == 0}
				if _, err := h.Watch(f, 0, i%3 == 0); err != nil {
					b.Fatal(err)
				}
			}
			v := make([]byte, 100)
			i := 0
			start := time.Now()
			for b.Loop() {
				if _, err := db.Put(fmt.Appendf(nil, "k/%d", i%100_000), v, engine.WriteOptions{}); err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(i)/time.Since(start).Seconds(), "writes/s")
		})
	}
}

func BenchmarkCatchUp(b *testing.B) {
	const revs = 100_000
	db, err := engine.Open(b.TempDir(), engine.Options{CommitMode: engine.CommitAsync, CheckpointLogBytes: 4 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	v := make([]byte, 100)
	var batch engine.Batch
	for i := range revs {
		batch.Reset()
		batch.Put(fmt.Appendf(nil, "k/%d", i%10_000), v)
		if _, err := db.Write(&batch, engine.WriteOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	if err := db.Sync(); err != nil {
		b.Fatal(err)
	}
	h := watch.NewHub(db, watch.Options{})
	defer h.Close()
	for b.Loop() {
		w, err := h.Watch(watch.Filter{Key: []byte("k/"), Prefix: true}, 1, false)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		n := 0
		for n < revs {
			sets, _, err := w.Next(10_000)
			if err != nil {
				b.Fatal(err)
			}
			for _, cs := range sets {
				n += len(cs.Changes)
			}
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "events/s")
		w.Close()
	}
}
