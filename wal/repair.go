package wal

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// segmentNameLen is the length of a tidwall/wal segment file name: the
// segment's first index as 20 decimal digits.
const segmentNameLen = 20

func segmentName(index uint64) string { return fmt.Sprintf("%020d", index) }

// segmentFile is one segment of the log directory.
type segmentFile struct {
	name  string
	first uint64 // index (revision) of its first record
}

// finishTruncation completes a front or back truncation that tidwall/wal
// left half done (its .START and .END files are written atomically, then the
// old segments removed and the file renamed), exactly as tidwall/wal's own
// loader does, and returns the segments in order. tidwall/wal cannot do this
// itself because it refuses to open a log whose tail is torn.
func finishTruncation(dir string) ([]segmentFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("wal: read dir: %w", err)
	}
	var (
		segs             []segmentFile
		startIdx, endIdx = -1, -1
		changed          bool
	)
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, ".TEMP") {
			// A temporary file of an interrupted atomic write: never renamed,
			// so never part of the log.
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, fmt.Errorf("wal: remove %s: %w", name, err)
			}
			changed = true
			continue
		}
		if e.IsDir() || len(name) < segmentNameLen {
			continue
		}
		index, err := strconv.ParseUint(name[:segmentNameLen], 10, 64)
		if err != nil || index == 0 {
			continue
		}
		isStart := len(name) == segmentNameLen+6 && strings.HasSuffix(name, ".START")
		isEnd := len(name) == segmentNameLen+4 && strings.HasSuffix(name, ".END")
		if len(name) != segmentNameLen && !isStart && !isEnd {
			continue
		}
		if isStart {
			startIdx = len(segs)
		} else if isEnd && endIdx == -1 {
			endIdx = len(segs)
		}
		segs = append(segs, segmentFile{name: name, first: index})
	}
	if startIdx != -1 && endIdx != -1 {
		return nil, &CorruptError{Segment: segs[startIdx].name, Reason: "both a .START and an .END file are present"}
	}
	if startIdx != -1 {
		for _, s := range segs[:startIdx] {
			if err := os.Remove(filepath.Join(dir, s.name)); err != nil {
				return nil, fmt.Errorf("wal: finish truncation: %w", err)
			}
		}
		segs = segs[startIdx:]
		final := segs[0].name[:segmentNameLen]
		if err := os.Rename(filepath.Join(dir, segs[0].name), filepath.Join(dir, final)); err != nil {
			return nil, fmt.Errorf("wal: finish truncation: %w", err)
		}
		segs[0].name = final
		changed = true
	}
	if endIdx != -1 {
		for _, s := range segs[endIdx+1:] {
			if err := os.Remove(filepath.Join(dir, s.name)); err != nil {
				return nil, fmt.Errorf("wal: finish truncation: %w", err)
			}
		}
		segs = segs[:endIdx+1]
		if n := len(segs); n > 1 && segs[n-2].first == segs[n-1].first {
			segs[n-2] = segs[n-1]
			segs = segs[:n-1]
		}
		last := &segs[len(segs)-1]
		final := last.name[:segmentNameLen]
		if err := os.Rename(filepath.Join(dir, last.name), filepath.Join(dir, final)); err != nil {
			return nil, fmt.Errorf("wal: finish truncation: %w", err)
		}
		last.name = final
		changed = true
	}
	if changed {
		if err := syncDir(dir); err != nil {
			return nil, err
		}
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].first < segs[j].first })
	return segs, nil
}

// scanResult is what a scan of the whole log found.
type scanResult struct {
	first, last uint64   // first and last revision (last = first-1 when empty)
	segFirst    []uint64 // first revision of every segment
	tailSize    int64    // size of the last segment after repair
}

// ReplayFunc receives one record during Open. payload is only valid during
// the call.
type ReplayFunc func(rev uint64, payload []byte) error

