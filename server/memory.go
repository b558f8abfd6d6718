package server

import (
	"math"
	"runtime/metrics"
	"strconv"

	"github.com/prometheus/procfs"
)

// memoryStats is what INFO's memory section, /v1/status and /metrics report
// of the process's memory.
type memoryStats struct {
	heapBytes     uint64 // bytes in heap objects, live or not yet swept
	heapLive      uint64 // heap the last garbage collection found live
	heapTotal     uint64 // heap memory held from the OS: objects, unused and free spans
	heapReleased  uint64 // heap memory returned to the OS, address space only
	goMemoryLimit int64  // the runtime's soft memory limit (math.MaxInt64: none)
	rssBytes      int    // resident set size; -1 when unknown
	// rssAnon and rssFile split the resident set (Linux, /proc/self/status
	// RssAnon and RssFile): anonymous memory (the heap, stacks) and pages
	// of mapped files (the state file, the binary), which the kernel may
	// reclaim. -1 when unknown.
	rssAnon, rssFile int64
	gcPercent        string // GOGC in effect: a percentage or "off"
	gcCycles         uint64 // completed garbage collection cycles
}

func readMemoryStats() memoryStats {
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/gogc:percent"},
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
		{Name: "/gc/gomemlimit:bytes"},
	}
	metrics.Read(samples)
	u := func(i int) uint64 {
		if v := samples[i].Value; v.Kind() == metrics.KindUint64 {
			return v.Uint64()
		}
		return 0
	}
	st := memoryStats{rssBytes: -1, rssAnon: -1, rssFile: -1}
	st.heapBytes = u(0)
	if v := samples[1].Value; v.Kind() == metrics.KindUint64 {
		st.gcPercent = strconv.FormatUint(v.Uint64(), 10)
		if v.Uint64() == math.MaxUint64 { // how the runtime reports GOGC=off
			st.gcPercent = "off"
		}
	}
	st.gcCycles = u(2)
	st.heapLive = u(3)
	st.heapTotal = u(0) + u(4) + u(5)
	st.heapReleased = u(6)
	st.goMemoryLimit = int64(min(u(7), math.MaxInt64))
	// As the process collector behind /metrics reads it
	// (process_resident_memory_bytes).
	if p, err := procfs.Self(); err == nil {
		if s, err := p.Stat(); err == nil {
			st.rssBytes = s.ResidentMemory()
		}
		// Older kernels (before 4.5) have no RssAnon and RssFile.
		if s, err := p.NewStatus(); err == nil && s.VmRSS > 0 && s.RssAnon+s.RssFile+s.RssShmem > 0 {
			st.rssAnon, st.rssFile = int64(s.RssAnon), int64(s.RssFile)
		}
	}
	return st
}

// MemoryStatus is the "memory" object of GET /v1/status. Byte counts that
// the system does not report (the resident set's split, outside Linux) are
// 0.
type MemoryStatus struct {
	// MaxMemory is kvd's memory budget (Config.MaxMemory; 0 if not set).
	MaxMemory int64 `json:"max_memory"`
	// MemtableBytes is what the store's memtables hold, MemtableMaxBytes
	// their bound, past which writes wait for a checkpoint.
	MemtableBytes    int64 `json:"memtable_bytes"`
	MemtableMaxBytes int64 `json:"memtable_max_bytes"`
	// HeapLiveBytes is the Go heap the last garbage collection found
	// live (0 before the first one); HeapTotalBytes the heap memory the runtime holds from the
	// system (live objects, garbage not yet collected, free spans not yet
	// returned); HeapReleasedBytes what it returned.
	HeapLiveBytes     uint64 `json:"heap_live_bytes"`
	HeapTotalBytes    uint64 `json:"heap_total_bytes"`
	HeapReleasedBytes uint64 `json:"heap_released_bytes"`
	// GoMemoryLimit is the Go runtime's soft memory limit
	// (9223372036854775807: none).
	GoMemoryLimit int64 `json:"go_memory_limit"`
	// RSSAnonBytes and RSSFileBytes are the anonymous and file-backed
	// resident memory (Linux /proc/self/status RssAnon, RssFile): the
	// state file's pages are file-backed, page cache the kernel may
	// reclaim.
	RSSAnonBytes int64 `json:"rss_anon_bytes"`
	RSSFileBytes int64 `json:"rss_file_bytes"`
}

// memoryStatus is the "memory" object of /v1/status.
func (s *Server) memoryStatus(memtable, memtableMax int64) MemoryStatus {
	m := readMemoryStats()
	return MemoryStatus{
		MaxMemory:         s.cfg.MaxMemory,
		MemtableBytes:     memtable,
		MemtableMaxBytes:  memtableMax,
		HeapLiveBytes:     m.heapLive,
		HeapTotalBytes:    m.heapTotal,
		HeapReleasedBytes: m.heapReleased,
		GoMemoryLimit:     m.goMemoryLimit,
		RSSAnonBytes:      max(m.rssAnon, 0),
		RSSFileBytes:      max(m.rssFile, 0),
	}
}
