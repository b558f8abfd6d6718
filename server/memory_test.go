package server_test

import (
	"encoding/json"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/kvtest"
	"github.com/kvdstore/kvd/server"
)

// TestMemoryReport: INFO memory, /v1/status and /metrics report the
// memory budget, the memtables against their bound, the Go heap and the
// resident set split into anonymous and file-backed memory.
func TestMemoryReport(t *testing.T) {
	const budget, memMax = 64 << 20, 16 << 20
	ts := startServer(t, serverOpts{
		cfg:    server.Config{MaxMemory: budget},
		engine: engine.Options{MaxMemtableBytes: memMax, CheckpointBytes: 4 << 20},
	})
	c := dialRaw(t, ts.respAddr)
	if got := c.do("SET", "k", strings.Repeat("v", 1000)); got != "+OK\r\n" {
		t.Fatalf("SET = %q", got)
	}
	linux := runtime.GOOS == "linux"
	runtime.GC() // the live heap is 0 until the first collection

	info := c.do("INFO", "memory")
	fields := map[string]string{}
	for _, line := range strings.Split(info, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = v
		}
	}
	num := func(k string) int64 {
		t.Helper()
		n, err := strconv.ParseInt(fields[k], 10, 64)
		if err != nil {
			t.Errorf("INFO memory %s:%q, want a number\n%s", k, fields[k], info)
		}
		return n
	}
	if n := num("max_memory"); n != budget {
		t.Errorf("max_memory:%d, want %d", n, budget)
	}
	if n := num("memtable_max_bytes"); n != memMax {
		t.Errorf("memtable_max_bytes:%d, want %d", n, memMax)
	}
	if n := num("memtable_bytes"); n < 1000 || n > memMax {
		t.Errorf("memtable_bytes:%d after a SET of 1000 bytes", n)
	}
	live, total := num("heap_live_bytes"), num("heap_total_bytes")
	if live <= 0 || total < live {
		t.Errorf("heap_live_bytes:%d heap_total_bytes:%d, want 0 < live <= total", live, total)
	}
	if n := num("go_memory_limit"); n <= 0 {
		t.Errorf("go_memory_limit:%d", n)
	}
	if linux {
		if a, f := num("rss_anon_bytes"), num("rss_file_bytes"); a <= 0 || f <= 0 {
			t.Errorf("rss_anon_bytes:%d rss_file_bytes:%d, want both positive on Linux", a, f)
		}
	}

	r := doHTTP(t, "GET", "http://"+ts.httpAddr+"/v1/status", nil, nil)
	var st server.Status
	if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		t.Fatal(err)
	}
	m := st.Memory
	if m.MaxMemory != budget || m.MemtableMaxBytes != memMax || m.MemtableBytes < 1000 ||
		m.HeapLiveBytes == 0 || m.HeapTotalBytes < m.HeapLiveBytes || (linux && (m.RSSAnonBytes <= 0 || m.RSSFileBytes <= 0)) {
		t.Errorf("/v1/status memory = %+v", m)
	}
	var raw struct {
		Memory map[string]json.Number `json:"memory"`
	}
	if err := json.Unmarshal([]byte(r.body), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"max_memory", "memtable_bytes", "memtable_max_bytes", "heap_live_bytes",
		"heap_total_bytes", "heap_released_bytes", "go_memory_limit", "rss_anon_bytes", "rss_file_bytes"} {
		if _, ok := raw.Memory[k]; !ok {
			t.Errorf("/v1/status lacks memory.%s: %s", k, r.body)
		}
	}

	body := doHTTP(t, "GET", "http://"+ts.httpAddr+"/metrics", nil, nil).body
	if v := metricValue(t, body, "kvd_memory_budget_bytes"); v != budget {
		t.Errorf("kvd_memory_budget_bytes %v, want %d", v, budget)
	}
	if v := metricValue(t, body, "kvd_memtable_max_bytes"); v != memMax {
		t.Errorf("kvd_memtable_max_bytes %v, want %d", v, memMax)
	}
	for _, name := range []string{"kvd_memtable_bytes", "kvd_heap_live_bytes", "kvd_heap_total_bytes"} {
		if v := metricValue(t, body, name); v <= 0 {
			t.Errorf("%s %v, want positive", name, v)
		}
	}
	for _, name := range []string{"kvd_rss_anon_bytes", "kvd_rss_file_bytes"} {
		if v := metricValue(t, body, name); linux && v <= 0 {
			t.Errorf("%s %v, want positive on Linux", name, v)
		}
	}
}

