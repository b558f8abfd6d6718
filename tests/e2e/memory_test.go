package e2e

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/internal/kvtest"
)

// memoryStatus is what the tests read of GET /v1/status.
type memoryStatus struct {
	Checkpoints uint64 `json:"checkpoints"`
	Memory      struct {
		MaxMemory        int64 `json:"max_memory"`
		MemtableBytes    int64 `json:"memtable_bytes"`
		MemtableMaxBytes int64 `json:"memtable_max_bytes"`
		GoMemoryLimit    int64 `json:"go_memory_limit"`
		HeapLiveBytes    int64 `json:"heap_live_bytes"`
		HeapTotalBytes   int64 `json:"heap_total_bytes"`
		RSSAnonBytes     int64 `json:"rss_anon_bytes"`
		RSSFileBytes     int64 `json:"rss_file_bytes"`
	} `json:"memory"`
}

// TestGarbageCollectorTarget: kvd runs the garbage collector with GOGC=200
// unless the environment sets GOGC, and INFO memory reports what is in
// effect along with the heap and the resident set.
func TestGarbageCollectorTarget(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		want string
	}{
		{nil, "200"},
		{[]string{"GOGC=50"}, "50"},
		{[]string{"GOGC=off"}, "off"},
	} {
		p := startKVDEnv(t, tc.env, "")
		c, err := client.Dial(t.Context(), p.RESPAddr, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(t.Context(), "memory")
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		fields := map[string]string{}
		for _, line := range strings.Split(info, "\r\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				fields[k] = v
			}
		}
		if fields["gogc"] != tc.want {
			t.Errorf("env %q: INFO memory gogc:%q, want %q\n%s", tc.env, fields["gogc"], tc.want, info)
		}
		for _, k := range []string{"used_memory", "used_memory_rss"} {
			if n, err := strconv.ParseInt(fields[k], 10, 64); err != nil || n <= 0 {
				t.Errorf("env %q: INFO memory %s:%q, want a positive number\n%s", tc.env, k, fields[k], info)
			}
		}
	}
}

// TestMaxMemory: --max-memory (default 1GiB) is reported by INFO memory,
// /v1/status and /metrics with the memtables' bound derived from it (a
// quarter), and is the Go runtime's soft memory limit unless GOMEMLIMIT is
// set. Under a small budget a write load many times the memtables' share
// is checkpointed as it comes and never held in memory.
func TestMaxMemory(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		env, args            []string
		budget, memMax, goML int64
	}{
		{"default", []string{"GOMEMLIMIT="}, nil, 1 << 30, 256 << 20, 1 << 30},
		{"flag", []string{"GOMEMLIMIT="}, []string{"--max-memory", "64MiB"}, 64 << 20, 16 << 20, 64 << 20},
		{"env", []string{"GOMEMLIMIT=", "KVD_MAX_MEMORY=32MiB"}, nil, 32 << 20, 8 << 20, 32 << 20},
		{"GOMEMLIMIT", []string{"GOMEMLIMIT=100MiB"}, []string{"--max-memory", "64MiB"}, 64 << 20, 16 << 20, 100 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startKVDEnv(t, tc.env, "", tc.args...)
			c, err := client.Dial(t.Context(), p.RESPAddr, client.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			info, err := c.Info(t.Context(), "memory")
			if err != nil {
				t.Fatal(err)
			}
			fields := map[string]string{}
			for _, line := range strings.Split(info, "\r\n") {
				if k, v, ok := strings.Cut(line, ":"); ok {
					fields[k] = v
				}
			}
			for k, want := range map[string]int64{"max_memory": tc.budget, "memtable_max_bytes": tc.memMax, "go_memory_limit": tc.goML} {
				if got := fields[k]; got != strconv.FormatInt(want, 10) {
					t.Errorf("INFO memory %s:%s, want %d\n%s", k, got, want, info)
				}
			}

			var st memoryStatus
			if err := kvtest.GetJSON(t.Context(), http.DefaultClient, "http://"+p.HTTPAddr+"/v1/status", &st); err != nil {
				t.Fatal(err)
			}
			if m := st.Memory; m.MaxMemory != tc.budget || m.MemtableMaxBytes != tc.memMax || m.GoMemoryLimit != tc.goML {
				t.Errorf("/v1/status memory = %+v, want budget %d, memtable bound %d, Go memory limit %d",
					m, tc.budget, tc.memMax, tc.goML)
			}
			_, metrics := httpGet(t, "http://"+p.HTTPAddr+"/metrics")
			for name, want := range map[string]int64{"kvd_memory_budget_bytes": tc.budget, "kvd_memtable_max_bytes": tc.memMax} {
				if line := name + " " + strconv.FormatFloat(float64(want), 'g', -1, 64) + "\n"; !strings.Contains(metrics, line) {
					t.Errorf("/metrics lacks %q", line)
				}
			}
		})
	}

	t.Run("load", func(t *testing.T) {
		// 16MiB: memtables of 4MiB, checkpoints from 1MiB.
		const memMax = 4 << 20
		p := startKVD(t, "", "--max-memory", "16MiB", "--commit-mode", "async")
		const n, batch = 40_000, 100 // 40 MiB of values, ten times the memtables' share
		var peak int64
		writeLoad(t, p, n, batch, 10, func() {
			var st memoryStatus
			if err := kvtest.GetJSON(t.Context(), http.DefaultClient, "http://"+p.HTTPAddr+"/v1/status", &st); err != nil {
				t.Fatal(err)
			}
			peak = max(peak, st.Memory.MemtableBytes)
		})
		var st memoryStatus
		if err := kvtest.GetJSON(t.Context(), http.DefaultClient, "http://"+p.HTTPAddr+"/v1/status", &st); err != nil {
			t.Fatal(err)
		}
		// One batch of slack: the one that found the memtables under
		// their bound and was applied.
		if slack := int64(batch * (1<<10 + 128)); peak > memMax+slack || st.Memory.MemtableBytes > memMax+slack {
			t.Errorf("memtables held %d bytes at most, %d at the end; bound %d plus %d", peak, st.Memory.MemtableBytes, memMax, slack)
		}
		if st.Checkpoints < n<<10/memMax {
			t.Errorf("%d checkpoints for %d MiB written under memtables of %d MiB", st.Checkpoints, n>>10, memMax>>20)
		}
		t.Logf("memory after the load: %+v", st.Memory)
	})
}
