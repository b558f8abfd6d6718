package server

import (
	"bytes"
	"math"
	"os"
	"runtime/metrics"
	"strconv"
)

// memoryStats is what INFO's memory section reports.
type memoryStats struct {
	heapBytes uint64 // bytes in heap objects, live or not yet swept
	rssBytes  int64  // resident set size; -1 when unknown
	gcPercent string // GOGC in effect: a percentage or "off"
	gcCycles  uint64 // completed garbage collection cycles
}

var memorySamples = []metrics.Sample{
	{Name: "/memory/classes/heap/objects:bytes"},
	{Name: "/gc/gogc:percent"},
	{Name: "/gc/cycles/total:gc-cycles"},
}

func readMemoryStats() memoryStats {
	samples := append([]metrics.Sample(nil), memorySamples...)
	metrics.Read(samples)
	st := memoryStats{rssBytes: residentBytes()}
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
	return st
}

// residentBytes is the process's resident set size from /proc/self/statm,
// or -1 where there is none.
func residentBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return -1
	}
	f := bytes.Fields(b)
	if len(f) < 2 {
		return -1
	}
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return -1
	}
	return pages * int64(os.Getpagesize())
}
