package engine

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"
)

// BenchmarkCheckpoint times one checkpoint of the memtable that 5 s of the
// server's async SET load leaves behind: 475,000 overwrites of random keys
// out of 100,000 (redis-benchmark's -r 100000 key names, 100-byte values),
// over a state file that already holds every key. It reports the wall time,
// the CPU time of the process (the garbage collection of the dropped
// memtable included) and the time all CPUs were busy (/proc/stat: the
// kernel's writeback too) per checkpoint.
//
//	go test -run '^$' -bench Checkpoint -benchtime 5x ./engine/
func BenchmarkCheckpoint(b *testing.B) {
	const keys, writes = 100_000, 475_000
	db, err := Open(b.TempDir(), Options{CommitMode: CommitAsync, CheckpointInterval: time.Hour,
		CheckpointBytes: 1 << 40, CheckpointLogBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	val := make([]byte, 100)
	rng := rand.New(rand.NewPCG(1, 2))
	fill := func(n int, random bool) {
		var batch Batch
		for i := range n {
			k := i
			if random {
				k = rng.IntN(keys)
			}
			batch.Put(fmt.Appendf(nil, "key:%012d", k), val)
			if batch.Len() == 100 || i == n-1 {
				if _, err := db.Write(&batch, WriteOptions{}); err != nil {
					b.Fatal(err)
				}
				batch.Reset()
			}
		}
	}
	fill(keys, false)
	if err := db.checkpoint(); err != nil {
		b.Fatal(err)
	}
	var took, cpu, sys time.Duration
	for b.Loop() {
		b.StopTimer()
		fill(writes, true)
		runtime.GC()
		b.StartTimer()
		start, c0, s0 := time.Now(), processCPU(b), systemBusy(b)
		if err := db.checkpoint(); err != nil {
			b.Fatal(err)
		}
		runtime.GC() // the collection of the dropped memtable
		took += time.Since(start)
		cpu += processCPU(b) - c0
		sys += systemBusy(b) - s0
	}
	b.ReportMetric(float64(took.Milliseconds())/float64(b.N), "ms/checkpoint")
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/checkpoint")
	b.ReportMetric(float64(sys.Milliseconds())/float64(b.N), "system-busy-ms/checkpoint")
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// systemBusy is the time all CPUs spent not idle, from /proc/stat.
func systemBusy(b *testing.B) time.Duration {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		b.Fatal(err)
	}
	st, err := fs.Stat()
	if err != nil {
		b.Fatal(err)
	}
	c := st.CPUTotal
	busy := c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ + c.Steal
	return time.Duration(busy * float64(time.Second))
}
