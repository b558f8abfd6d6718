package server

import (
	"math"
	"runtime/metrics"
	"strconv"

	"github.com/prometheus/procfs"
)

// memoryStats is what INFO's memory section reports.
type memoryStats struct {
	heapBytes uint64 // bytes in heap objects, live or not yet swept
	rssBytes  int    // resident set size; -1 when unknown
	gcPercent string // GOGC in effect: a percentage or "off"
	gcCycles  uint64 // completed garbage collection cycles
}

func readMemoryStats() memoryStats {
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/gc/gogc:percent"},
		{Name: "/gc/cycles/total:gc-cycles"},
	}
	metrics.Read(samples)
	st := memoryStats{rssBytes: -1}
	if v := samples[0].Value; v.Kind() == metrics.KindUint64 {
		st.heapBytes = v.Uint64()
	}
	if v := samples[1].Value; v.Kind() == metrics.KindUint64 {
		st.gcPercent = strconv.FormatUint(v.Uint64(), 10)
		if v.Uint64() == math.MaxUint64 { // how the runtime reports GOGC=off
			st.gcPercent = "off"
		}
	}
	if v := samples[2].Value; v.Kind() == metrics.KindUint64 {
		st.gcCycles = v.Uint64()
	}
	// As the process collector behind /metrics reads it
	// (process_resident_memory_bytes).
	if p, err := procfs.Self(); err == nil {
		if s, err := p.Stat(); err == nil {
			st.rssBytes = s.ResidentMemory()
		}
	}
	return st
}
