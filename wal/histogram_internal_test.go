package wal

import (
	"testing"
	"time"
)

// TestHistogramBuckets checks where observations land: at a bound is in
// its bucket, above every bound in the last one.
func TestHistogramBuckets(t *testing.T) {
	h := newHistogram([]float64{1, 2, 4})
	for _, v := range []float64{0, 1, 1.5, 2, 3, 4, 5, 100} {
		h.observe(v)
	}
	s := h.snapshot()
	want := []uint64{2, 2, 2, 2}
	for i := range want {
		if s.Counts[i] != want[i] {
			t.Fatalf("counts %v, want %v", s.Counts, want)
		}
	}
	if s.Count() != 8 || s.Sum != 116.5 {
		t.Fatalf("count %d, sum %v; want 8, 116.5", s.Count(), s.Sum)
	}
	h.observe(1)
	if s.Counts[1] != 2 {
		t.Fatal("a snapshot changed with the histogram")
	}
}

// TestStatsFsyncHistograms checks that the fsync histograms count every
// fsync of the log and every record they made durable.
func TestStatsFsyncHistograms(t *testing.T) {
	l, err := Open(t.TempDir(), 1, Options{FlushInterval: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 20 {
		var last uint64
		for range i%3 + 1 {
			if last, err = l.Enqueue([]byte("record"), nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.WaitDurable(last); err != nil {
			t.Fatal(err)
		}
	}
	st := l.Stats()
	if st.Fsyncs == 0 || st.FsyncSeconds.Count() != st.Fsyncs || st.RecordsPerFsync.Count() != st.Fsyncs {
		t.Fatalf("%d fsyncs; histograms count %d durations and %d record counts",
			st.Fsyncs, st.FsyncSeconds.Count(), st.RecordsPerFsync.Count())
	}
	if uint64(st.RecordsPerFsync.Sum) != st.RecordsSynced || st.RecordsSynced != st.Durable {
		t.Fatalf("records per fsync sum to %v, %d records synced, durable %d", st.RecordsPerFsync.Sum, st.RecordsSynced, st.Durable)
	}
	if st.FsyncSeconds.Sum <= 0 || st.FsyncSeconds.Sum > 20*st.MaxFsync.Seconds() {
		t.Fatalf("fsync seconds sum %v with %d fsyncs, the slowest %v", st.FsyncSeconds.Sum, st.Fsyncs, st.MaxFsync)
	}
}
