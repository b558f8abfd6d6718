package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/internal/kvtest"
)

// TestMemoryReturnedAfterLoad: after a write load that filled the heap
// up to its budget, kvd's anonymous resident memory falls back to within
// 96 MiB of what it was before the load within 30 s of the load's end,
// instead of staying near the budget until Go's periodic collection two
// minutes later. (The target is 64 MiB, which bench/memory-redis.sh
// measures; 40-72 MiB were measured here, and 229 MiB with kvd's release
// turned off. The bound leaves room for a busy machine.)
func TestMemoryReturnedAfterLoad(t *testing.T) {
	if runtime.GOOS != "linux" {
		kvtest.Require(t, "needs Linux, whose /proc/PID/status has RssAnon")
	}
	// 256MiB: memtables of 64 MiB, checkpoints from 16 MiB.
	p := startKVD(t, "", "--max-memory", "256MiB", "--commit-mode", "async", "--checkpoint-interval", "1s")
	status := func() memoryStatus {
		t.Helper()
		var st memoryStatus
		if err := kvtest.GetJSON(t.Context(), http.DefaultClient, "http://"+p.HTTPAddr+"/v1/status", &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	base := status().Memory.RSSAnonBytes
	if base == 0 {
		kvtest.Require(t, "needs RssAnon in /proc/PID/status (Linux 4.5 or later)")
	}
	const n, batch = 160_000, 200 // 160 MiB of values, every key new
	var peak int64
	writeLoad(t, p, n, batch, 50, func() { peak = max(peak, status().Memory.RSSAnonBytes) })
	end := time.Now()
	st := status()
	t.Logf("anonymous memory: %d MiB before the load, %d MiB at most during it, %d MiB at its end (heap held %d MiB)",
		base>>20, max(peak, st.Memory.RSSAnonBytes)>>20, st.Memory.RSSAnonBytes>>20, st.Memory.HeapTotalBytes>>20)
	kvtest.Eventually(t, 30*time.Second, "anonymous memory to fall within 96 MiB of its start", func() bool {
		st = status()
		return st.Memory.RSSAnonBytes <= base+96<<20
	})
	t.Logf("%v after the load: anonymous memory %d MiB, heap held %d MiB, live %d MiB", time.Since(end).Round(100*time.Millisecond),
		st.Memory.RSSAnonBytes>>20, st.Memory.HeapTotalBytes>>20, st.Memory.HeapLiveBytes>>20)
}

// writeLoad writes n new keys key-00000000... of 1 KiB values to p, batch
// keys to a PutMany, and calls sample before every every'th batch.
func writeLoad(t *testing.T, p *kvtest.Proc, n, batch, every int, sample func()) {
	t.Helper()
	c, err := client.Dial(t.Context(), p.RESPAddr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	val := bytes.Repeat([]byte("v"), 1<<10)
	for i := 0; i < n; i += batch {
		kvs := make([]client.KV, batch)
		for j := range kvs {
			kvs[j] = client.KV{Key: fmt.Sprintf("key-%08d", i+j), Value: val}
		}
		if err := c.PutMany(t.Context(), kvs); err != nil {
			t.Fatal(err)
		}
		if i%(every*batch) == 0 {
			sample()
		}
	}
}
