package crash_test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The write-ahead log on disk (DESIGN.md §3): DATA_DIR/wal holds segment
// files named by the revision of their first record in 20 digits. Each
// record is a tidwall/wal entry, a uvarint length and then our frame:
//
//	+--------+------+----------+--------+---------+
//	| CRC32C | type | revision | length | payload |
//	|   4    |  1   |  8 (LE)  | 4 (LE) |         |
//	+--------+------+----------+--------+---------+
//
// The suite reads it only to know where records start, so that it can
// corrupt them precisely and name the offsets kvd must report.

const frameHeader = 4 + 1 + 8 + 4

// walRecord is where one record lies in its segment.
type walRecord struct {
	off, end int64 // the entry, length prefix included
	rev      uint64
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
		if n <= 0 || size < frameHeader || size > uint64(len(b)-off-n) {
			break
		}
		frame := b[off+n : off+n+int(size)]
		if uint64(binary.LittleEndian.Uint32(frame[13:17])) != size-frameHeader {
			break
		}
		end := off + n + int(size)
		recs = append(recs, walRecord{off: int64(off), end: int64(end), rev: binary.LittleEndian.Uint64(frame[5:13])})
		off = end
	}
	return recs
}
