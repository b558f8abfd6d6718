package engine_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kvdstore/kvd/engine"
)

// Benchmarks for the targets. Run them all with
//
//	go test -run '^$' -bench . -benchtime 3s ./engine/
//
// Each reports ops/s, latency percentiles and, for writes, fsyncs/op. The
// raw write+fdatasync loop is the baseline to compare the sync latency with,
// measured in the same run.

const benchValueSize = 100

// latencies collects per-operation durations from several goroutines.
type latencies struct {
	mu  sync.Mutex
	all []time.Duration
}

func (l *latencies) add(d []time.Duration) {
	l.mu.Lock()
	l.all = append(l.all, d...)
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B, elapsed time.Duration) {
	if len(l.all) == 0 {
		return
	}
	slices.Sort(l.all)
	pct := func(p float64) float64 {
		return float64(l.all[int(p*float64(len(l.all)-1))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(float64(len(l.all))/elapsed.Seconds(), "ops/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// BenchmarkRawFdatasync is the floor of a sync commit: append a record-sized
// block to a file and fdatasync it.
func BenchmarkRawFdatasync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "raw"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, benchValueSize+40) // value plus framing, as in the log
	var lat latencies
	start := time.Now()
	for b.Loop() {
		t0 := time.Now()
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			b.Fatal(err)
		}
		lat.all = append(lat.all, time.Since(t0))
	}
	lat.report(b, time.Since(start))
}

// BenchmarkRawFdatasyncConcurrentAppends is the same fdatasync loop while
// another goroutine keeps appending to the file, as writers do during a
// group commit: it shows whether concurrent appends slow the fsync itself.
func BenchmarkRawFdatasyncConcurrentAppends(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "raw"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, benchValueSize+40)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := f.Write(buf); err != nil {
				b.Error(err)
				return
			}
			time.Sleep(20 * time.Microsecond)
		}
	}()
	var lat latencies
	start := time.Now()
	for b.Loop() {
		t0 := time.Now()
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			b.Fatal(err)
		}
		lat.all = append(lat.all, time.Since(t0))
	}
	elapsed := time.Since(start)
	close(stop)
	<-done
	lat.report(b, elapsed)
}

func BenchmarkPut(b *testing.B) {
	for _, mode := range []engine.CommitMode{engine.CommitSync, engine.CommitAsync} {
		for _, writers := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/writers=%d", mode, writers), func(b *testing.B) {
				benchPut(b, mode, writers)
			})
		}
	}
}

func benchPut(b *testing.B, mode engine.CommitMode, writers int) {
	db, err := engine.Open(b.TempDir(), engine.Options{CommitMode: mode})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	val := make([]byte, benchValueSize)
	before := db.Stats()
	var lat latencies
	start := time.Now()
	if writers == 1 {
		rng := rand.New(rand.NewPCG(1, 1))
		key := make([]byte, 16)
		for b.Loop() {
			binary.BigEndian.PutUint64(key, rng.Uint64N(100_000))
			t0 := time.Now()
			if _, err := db.Put(key, val, engine.WriteOptions{}); err != nil {
				b.Fatal(err)
			}
			lat.all = append(lat.all, time.Since(t0))
		}
	} else {
		b.SetParallelism(max(1, writers/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
			key := make([]byte, 16)
			var mine []time.Duration
			for pb.Next() {
				binary.BigEndian.PutUint64(key, rng.Uint64N(100_000))
				t0 := time.Now()
				if _, err := db.Put(key, val, engine.WriteOptions{}); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			lat.add(mine)
		})
	}
	elapsed := time.Since(start)
	after := db.Stats()
	ops := float64(after.WrittenRevision - before.WrittenRevision)
	lat.report(b, elapsed)
	b.ReportMetric(float64(after.Fsyncs-before.Fsyncs)/ops, "fsyncs/op")
}

// BenchmarkGet reads random keys of a store holding 1M keys, all in the
// state file, from GOMAXPROCS goroutines.
func BenchmarkGet(b *testing.B) {
	const keys = 1_000_000
	dir := b.TempDir()
	db, err := engine.Open(dir, engine.Options{CommitMode: engine.CommitAsync})
	if err != nil {
		b.Fatal(err)
	}
	val := make([]byte, benchValueSize)
	var batch engine.Batch
	key := make([]byte, 16)
	for i := range keys {
		binary.BigEndian.PutUint64(key, uint64(i))
		batch.Put(key, val)
		if batch.Len() == 1000 {
			if _, err := db.Write(&batch, engine.WriteOptions{}); err != nil {
				b.Fatal(err)
			}
			batch.Reset()
		}
	}
	if err := db.Close(); err != nil { // checkpoints everything
		b.Fatal(err)
	}
	db, err = engine.Open(dir, engine.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), 2))
		key := make([]byte, 16)
		for pb.Next() {
			binary.BigEndian.PutUint64(key, rng.Uint64N(keys))
			if _, err := db.Get(key); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}

// BenchmarkRecovery reopens a store whose last 1M records were never
// checkpointed: a child process writes them and is killed with SIGKILL.
func BenchmarkRecovery(b *testing.B) {
	const records = 1_000_000
	dir := b.TempDir()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnvDir+"="+dir, childEnvMode+"=fill", "KVD_FILL_RECORDS="+fmt.Sprint(records))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil || string(out) != "filled\n" {
		b.Fatalf("fill child: %v %q", err, out)
	}
	for b.Loop() {
		b.StopTimer()
		run := b.TempDir()
		if out, err := exec.Command("cp", "-a", dir+"/.", run).CombinedOutput(); err != nil {
			b.Fatalf("copy fixture: %v %s", err, out)
		}
		b.StartTimer()
		start := time.Now()
		db, err := engine.Open(run, engine.Options{})
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		b.StopTimer()
		st := db.Stats()
		if st.WrittenRevision != records || st.CheckpointedRevision != 0 {
			b.Fatalf("recovered %+v", st)
		}
		b.ReportMetric(took.Seconds(), "open-s")
		db.Close()
		b.StartTimer()
	}
}
