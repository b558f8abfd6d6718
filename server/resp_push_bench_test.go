package server_test

import (
	"strconv"
	"sync"
	"testing"
)

// BenchmarkKVWatchFanout measures a write's delivery to 1 and 100 RESP3
// watchers of its key, one per connection: each op is a SET, acknowledged,
// then its push frame read by every watcher (written delivery: no wait for
// an fsync beyond the SET's own).
//
//	go test -run '^$' -bench KVWatchFanout -benchtime 2000x ./server/
func BenchmarkKVWatchFanout(b *testing.B) {
	for _, model := range respIOs {
		for _, watchers := range []int{1, 100} {
			b.Run(model+"/watchers="+strconv.Itoa(watchers), func(b *testing.B) {
				benchFanout(b, model, watchers)
			})
		}
	}
}

func benchFanout(b *testing.B, model string, watchers int) {
	ts := startServer(b, serverOpts{io: model})
	subs := make([]*rawConn, watchers)
	for i := range subs {
		c := dialRaw(b, ts.respAddr)
		c.do("HELLO", "3")
		c.do("KVWATCH", "KEY", "k", "DURABILITY", "written", "PROGRESS", "86400000")
		subs[i] = c
	}
	w := dialRaw(b, ts.respAddr)
	got := make([]chan struct{}, watchers)
	var wg sync.WaitGroup
	for i, c := range subs {
		got[i] = make(chan struct{}, 1)
		go func() {
			for {
				v, _, err := readValue(c.r)
				if err != nil {
					return
				}
				if isEvent(v) {
					got[i] <- struct{}{}
					wg.Done()
				}
			}
		}()
	}
	n := 0
	for b.Loop() {
		n++
		wg.Add(watchers)
		if r := w.do("SET", "k", strconv.Itoa(n)); r != ok {
			b.Fatalf("SET: %q", r)
		}
		wg.Wait()
		for _, ch := range got {
			<-ch
		}
	}
	b.ReportMetric(float64(watchers), "deliveries/op")
}
