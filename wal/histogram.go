package wal

import "time"

// A Histogram counts observations in buckets of fixed upper bounds, as a
// Prometheus histogram does: Counts[i] is the number of observations at
// most Bounds[i] and above Bounds[i-1], and the last count, one past the
// bounds, those above every bound. Sum is the sum of all observations.
// A Histogram returned by Stats is a copy; its Bounds are shared and must
// not be modified.
type Histogram struct {
	Bounds []float64
	Counts []uint64
	Sum    float64
}

// Count returns the number of observations.
func (h Histogram) Count() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// The bounds of the fsync histograms of Stats: fsync durations in seconds
// from 10µs to 1.3s, and records per fsync from 1 to 8192, each bound
// twice the one before.
var (
	fsyncSecondsBounds    = exponentialBounds(10e-6, 18)
	recordsPerFsyncBounds = exponentialBounds(1, 14)
)

func exponentialBounds(start float64, n int) []float64 {
	b := make([]float64, n)
	for i := range b {
		b[i] = start
		start *= 2
	}
	return b
}

// histogram is the Log's running count behind a Histogram. It is guarded by
// the lock of the Log's field that holds it.
type histogram struct {
	bounds []float64
	counts []uint64
	sum    float64
}

func newHistogram(bounds []float64) histogram {
	return histogram{bounds: bounds, counts: make([]uint64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	i := 0
	for i < len(h.bounds) && v > h.bounds[i] {
		i++
	}
	h.counts[i]++
	h.sum += v
}

func (h *histogram) observeDuration(d time.Duration) { h.observe(d.Seconds()) }

func (h *histogram) snapshot() Histogram {
	return Histogram{Bounds: h.bounds, Counts: append([]uint64(nil), h.counts...), Sum: h.sum}
}
