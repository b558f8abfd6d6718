package wal

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
)

// TestTailBufferReserved checks the patch (PATCHES.md): the tail segment's
// entries buffer has room for a whole segment however the tail came to be.
func TestTailBufferReserved(t *testing.T) {
	const segSize = 64 << 10
	dir := t.TempDir()
	opts := &Options{NoSync: true, SegmentSize: segSize}
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		tail := l.segments[len(l.segments)-1]
		if cap(tail.ebuf) < segSize {
			t.Fatalf("%s: tail buffer capacity %d, want at least %d", when, cap(tail.ebuf), segSize)
		}
	}
	check("new log")
	var index uint64
	write := func(n int) {
		for i := 0; i < n; i++ {
			index++
			if err := l.Write(index, []byte(fmt.Sprintf("entry %d %0100d", index, 0))); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(1500) // several segments
	if len(l.segments) < 3 {
		t.Fatalf("%d segments, want several", len(l.segments))
	}
	check("after cycling")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if l, err = Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	check("reopened")
	write(10)
	if err := l.TruncateBack(index - 5); err != nil {
		t.Fatal(err)
	}
	index -= 5
	check("after TruncateBack")
	if err := l.TruncateFront(index - 2); err != nil { // into the tail
		t.Fatal(err)
	}
	if len(l.segments) != 1 {
		t.Fatalf("%d segments after truncating into the tail, want 1", len(l.segments))
	}
	check("after TruncateFront into the tail")
	write(10)
	for i := index - 9; i <= index; i++ {
		if _, err := l.Read(i); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
}

// TestTailBufferRecycled checks the patch's second part (PATCHES.md): a new
// segment takes the buffer of a segment dropped from the cache, by eviction
// or by a truncation, instead of allocating one; not with NoCopy, whose reads
// return slices of the buffer.
func TestTailBufferRecycled(t *testing.T) {
	const segSize = 64 << 10
	entry := bytes.Repeat([]byte("x"), 1000)
	for _, noCopy := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoCopy=%v", noCopy), func(t *testing.T) {
			l, err := Open(t.TempDir(), &Options{NoSync: true, SegmentSize: segSize, NoCopy: noCopy})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			var index uint64
			write := func(n int) {
				for i := 0; i < n; i++ {
					index++
					if err := l.Write(index, entry); err != nil {
						t.Fatal(err)
					}
				}
			}
			// allocated returns the bytes allocated by f per segment it
			// starts.
			allocated := func(f func()) uint64 {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				before, segs := ms.TotalAlloc, len(l.segments)
				f()
				runtime.ReadMemStats(&ms)
				n := len(l.segments) - segs
				if n < 1 {
					t.Fatalf("no new segment")
				}
				return (ms.TotalAlloc - before) / uint64(n)
			}
			write(400) // several segments: the cache is full
			cycling := allocated(func() { write(2000) })
			if err := l.TruncateFront(index - 10); err != nil {
				t.Fatal(err)
			}
			// The truncation uncached every segment; the next two new
			// ones (the cache holds two) take their buffers.
			segs := len(l.segments)
			afterTruncate := allocated(func() { write(140) })
			if len(l.segments)-segs != 2 {
				t.Fatalf("setup: %d new segments after the truncation, want 2", len(l.segments)-segs)
			}
			buf := uint64(segSize + 64<<10) // a tail buffer
			if noCopy {
				if cycling < buf || afterTruncate < buf {
					t.Fatalf("with NoCopy, new segments allocated %d and %d bytes each, want a new %d-byte buffer", cycling, afterTruncate, buf)
				}
				return
			}
			if cycling > buf/4 || afterTruncate > buf/4 {
				t.Fatalf("new segments allocated %d bytes each while cycling and %d after a truncation; a buffer is %d", cycling, afterTruncate, buf)
			}
		})
	}
}

// TestTruncateFrontAtSegmentStart checks the patch's third part
// (PATCHES.md): truncating at the first index of a segment deletes the
// segments before it and rewrites no file, the tail's included, even when
// the tail holds no entry yet.
func TestTruncateFrontAtSegmentStart(t *testing.T) {
	const segSize = 8 << 10
	dir := t.TempDir()
	opts := &Options{NoSync: true, SegmentSize: segSize, AllowEmpty: true}
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	entry := bytes.Repeat([]byte("x"), 1000)
	var index uint64
	for len(l.segments) < 5 {
		index++
		if err := l.Write(index, entry); err != nil {
			t.Fatal(err)
		}
	}
	stat := func(s *segment) os.FileInfo {
		t.Helper()
		fi, err := os.Stat(s.path)
		if err != nil {
			t.Fatal(err)
		}
		return fi
	}
	// The tail was just started by the last write's cycle: it is empty.
	if tail := l.segments[len(l.segments)-1]; tail.index != index+1 {
		t.Fatalf("setup: tail starts at %d, last index %d", tail.index, index)
	}
	for _, s := range []*segment{l.segments[2], l.segments[4]} { // a sealed segment, then the empty tail
		first, before := s.index, stat(s)
		if err := l.TruncateFront(first); err != nil {
			t.Fatal(err)
		}
		if got, _ := l.FirstIndex(); got != first {
			t.Fatalf("first index %d after truncating to %d", got, first)
		}
		if after := stat(l.segments[0]); !os.SameFile(before, after) {
			t.Fatalf("segment %d was rewritten by the truncation", first)
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if n, err := strconv.ParseUint(e.Name()[:20], 10, 64); err != nil || n < first || len(e.Name()) != 20 {
				t.Fatalf("after truncating to %d the directory holds %s", first, e.Name())
			}
		}
	}
	// The tail is written on and read back; the log reopens where it was.
	for i := 0; i < 3; i++ {
		index++
		if err := l.Write(index, entry); err != nil {
			t.Fatal(err)
		}
	}
	for i := index - 2; i <= index; i++ {
		if _, err := l.Read(i); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if l, err = Open(dir, opts); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if first, _ := l.FirstIndex(); first != index-2 {
		t.Fatalf("reopened log starts at %d, want %d", first, index-2)
	}
	if last, _ := l.LastIndex(); last != index {
		t.Fatalf("reopened log ends at %d, want %d", last, index)
	}
}
