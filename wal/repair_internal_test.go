package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"testing"
)

// appendRecordV1 appends a record in format 1 (no watermark), as kvd wrote
// them before the watermark existed.
func appendRecordV1(dst []byte, rev uint64, payload []byte) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, TypeBatchV1)
	dst = binary.LittleEndian.AppendUint64(dst, rev)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	dst = append(dst, payload...)
	binary.LittleEndian.PutUint32(dst[start:], crc32.Checksum(dst[start+4:], castagnoli))
	return dst
}

// segmentOf returns a tidwall/wal segment image holding records 1..n.
func segmentOf(n int) []byte {
	var seg []byte
	for rev := uint64(1); rev <= uint64(n); rev++ {
		rec := AppendRecord(nil, rev, rev-1, []byte(fmt.Sprintf("value-%d", rev)))
		seg = appendUvarint(seg, uint64(len(rec)))
		seg = append(seg, rec...)
	}
	return seg
}

// scanTail scans buf as the last segment of a log, as scanLog does.
func scanTail(buf []byte, replay ReplayFunc) (int, uint64, Cut, error) {
	off, next, reason, err := scanSegment("seg", buf, 1, 1, replay)
	if err != nil || reason == "" {
		return off, next, Cut{}, err
	}
	c, err := tailCut("seg", buf, off, next, reason)
	return off, next, c, err
}

func appendUvarint(b []byte, x uint64) []byte {
	for x >= 0x80 {
		b = append(b, byte(x)|0x80)
		x >>= 7
	}
	return append(b, byte(x))
}

// TestEveryZeroTail checks every zero-filled tail of 1 to 8192 bytes: the
// scan stops exactly at the end of the last valid record and never reports
// the zeros as records.
func TestEveryZeroTail(t *testing.T) {
	const n = 20
	seg := segmentOf(n)
	buf := append(bytes.Clone(seg), make([]byte, 8192)...)
	for size := 1; size <= 8192; size++ {
		count := 0
		off, next, c, err := scanTail(buf[:len(seg)+size], func(uint64, []byte) error { count++; return nil })
		if err != nil || c.Reason != "" || off != len(seg) || next != n+1 || count != n {
			t.Fatalf("zero tail of %d bytes: off %d next %d records %d err %v; want %d, %d, %d, nil",
				size, off, next, count, err, len(seg), n+1, n)
		}
	}
}

// TestEveryCut checks the scan of a segment cut at every byte offset.
func TestEveryCut(t *testing.T) {
	seg := segmentOf(30)
	ends := []int{0}
	for off := 0; off < len(seg); {
		size, un := int(seg[off]), 1
		off += un + size
		ends = append(ends, off)
	}
	for cut := 0; cut <= len(seg); cut++ {
		whole := 0
		for whole+1 < len(ends) && ends[whole+1] <= cut {
			whole++
		}
		off, _, _, err := scanTail(seg[:cut], nil)
		if err != nil || off != ends[whole] {
			t.Fatalf("cut at %d: scan stopped at %d (%v), want %d", cut, off, err, ends[whole])
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(uint64(1), uint64(0), []byte("hello"))
	f.Add(uint64(0), uint64(0), []byte{})
	f.Fuzz(func(t *testing.T, rev, wm uint64, p []byte) {
		rec := AppendRecord(nil, rev, wm, p)
		got, err := DecodeRecord(rec)
		if err != nil || got.Type != TypeBatch || got.Revision != rev || got.Watermark != wm || !bytes.Equal(got.Payload, p) {
			t.Fatalf("round trip: %+v %v", got, err)
		}
		v1 := appendRecordV1(nil, rev, p)
		if got, err := DecodeRecord(v1); err != nil || got.Type != TypeBatchV1 || got.Revision != rev || got.Watermark != 0 || !bytes.Equal(got.Payload, p) {
			t.Fatalf("format-1 record: %+v %v", got, err)
		}
		for _, typ := range []byte{0, 3, 255} {
			other := bytes.Clone(rec)
			other[4] = typ
			binary.LittleEndian.PutUint32(other, crc32.Checksum(other[4:], castagnoli))
			if _, err := DecodeRecord(other); err == nil {
				t.Fatalf("type %d decoded without error", typ)
			}
		}
		// Any corruption of a single byte must be detected.
		for i := range rec {
			bad := bytes.Clone(rec)
			bad[i] ^= 0x01
			if _, err := DecodeRecord(bad); err == nil {
				t.Fatalf("flip in byte %d not detected", i)
			}
		}
		DecodeRecord(p) // arbitrary bytes: must not panic
	})
}

// FuzzScanTail appends arbitrary bytes to a valid last segment: the scan must
// not panic, must keep every valid record, and may only stop with a
// CorruptError when it is given one.
func FuzzScanTail(f *testing.F) {
	seg := segmentOf(8)
	f.Add([]byte{})
	f.Add(make([]byte, 100))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add(segmentOf(3)[:25])
	f.Fuzz(func(t *testing.T, tail []byte) {
		buf := append(bytes.Clone(seg), tail...)
		count := 0
		off, _, _, err := scanTail(buf, func(uint64, []byte) error { count++; return nil })
		if err != nil {
			var ce *CorruptError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("scan error %v is not a CorruptError", err)
			}
			return
		}
		if off < len(seg) || count < 8 || off > len(buf) {
			t.Fatalf("scan lost valid records: off %d (segment %d), records %d", off, len(seg), count)
		}
	})
}