// TestDiskReport: INFO persistence, /v1/status and /metrics report the
// state file's size against the keys and bytes it holds once they are
// checkpointed.
func TestDiskReport(t *testing.T) {
	ts := startServer(t, serverOpts{engine: engine.Options{CheckpointInterval: 10 * time.Millisecond}})
	c := dialRaw(t, ts.respAddr)
	for _, kv := range [][2]string{{"k1", "12345"}, {"key2", strings.Repeat("v", 1000)}} {
		if got := c.do("SET", kv[0], kv[1]); got != "+OK\r\n" {
			t.Fatalf("SET = %q", got)
		}
	}
	const keys, data = 2, 2 + 5 + 4 + 1000
	var st server.Status
	kvtest.Eventually(t, 10*time.Second, "the two keys to be checkpointed", func() bool {
		r := doHTTP(t, "GET", "http://"+ts.httpAddr+"/v1/status", nil, nil)
		if err := json.Unmarshal([]byte(r.body), &st); err != nil {
			t.Fatal(err)
		}
		return st.Disk.StateKeys == keys
	})
	if d := st.Disk; d.StateDataBytes != data || d.StateFileBytes < data || d.StateFreeBytes < 0 || d.StateFreeBytes > d.StateFileBytes {
		t.Errorf("/v1/status disk = %+v, want %d keys of %d bytes", d, keys, data)
	}
	// The history's log holds both writes, with about 40 bytes of
	// framing each.
	if d := st.Disk; d.HistoryBytes < data || d.HistoryBytes > data+100 {
		t.Errorf("/v1/status disk history_bytes = %d, want the %d bytes of the two writes and their framing", d.HistoryBytes, data)
	}
	info := c.do("INFO", "persistence")
	for k, want := range map[string]string{"state_keys": "2", "state_data_bytes": strconv.Itoa(data)} {
		if !strings.Contains(info, "\r\n"+k+":"+want+"\r\n") {
			t.Errorf("INFO persistence lacks %s:%s\n%s", k, want, info)
		}
	}
	if !strings.Contains(info, "\r\nstate_file_bytes:") || !strings.Contains(info, "\r\nstate_free_bytes:") {
		t.Errorf("INFO persistence lacks state_file_bytes or state_free_bytes\n%s", info)
	}
	body := doHTTP(t, "GET", "http://"+ts.httpAddr+"/metrics", nil, nil).body
	if v := metricValue(t, body, "kvd_state_keys"); v != keys {
		t.Errorf("kvd_state_keys %v, want %d", v, keys)
	}
	if v := metricValue(t, body, "kvd_state_data_bytes"); v != data {
		t.Errorf("kvd_state_data_bytes %v, want %d", v, data)
	}
	if v := metricValue(t, body, "kvd_state_file_bytes"); v < data {
		t.Errorf("kvd_state_file_bytes %v, want at least %d", v, data)
	}
	metricValue(t, body, "kvd_state_free_bytes")
	if v := metricValue(t, body, "kvd_history_bytes"); v != float64(st.Disk.HistoryBytes) {
		t.Errorf("kvd_history_bytes %v, /v1/status says %d", v, st.Disk.HistoryBytes)
	}
	if !strings.Contains(info, "\r\nhistory_bytes:"+strconv.FormatInt(st.Disk.HistoryBytes, 10)+"\r\n") {
		t.Errorf("INFO persistence lacks history_bytes:%d\n%s", st.Disk.HistoryBytes, info)
	}
}
