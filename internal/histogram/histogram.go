// Package histogram is a log-linear latency histogram in the manner of HDR
// histograms: values below 256 are counted exactly; larger values fall into
// buckets 1/128 of a power of two wide, so a reported value is within 0.8%
// of the recorded one. It holds a fixed array of counters, whatever the
// number of samples.
package histogram

import (
	"math"
	"math/bits"
	"time"
)

const (
	exact   = 256 // values below this have a bucket each
	subBits = 7   // 2^7 buckets per power of two above that
	sub     = 1 << subBits
	buckets = exact + (64-subBits-1)*sub
)

// Histogram counts durations. The zero value is empty and ready to use. It
// is not safe for concurrent use: give each goroutine its own and Merge them.
type Histogram struct {
	counts   [buckets]uint64
	n        uint64
	sum      float64
	min, max uint64
}

func index(v uint64) int {
	if v < exact {
		return int(v)
	}
	shift := bits.Len64(v) - (subBits + 1)
	return exact + (shift-1)*sub + int(v>>shift) - sub
}

// upper returns the largest value that falls into bucket i.
func upper(i int) uint64 {
	if i < exact {
		return uint64(i)
	}
	shift := (i-exact)/sub + 1
	lo := uint64((i-exact)%sub+sub) << shift
	return lo + (1 << shift) - 1
}

// Record adds one duration (negative durations count as zero).
func (h *Histogram) Record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[index(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	h.max = max(h.max, v)
	h.n++
	h.sum += float64(v)
}

// Merge adds every sample of o.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// Count returns the number of samples.
func (h *Histogram) Count() uint64 { return h.n }

// Max returns the largest sample, exactly.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Min returns the smallest sample, exactly.
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) }

// Mean returns the mean of the samples.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Quantile returns the value at or below which a fraction q (0..1) of the
// samples lie, rounded up to its bucket's largest value and capped at Max.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(upper(i), h.max))
		}
	}
	return time.Duration(h.max)
}
