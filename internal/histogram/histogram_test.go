package histogram_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/histogram"
)

func TestSmallValuesAreExact(t *testing.T) {
	var h histogram.Histogram
	for v := range 256 {
		h.Record(time.Duration(v))
	}
	for _, q := range []float64{0.01, 0.5, 0.99, 1} {
		want := time.Duration(int(q*256+0.999999) - 1)
		if got := h.Quantile(q); got != want {
			t.Errorf("Quantile(%v) = %v, want %v", q, got, want)
		}
	}
	if h.Min() != 0 || h.Max() != 255 || h.Count() != 256 || h.Mean() != 127 {
		t.Errorf("min %v max %v count %d mean %v", h.Min(), h.Max(), h.Count(), h.Mean())
	}
}

// TestQuantilesMatchSortedSamples compares with exact quantiles of the same
// samples: within the 1/128 bucket width.
func TestQuantilesMatchSortedSamples(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	var h histogram.Histogram
	var all []time.Duration
	for range 100_000 {
		// Log-uniform from 1µs to 1s, like latencies.
		d := time.Duration(float64(time.Microsecond) * math.Pow(1e6, rng.Float64()))
		h.Record(d)
		all = append(all, d)
	}
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
		exact := all[int(q*float64(len(all)-1))]
		got := h.Quantile(q)
		if got < exact || float64(got-exact) > float64(exact)/128+1 {
			t.Errorf("Quantile(%v) = %v, exact %v: off by more than a bucket", q, got, exact)
		}
	}
	if h.Max() != all[len(all)-1] || h.Min() != all[0] {
		t.Errorf("max %v min %v, want %v %v", h.Max(), h.Min(), all[len(all)-1], all[0])
	}
}

func TestMergeEqualsRecordingAll(t *testing.T) {
	var a, b, all histogram.Histogram
	for i := range 5000 {
		d := time.Duration(i*i) * time.Nanosecond
		all.Record(d)
		if i%3 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
	}
	a.Merge(&b)
	for _, q := range []float64{0, 0.25, 0.5, 0.75, 0.99, 1} {
		if a.Quantile(q) != all.Quantile(q) {
			t.Errorf("Quantile(%v): merged %v, recorded %v", q, a.Quantile(q), all.Quantile(q))
		}
	}
	if a.Count() != all.Count() || a.Max() != all.Max() || a.Min() != all.Min() || a.Mean() != all.Mean() {
		t.Error("merged summary differs")
	}
	var empty histogram.Histogram
	if empty.Quantile(0.5) != 0 || empty.Mean() != 0 {
		t.Error("empty histogram reports values")
	}
}

func TestHugeValues(t *testing.T) {
	var h histogram.Histogram
	h.Record(time.Duration(1<<62 + 12345))
	h.Record(-5)
	if got := h.Quantile(1); got != time.Duration(1<<62+12345) {
		t.Errorf("max quantile %v", got)
	}
	if h.Quantile(0.5) != 0 {
		t.Errorf("negative sample not counted as zero: %v", h.Quantile(0.5))
	}
}
