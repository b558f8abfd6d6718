package crash_test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The write-ahead log on disk (DESIGN.md §3, go doc wal): DATA_DIR/wal
// holds segment files named by the revision of their first record in 20
// digits. Each record is a tidwall/wal entry, a uvarint length and then our
// frame, of format 2 (type 2, with the log's durable watermark when the
// record was queued) or format 1 (type 1, no watermark, read only):
//
//	+--------+------+----------+-----------+--------+---------+
//	| CRC32C | type | revision | watermark | length | payload |
//	|   4    |  1   |  8 (LE)  |  8 (LE)   | 4 (LE) |         |
//	+--------+------+----------+-----------+--------+---------+
//
// The suite reads it only to know where records start and what they
// claim, so that it can corrupt them precisely and name the offsets kvd
// must report.

// frameHeader is the size of a format-2 frame header; frameHeaderV1 that
// of format 1.
const (
	frameHeader   = 4 + 1 + 8 + 8 + 4
	frameHeaderV1 = 4 + 1 + 8 + 4
)

// walRecord is where one record lies in its segment.
type walRecord struct {
	off, end  int64 // the entry, length prefix included
	rev       uint64
	watermark uint64 // 0 in format 1
}

// segments returns the segment files of dataDir's log, in order.
func segments(t testing.TB, dataDir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dataDir, "wal"))
	if err != nil {
		t.Fatal(err)
	}
	var segs []string
	for _, e := range ents {
		if len(e.Name()) == 20 && !e.IsDir() {
			segs = append(segs, e.Name())
		}
	}
	slices.Sort(segs)
	return segs
}

// readRecords returns the records of a segment file up to the first entry
// that does not parse.
func readRecords(t testing.TB, path string) []walRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var recs []walRecord
	off := 0
	for off < len(b) {
		size, n := binary.Uvarint(b[off:])
		if n <= 0 || size < frameHeaderV1 || size > uint64(len(b)-off-n) {
			break
		}
		frame := b[off+n : off+n+int(size)]
		var r walRecord
		hdr := frameHeaderV1
		switch frame[4] {
		case 2:
			hdr = frameHeader
			if len(frame) >= hdr {
				r.watermark = binary.LittleEndian.Uint64(frame[13:21])
			}
		case 1:
		default:
			hdr = 0
		}
		if hdr == 0 || len(frame) < hdr || uint64(binary.LittleEndian.Uint32(frame[hdr-4:hdr])) != size-uint64(hdr) {
			break
		}
		end := off + n + int(size)
		r.off, r.end, r.rev = int64(off), int64(end), binary.LittleEndian.Uint64(frame[5:13])
		recs = append(recs, r)
		off = end
	}
	return recs
}
