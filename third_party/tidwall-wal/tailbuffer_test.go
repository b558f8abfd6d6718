package wal

import (
	"fmt"
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
