package wal

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

// TestTruncateFrontTrash checks how TruncateFront drops segments. When
// tidwall/wal has deleted them, under the lock that writes need, each file
// must still have its second name in the trash: that deletion then freed no
// blocks. Once TruncateFront returns the trash is gone, and Open empties a
// trash that a crash left behind.
func TestTruncateFrontTrash(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, 1, Options{SegmentSize: 2000}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 1200 {
		rev, err := l.Enqueue(bytes.Repeat([]byte("x"), 50), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.WaitWritten(rev); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	before := slices.Clone(l.segFirst)

	var trashed []string
	testHookTruncated = func(trash string) {
		ents, err := os.ReadDir(trash)
		if err != nil {
			t.Errorf("read trash: %v", err)
			return
		}
		for _, e := range ents {
			trashed = append(trashed, e.Name())
			fi, err := os.Stat(filepath.Join(trash, e.Name()))
			if err != nil {
				t.Error(err)
				continue
			}
			if n := fi.Sys().(*syscall.Stat_t).Nlink; n != 1 {
				t.Errorf("trashed segment %s has %d links, want 1 (the log's name removed)", e.Name(), n)
			}
		}
	}
	defer func() { testHookTruncated = nil }()
	if err := l.TruncateFront(1000); err != nil {
		t.Fatal(err)
	}
	after := l.segFirst
	// tidwall/wal deleted segments 0..j and wrote segment j's last record
	// into a segment of its own, the log's new first.
	dropped := len(before) - len(after) + 1
	if dropped < 2 || after[0] != before[dropped]-1 {
		t.Fatalf("setup: truncation dropped %d segments (before %v, after %v)", dropped, before, after)
	}
	var want []string
	for _, f := range before[:dropped] {
		want = append(want, segmentName(f))
	}
	if !slices.Equal(trashed, want) {
		t.Fatalf("trash held %v while tidwall/wal deleted %v", trashed, want)
	}
	for _, name := range want {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("dropped segment %s still in the log directory (%v)", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, trashDir)); !os.IsNotExist(err) {
		t.Fatalf("trash not emptied after TruncateFront: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// A crash after the links were made leaves the trash behind.
	if err := os.MkdirAll(filepath.Join(dir, trashDir), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, trashDir, segmentName(1)), []byte("garbage"), 0o640); err != nil {
		t.Fatal(err)
	}
	var first uint64
	l, err = Open(dir, 1000, Options{SegmentSize: 2000}, func(rev uint64, _ []byte) error {
		if first == 0 {
			first = rev
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if first != 1000 || l.Written() != 1200 {
		t.Fatalf("replay from 1000 started at %d, last %d", first, l.Written())
	}
	if _, err := os.Stat(filepath.Join(dir, trashDir)); !os.IsNotExist(err) {
		t.Fatalf("Open left the trash: %v", err)
	}
}
