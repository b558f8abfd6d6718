package wal

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func testPayload(rev uint64) []byte {
	return []byte(fmt.Sprintf("payload-%d-%s", rev, strings.Repeat("y", int(rev%41))))
}

// writeLog writes records 1..n into a new log in dir; the first synced of
// them are each fsynced before the next is queued (so each carries the
// revision before it as its watermark), the rest only written. Close then
// fsyncs them all without changing what they carry.
func writeLog(t *testing.T, dir string, opts Options, n, synced int) {
	t.Helper()
	l, err := Open(dir, 1, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		rev, err := l.Enqueue(testPayload(uint64(i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		wait := l.WaitWritten
		if i <= synced {
			wait = l.WaitDurable
		}
		if err := wait(rev); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// recordAt returns the offsets of the entry of revision rev in a segment
// image that starts at revision first.
func recordAt(t *testing.T, b []byte, first, rev uint64) (start, end int) {
	t.Helper()
	off := 0
	for r := first; ; r++ {
		_, n, reason := nextEntry(b[off:], r)
		if reason != "" {
			t.Fatalf("revision %d not found: %s", rev, reason)
		}
		if r == rev {
			return off, off + n
		}
		off += n
	}
}

// reopen opens dir from revision from and returns the log and the revisions
// replayed, checking each payload.
func reopen(t *testing.T, dir string, from uint64, opts Options) (*Log, []uint64, error) {
	t.Helper()
	var revs []uint64
	l, err := Open(dir, from, opts, func(rev uint64, p []byte) error {
		if !bytes.Equal(p, testPayload(rev)) {
			t.Errorf("revision %d: payload %q", rev, p)
		}
		revs = append(revs, rev)
		return nil
	})
	if err == nil {
		t.Cleanup(func() { l.Close() })
	}
	return l, revs, err
}

func seq(from, to uint64) []uint64 {
	var s []uint64
	for r := from; r <= to; r++ {
		s = append(s, r)
	}
	return s
}

func editFile(t *testing.T, path string, edit func([]byte) []byte) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b = edit(b)
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
	return b
}

func onlySegment(t *testing.T, dir string) string {
	t.Helper()
	segs, err := finishTruncation(dir)
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments %v (%v), want one", segs, err)
	}
	return filepath.Join(dir, segs[0].name)
}

// TestHoleInUnsyncedTailIsCut: records written after the last fsync carry
// a watermark below them, so a hole among them (a power loss that kept a
// later page and not an earlier one) is cut, the valid records after it
// with it, and the cut is reported.
func TestHoleInUnsyncedTailIsCut(t *testing.T) {
	dir := t.TempDir()
	writeLog(t, dir, Options{}, 12, 5)
	path := onlySegment(t, dir)
	var start int
	editFile(t, path, func(b []byte) []byte {
		var end int
		start, end = recordAt(t, b, 1, 8)
		clear(b[start:end])
		return b
	})
	l, revs, err := reopen(t, dir, 1, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(revs, seq(1, 7)) {
		t.Fatalf("replayed %v, want 1..7", revs)
	}
	r := l.Recovery()
	if len(r.Cuts) != 1 || r.Cuts[0].Offset != int64(start) || r.Cuts[0].Records != 4 ||
		r.Cuts[0].FirstRevision != 9 || r.Cuts[0].LastRevision != 12 || r.Bytes() <= 0 {
		t.Fatalf("recovery %+v, want one cut at %d of records 9..12", r, start)
	}
	if rev, err := l.Enqueue(testPayload(8), nil); err != nil || rev != 8 || l.WaitDurable(rev) != nil {
		t.Fatalf("append after the cut: revision %d, %v", rev, err)
	}
	l.Close()
	if _, revs, err := reopen(t, dir, 1, Options{}); err != nil || !slices.Equal(revs, seq(1, 8)) {
		t.Fatalf("reopen after the cut: %v, %v", revs, err)
	}
}

// TestHoleInFsyncedDataIsRefused: a later record whose watermark covers the
// hole proves the hole's stretch was fsynced: Open refuses, names the
// segment and offset, and changes nothing.
func TestHoleInFsyncedDataIsRefused(t *testing.T) {
	dir := t.TempDir()
	writeLog(t, dir, Options{}, 12, 12)
	path := onlySegment(t, dir)
	var start int
	damaged := editFile(t, path, func(b []byte) []byte {
		var end int
		start, end = recordAt(t, b, 1, 5)
		clear(b[start:end])
		return b
	})
	_, _, err := reopen(t, dir, 1, Options{})
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Offset != int64(start) || ce.Hint != hintProvenDurable {
		t.Fatalf("Open over a hole in fsynced records: %v, want a CorruptError at %d proven durable", err, start)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, damaged) {
		t.Fatal("a refused Open changed the segment")
	}
	t.Log(err)
}

// TestLastRecordBitFlipIsRefused: a last record that was written whole
// (no zero sector, the file does not end inside it) but fails its checksum
// is damage, not a torn write; the same record with a zeroed sector, or cut
// short, is torn and cut.
func TestLastRecordBitFlipIsRefused(t *testing.T) {
	base := t.TempDir()
	l, err := Open(base, 1, Options{Preallocate: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 200) // 3200 bytes: several sectors
	for i := range 3 {
		p := testPayload(uint64(i + 1))
		if i == 2 {
			p = big
		}
		rev, err := l.Enqueue(p, nil)
		if err != nil || l.WaitDurable(rev) != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	orig, err := os.ReadFile(onlySegment(t, base))
	if err != nil {
		t.Fatal(err)
	}
	start, end := recordAt(t, orig, 1, 3)
	firstSector := (start/sectorSize + 1) * sectorSize
	cases := []struct {
		name string
		edit func([]byte) []byte
		torn bool
	}{
		{"bit flip in the payload", func(b []byte) []byte { b[end-100] ^= 0x04; return b }, false},
		{"bit flip in the header", func(b []byte) []byte { b[start+8] ^= 0x01; return b }, false},
		{"a sector never written", func(b []byte) []byte { clear(b[firstSector : firstSector+sectorSize]); return b }, true},
		{"the last sector never written", func(b []byte) []byte { clear(b[(end-1)/sectorSize*sectorSize : end]); return b }, true},
		{"cut short", func(b []byte) []byte { return b[:end-700] }, true},
		// The record's length takes two bytes: the file ends after the first.
		{"cut inside its length", func(b []byte) []byte { return b[:start+1] }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, formatFile), []byte(formatVersion), 0o640); err != nil {
				t.Fatal(err)
			}
			damaged := tc.edit(bytes.Clone(orig))
			path := filepath.Join(dir, segmentName(1))
			if err := os.WriteFile(path, damaged, 0o640); err != nil {
				t.Fatal(err)
			}
			l, revs, err := openFrom1(t, dir)
			if !tc.torn {
				var ce *CorruptError
				if !errors.As(err, &ce) || ce.Offset != int64(start) || ce.Hint != hintWhole {
					t.Fatalf("Open: %v, want a CorruptError at %d saying the record was written whole", err, start)
				}
				if b, _ := os.ReadFile(path); !bytes.Equal(b, damaged) {
					t.Fatal("a refused Open changed the segment")
				}
				return
			}
			if err != nil {
				t.Fatalf("Open over a torn last record: %v", err)
			}
			if !slices.Equal(revs, seq(1, 2)) {
				t.Fatalf("replayed %v, want 1..2", revs)
			}
			if r := l.Recovery(); len(r.Cuts) != 1 || r.Cuts[0].Offset != int64(start) || r.Cuts[0].Records != 0 {
				t.Fatalf("recovery %+v, want one cut at %d", r, start)
			}
		})
	}
}

// openFrom1 opens dir from revision 1, recording the revisions replayed.
func openFrom1(t *testing.T, dir string) (*Log, []uint64, error) {
	t.Helper()
	var revs []uint64
	l, err := Open(dir, 1, Options{}, func(rev uint64, _ []byte) error { revs = append(revs, rev); return nil })
	if err == nil {
		t.Cleanup(func() { l.Close() })
	}
	return l, revs, err
}

// TestDamageBelowCheckpointIsCut: damage confined to records below the
// revision Open starts from (which the state holds) is cut with them; the
// same damage is refused when those records are needed.
func TestDamageBelowCheckpointIsCut(t *testing.T) {
	t.Run("sealed segment", func(t *testing.T) {
		dir := t.TempDir()
		opts := Options{SegmentSize: 1024}
		writeLog(t, dir, opts, 200, 200)
		segs, err := finishTruncation(dir)
		if err != nil || len(segs) < 4 {
			t.Fatalf("segments %v (%v), want several", segs, err)
		}
		editFile(t, filepath.Join(dir, segs[1].name), func(b []byte) []byte { b[100] ^= 0x10; return b })
		if _, _, err := reopen(t, dir, 1, opts); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open from 1 over damage in a needed sealed segment: %v, want ErrCorrupt", err)
		}
		from := segs[2].first + 3
		l, revs, err := reopen(t, dir, from, opts)
		if err != nil {
			t.Fatalf("Open from %d over damage below it: %v", from, err)
		}
		if !slices.Equal(revs, seq(from, 200)) {
			t.Fatalf("replayed %v, want %d..200", revs, from)
		}
		if r := l.Recovery(); len(r.Cuts) != 1 || r.Cuts[0].Segment != segs[1].name {
			t.Fatalf("recovery %+v, want one cut naming %s", r, segs[1].name)
		}
		if first := l.Stats().First; first > from || first <= segs[1].first {
			t.Fatalf("log starts at %d after the cut, want in (%d, %d]", first, segs[1].first, from)
		}
	})
	for _, tc := range []struct {
		name     string
		from     uint64
		wantRevs []uint64
	}{
		{"same segment", 12, seq(12, 20)},
		{"log ends at the checkpoint", 21, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeLog(t, dir, Options{}, 20, 20)
			editFile(t, onlySegment(t, dir), func(b []byte) []byte {
				start, _ := recordAt(t, b, 1, 5)
				b[start+30] ^= 0x01
				return b
			})
			if _, _, err := reopen(t, dir, 1, Options{}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open from 1: %v, want ErrCorrupt", err)
			}
			l, revs, err := reopen(t, dir, tc.from, Options{})
			if err != nil {
				t.Fatalf("Open from %d: %v", tc.from, err)
			}
			if !slices.Equal(revs, tc.wantRevs) {
				t.Fatalf("replayed %v, want %v", revs, tc.wantRevs)
			}
			if s := l.Stats(); s.First != tc.from || s.Written != 20 || len(l.Recovery().Cuts) != 1 {
				t.Fatalf("after the cut: first %d written %d cuts %+v; want %d, 20, one cut", s.First, s.Written, l.Recovery(), tc.from)
			}
			rev, err := l.Enqueue(testPayload(21), nil)
			if err != nil || rev != 21 || l.WaitDurable(rev) != nil {
				t.Fatalf("append: %d %v", rev, err)
			}
			l.Close()
			if _, revs, err := reopen(t, dir, tc.from, Options{}); err != nil || !slices.Equal(revs, seq(tc.from, 21)) {
				t.Fatalf("reopen: %v %v", revs, err)
			}
		})
	}
}

// TestFormat1LogIsRead: a log written before records carried a watermark
// (format 1) opens, replays, is marked format 2, and takes new records
// beside the old ones.
func TestFormat1LogIsRead(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, formatFile), []byte(formatV1), 0o640); err != nil {
		t.Fatal(err)
	}
	var seg []byte
	for rev := uint64(1); rev <= 10; rev++ {
		rec := appendRecordV1(nil, rev, testPayload(rev))
		seg = appendUvarint(seg, uint64(len(rec)))
		seg = append(seg, rec...)
	}
	if err := os.WriteFile(filepath.Join(dir, segmentName(1)), seg, 0o640); err != nil {
		t.Fatal(err)
	}
	l, revs, err := reopen(t, dir, 1, Options{})
	if err != nil || !slices.Equal(revs, seq(1, 10)) {
		t.Fatalf("open a format-1 log: %v %v", revs, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, formatFile)); string(b) != formatVersion {
		t.Fatalf("FORMAT says %q after open, want %q", b, formatVersion)
	}
	for rev := uint64(11); rev <= 12; rev++ {
		if r, err := l.Enqueue(testPayload(rev), nil); err != nil || r != rev || l.WaitDurable(r) != nil {
			t.Fatalf("append %d: %v", rev, err)
		}
	}
	l.Close()
	if _, revs, err := reopen(t, dir, 1, Options{}); err != nil || !slices.Equal(revs, seq(1, 12)) {
		t.Fatalf("reopen: %v %v", revs, err)
	}
}
