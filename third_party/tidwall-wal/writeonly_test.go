package wal

import (
	"fmt"
	"os"
	"runtime"
	"testing"
)

// TestLogWriteOnly runs upstream's testLog (writes, reads, truncations at
// both ends, reopening) with the WriteOnly option of the patch
// (PATCHES.md, fourth part).
func TestLogWriteOnly(t *testing.T) {
	os.RemoveAll("testlog")
	defer os.RemoveAll("testlog")
	for _, lf := range []LogFormat{Binary, JSON} {
		for _, noSync := range []bool{true, false} {
			for _, allowEmpty := range []bool{false, true} {
				opts := makeOpts(512, noSync, lf, allowEmpty)
				opts.WriteOnly = true
				n := 500
				if !noSync {
					n = 100
				}
				t.Run(fmt.Sprintf("format-%d/nosync-%t/allowempty-%t", lf, noSync, allowEmpty), func(t *testing.T) {
					testLog(t, opts, n)
				})
			}
		}
	}
}

// TestWriteOnlyHoldsNothing checks that a WriteOnly log keeps no entries in
// memory while it writes and cycles segments, and that it reads its tail
// back from the file only as far as it wrote it: kvd zero-fills its tail
// file ahead of the entries.
func TestWriteOnlyHoldsNothing(t *testing.T) {
	const segSize = 64 << 10
	dir := t.TempDir()
	opts := &Options{NoSync: true, SegmentSize: segSize, WriteOnly: true, AllowEmpty: true}
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	var index uint64
	var before, after runtime.MemStats
	data := func(i uint64) string { return fmt.Sprintf("entry %d %0100d", i, 0) }
	write := func(n int) {
		t.Helper()
		entries := make([][]byte, n) // made before writing: see the allocation check
		for i := range entries {
			entries[i] = []byte(data(index + 1 + uint64(i)))
		}
		runtime.ReadMemStats(&before)
		for _, e := range entries {
			index++
			if err := l.Write(index, e); err != nil {
				t.Fatal(err)
			}
		}
		runtime.ReadMemStats(&after)
	}
	readAll := func(when string) {
		t.Helper()
		first, _ := l.FirstIndex()
		last, _ := l.LastIndex()
		if last != index {
			t.Fatalf("%s: last index %d, want %d", when, last, index)
		}
		for i := first; i <= last; i++ {
			got, err := l.Read(i)
			if err != nil {
				t.Fatalf("%s: read %d: %v", when, i, err)
			}
			if string(got) != data(i) {
				t.Fatalf("%s: read %d: %q", when, i, got)
			}
		}
	}
	held := func(when string) {
		t.Helper()
		tail := l.segments[len(l.segments)-1]
		if tail.ebuf != nil || tail.epos != nil {
			t.Fatalf("%s: the tail holds %d bytes, %d entries", when, len(tail.ebuf), len(tail.epos))
		}
		if len(l.spares) != 0 {
			t.Fatalf("%s: %d spare buffers kept", when, len(l.spares))
		}
	}

	write(3000) // several segments
	if len(l.segments) < 4 {
		t.Fatalf("%d segments, want several", len(l.segments))
	}
	held("after cycling")
	if l.scache.Len() != 0 {
		t.Fatalf("%d sealed segments cached by writing", l.scache.Len())
	}
	// Writing 3000 entries of 111 bytes (333 KiB) allocates no segment's
	// worth of buffer: only what cycling needs besides.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > segSize {
		t.Fatalf("writing allocated %d bytes, want less than a segment (%d)", alloc, segSize)
	}

	// Zero-fill the tail file ahead of the entries, as kvd does.
	f, err := os.OpenFile(l.segments[len(l.segments)-1].path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 8192), int64(l.tailSize)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	readAll("zero-filled tail")
	held("after reading")
	write(10) // over the zeros
	readAll("written over the zeros")

	if err := l.TruncateBack(index - 5); err != nil { // inside the tail
		t.Fatal(err)
	}
	index -= 5
	held("after TruncateBack")
	write(3)
	readAll("after TruncateBack")
	if err := l.TruncateFront(index - 2); err != nil { // inside the tail
		t.Fatal(err)
	}
	held("after TruncateFront")
	write(1500) // a few more segments
	readAll("after TruncateFront")
	if err := l.TruncateFront(l.segments[1].index); err != nil { // a segment's start
		t.Fatal(err)
	}
	readAll("after TruncateFront at a segment's start")
	if err := l.TruncateBack(l.segments[1].index + 3); err != nil { // a sealed segment becomes the tail
		t.Fatal(err)
	}
	index = l.segments[1].index + 3
	held("after TruncateBack into a sealed segment")
	write(5)
	readAll("after TruncateBack into a sealed segment")

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if l, err = Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	held("reopened")
	if l.tailEntries != int(index-l.segments[len(l.segments)-1].index+1) {
		t.Fatalf("reopened: %d tail entries counted", l.tailEntries)
	}
	readAll("reopened")
	write(700)
	readAll("reopened and written")
}
