package wal_test

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvdstore/kvd/wal"
)

// BenchmarkWriteStalls measures how long a writer waits for each record to
// be written while the log starts new segments (of 64, 16 and 8 MiB: one
// sub-benchmark each) and another goroutine drops the sealed ones, as the
// engine's checkpointer does after each checkpoint. Each iteration writes
// 384 MiB of 4 KiB records to a new log and reports the waits over 2 ms (waits>2ms), the longest TruncateFront
// call (max-truncate-ms, freeing the dropped files included), and the
// longest wait for one record of three kinds: a write that overlapped a
// truncation (max-wait-truncating-ms), a write that started a segment
// (max-wait-new-segment-ms), and any other (max-wait-other-ms).
//
//	go test -run '^$' -bench WriteStalls -benchtime 3x ./wal/
func BenchmarkWriteStalls(b *testing.B) {
	for _, segSize := range []int{64 << 20, 16 << 20, 8 << 20} {
		b.Run(fmt.Sprintf("segment=%dMiB", segSize>>20), func(b *testing.B) { benchWriteStalls(b, segSize) })
	}
}

func benchWriteStalls(b *testing.B, segSize int) {
	const written = 384 << 20
	rec := bytes.Repeat([]byte("x"), 4<<10)
	var maxTrunc, maxTruncating, maxNewSeg, maxOther time.Duration
	slow := 0
	for b.Loop() {
		l, err := wal.Open(b.TempDir(), 1, wal.Options{SegmentSize: segSize}, nil)
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		var truncating atomic.Int64 // truncations begun; odd while one runs
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // the checkpointer's truncations
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				case <-time.After(time.Millisecond):
				}
				if l.Stats().Segments < 3 {
					continue
				}
				truncating.Add(1)
				start := time.Now()
				err := l.TruncateFront(l.Written())
				maxTrunc = max(maxTrunc, time.Since(start))
				truncating.Add(1)
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
		segs := l.Stats().Segments
		for range written / len(rec) {
			t0 := truncating.Load()
			start := time.Now()
			rev, err := l.Enqueue(rec, nil)
			if err == nil {
				err = l.WaitWritten(rev)
			}
			if err != nil {
				b.Fatal(err)
			}
			d := time.Since(start)
			if d > 2*time.Millisecond {
				slow++
			}
			now := l.Stats().Segments
			switch {
			case t0%2 == 1 || truncating.Load() != t0:
				maxTruncating = max(maxTruncating, d)
			case now > segs:
				maxNewSeg = max(maxNewSeg, d)
			default:
				maxOther = max(maxOther, d)
			}
			segs = now
		}
		close(done)
		wg.Wait()
		if err := l.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(slow)/float64(b.N), "waits>2ms")
	b.ReportMetric(float64(maxTrunc)/1e6, "max-truncate-ms")
	b.ReportMetric(float64(maxTruncating)/1e6, "max-wait-truncating-ms")
	b.ReportMetric(float64(maxNewSeg)/1e6, "max-wait-new-segment-ms")
	b.ReportMetric(float64(maxOther)/1e6, "max-wait-other-ms")
}