// scanLog checks every record of every segment, repairs a torn tail of the
// last segment and calls replay for each record whose revision is >= from.
func scanLog(dir string, segs []segmentFile, from uint64, replay ReplayFunc, logger *slog.Logger) (scanResult, error) {
	var res scanResult
	if len(segs) == 0 {
		return res, nil
	}
	res.first = segs[0].first
	next := segs[0].first
	for i, s := range segs {
		if s.first != next {
			prev := segs[max(i-1, 0)].name
			return res, &CorruptError{Segment: prev, Offset: -1,
				Reason: fmt.Sprintf("segment ends before revision %d but the next segment %s starts at %d", next, s.name, s.first)}
		}
		res.segFirst = append(res.segFirst, s.first)
		path := filepath.Join(dir, s.name)
		buf, err := os.ReadFile(path)
		if err != nil {
			return res, fmt.Errorf("wal: read segment: %w", err)
		}
		isLast := i == len(segs)-1
		off, rev, err := scanSegment(s.name, buf, s.first, from, replay, isLast)
		if err != nil {
			return res, err
		}
		next = rev
		if isLast {
			if off < len(buf) {
				if len(bytes.TrimLeft(buf[off:], "\x00")) == 0 {
					// The zero fill ahead of the records (Options.Preallocate),
					// possibly over a record whose write never reached disk.
					logger.Info("wal: truncating zeroed tail", "segment", s.name, "offset", off, "bytes", len(buf)-off)
				} else {
					logger.Warn("wal: truncating torn tail", "segment", s.name, "offset", off, "bytes", len(buf)-off)
				}
				if err := truncateFile(path, int64(off)); err != nil {
					return res, err
				}
			}
			res.tailSize = int64(off)
		}
	}
	res.last = next - 1
	return res, nil
}

// scanSegment checks the records of one segment. It returns the offset just
// past the last good record and the revision that comes next. In the last
// segment a torn tail ends the scan (the caller truncates it); anywhere else a
// bad record is corruption.
func scanSegment(name string, buf []byte, rev, from uint64, replay ReplayFunc, isLast bool) (int, uint64, error) {
	off := 0
	for off < len(buf) {
		rec, n, reason := nextEntry(buf[off:], rev)
		if reason != "" {
			if isLast && !validRecordAfter(buf, off, rev) {
				return off, rev, nil
			}
			return off, rev, &CorruptError{Segment: name, Offset: int64(off), Reason: reason}
		}
		if rev >= from && replay != nil {
			if err := replay(rev, rec); err != nil {
				return off, rev, fmt.Errorf("wal: replay revision %d (segment %s, offset %d): %w", rev, name, off, err)
			}
		}
		off += n
		rev++
	}
	return off, rev, nil
}

// nextEntry decodes the tidwall/wal entry at the start of b, which must hold
// the record of revision rev. It returns the payload and the entry's size, or
// why the entry is bad.
func nextEntry(b []byte, rev uint64) (payload []byte, n int, reason string) {
	size, un := binary.Uvarint(b)
	if un <= 0 {
		return nil, 0, "bad entry length"
	}
	if size > uint64(len(b)-un) {
		return nil, 0, "entry runs past the end of the segment"
	}
	_, got, payload, err := DecodeRecord(b[un : un+int(size)])
	if err != nil {
		return nil, 0, err.Error()
	}
	if got != rev {
		return nil, 0, fmt.Sprintf("record holds revision %d, expected %d", got, rev)
	}
	return payload, un + int(size), ""
}

// validRecordAfter reports whether a valid record with a revision of at least
// rev starts anywhere after offset off. A bad record with nothing valid after
// it is a torn tail; one followed by a valid record is corruption.
func validRecordAfter(buf []byte, off int, rev uint64) bool {
	rest := buf[off:]
	if len(bytes.TrimLeft(rest, "\x00")) == 0 {
		return false
	}
	for p := off + 1; p < len(buf); p++ {
		size, un := binary.Uvarint(buf[p:])
		if un <= 0 || size < HeaderSize || size > uint64(len(buf)-p-un) {
			continue
		}
		rec := buf[p+un : p+un+int(size)]
		// Cheap checks first: length field, type and a plausible revision.
		if uint64(binary.LittleEndian.Uint32(rec[13:17])) != size-HeaderSize || rec[4] != TypeBatch {
			continue
		}
		if r := binary.LittleEndian.Uint64(rec[5:13]); r < rev || r-rev > uint64(len(buf)) {
			continue
		}
		if _, _, _, err := DecodeRecord(rec); err == nil {
			return true
		}
	}
	return false
}

func truncateFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("wal: repair: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("wal: repair %s: %w", filepath.Base(path), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("wal: repair %s: %w", filepath.Base(path), err)
	}
	return f.Close()
}
