package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
)

// sectorSize is the unit in which a torn write is recognised: a disk
// persists a write sector by sector, so a record whose write did not
// complete has a sector (within the record) that still holds what was
// there before: zeros, in the zero-filled tail of the log.
const sectorSize = 512

// Cut is one stretch of the log that Open removed to bring the log back to
// a consistent prefix.
type Cut struct {
	Segment string // segment file
	Offset  int64  // offset of the cut in Segment
	Bytes   int64  // bytes removed, in Segment and any segments removed with it
	// Records counts the valid records that the cut removed (records found
	// after a hole), FirstRevision and LastRevision their revisions.
	Records                     int
	FirstRevision, LastRevision uint64
	Reason                      string
}

// Recovery is what the last Open of a log cut to recover it. The zero fill
// ahead of the tail (Options.Preallocate) is not a cut.
type Recovery struct {
	Cuts []Cut
}

// Bytes is the number of bytes all cuts removed.
func (r Recovery) Bytes() int64 {
	var n int64
	for _, c := range r.Cuts {
		n += c.Bytes
	}
	return n
}

// Records is the number of valid records all cuts removed.
func (r Recovery) Records() int {
	var n int
	for _, c := range r.Cuts {
		n += c.Records
	}
	return n
}

// Hints that a CorruptError carries: what probably happened.
const (
	hintSealed = "a segment is fsynced whole before the next one is started, so this is damage to data " +
		"that was on stable storage (a disk, file-system or memory fault, or a file changed by hand), not a crash"
	hintProvenDurable = "records after it were written once this part of the log was known fsynced, " +
		"so this is damage to data that was on stable storage, not a crash"
	hintWhole = "the record was written whole (no sector of it is zero and the file does not end inside it), " +
		"so this is not a write cut short by a crash but damage such as a flipped bit"
	hintNeeded = "records that the state file does not hold yet are missing: damage to the log, not a crash"
)

// errRescan tells Open that the scan changed the directory's segment files
// and the log must be listed and scanned again.
var errRescan = errors.New("wal: rescan")

// scanResult is what a scan of the whole log found.
type scanResult struct {
	first, last uint64   // first and last revision (last = first-1 when empty)
	segFirst    []uint64 // first revision of every segment
	tailSize    int64    // size of the last segment after repair
	cuts        []Cut
}

// ReplayFunc receives one record during Open. payload is only valid during
// the call.
type ReplayFunc func(rev uint64, payload []byte) error

// scanLog checks every record of every segment, calls replay for each record
// whose revision is >= from, and repairs what a crash can leave behind:
//   - in the last segment, a bad record with nothing valid after it is cut
//     when the evidence says its write did not complete (a zero sector within
//     it, or the file ending inside it), and so is a bad record followed by
//     valid ones when no record after it proves it fsynced (its watermark);
//   - damage confined to records below from, which the state already holds,
//     is cut with the records around it.
//
// Anything else is a *CorruptError. It returns errRescan (with the cuts made
// so far) when it rewrote the directory.
func scanLog(dir string, segs []segmentFile, from uint64, replay ReplayFunc, logger *slog.Logger) (scanResult, error) {
	var res scanResult
	if len(segs) == 0 {
		return res, nil
	}
	res.first = segs[0].first
	next := segs[0].first
	for i, s := range segs {
		if s.first != next {
			if s.first <= from {
				// Revisions missing below what the state holds: not needed.
				c := Cut{Segment: segs[i-1].name, Offset: -1, Reason: fmt.Sprintf(
					"revisions %d..%d missing, below the checkpointed revision %d", next, s.first-1, from-1)}
				if err := removeSegments(dir, segs[:i], &c); err != nil {
					return res, err
				}
				res.cuts = append(res.cuts, c)
				logCut(logger, c)
				return res, errRescan
			}
			return res, &CorruptError{Segment: segs[i-1].name, Offset: -1, Hint: hintNeeded,
				Reason: fmt.Sprintf("segment ends before revision %d but the next segment %s starts at %d", next, s.name, s.first)}
		}
		res.segFirst = append(res.segFirst, s.first)
		path := filepath.Join(dir, s.name)
		buf, err := os.ReadFile(path)
		if err != nil {
			return res, fmt.Errorf("wal: read segment: %w", err)
		}
		isLast := i == len(segs)-1
		off, rev, reason, err := scanSegment(s.name, buf, s.first, from, replay)
		if err != nil {
			return res, err
		}
		next = rev
		if reason != "" {
			switch {
			case rev < from && !(isLast && allZero(buf[off:])):
				c, err := cutBelowCheckpoint(dir, segs, i, buf, off, rev, from, reason)
				if err != nil {
					return res, err
				}
				res.cuts = append(res.cuts, c)
				logCut(logger, c)
				return res, errRescan
			case !isLast:
				return res, &CorruptError{Segment: s.name, Offset: int64(off), Reason: reason, Hint: hintSealed}
			}
			c, err := tailCut(s.name, buf, off, rev, reason)
			if err != nil {
				return res, err
			}
			if c.Reason == "" {
				// The zero fill ahead of the records (Options.Preallocate).
				logger.Info("wal: truncating zeroed tail", "segment", s.name, "offset", off, "bytes", len(buf)-off)
			} else {
				res.cuts = append(res.cuts, c)
				logCut(logger, c)
			}
			if err := truncateFile(path, int64(off)); err != nil {
				return res, err
			}
		}
		if isLast {
			res.tailSize = int64(off)
		}
	}
	res.last = next - 1
	return res, nil
}

func logCut(logger *slog.Logger, c Cut) {
	logger.Warn("wal: cut the log to recover from a crash or damage", "segment", c.Segment, "offset", c.Offset,
		"bytes", c.Bytes, "records", c.Records, "first_rev", c.FirstRevision, "last_rev", c.LastRevision, "reason", c.Reason)
}

// scanSegment checks the records of one segment, starting at revision rev.
// It returns the offset just past the last good record, the revision that
// comes next and, if it stopped at a bad record, why it is bad.
func scanSegment(name string, buf []byte, rev, from uint64, replay ReplayFunc) (int, uint64, string, error) {
	off := 0
	for off < len(buf) {
		rec, n, reason := nextEntry(buf[off:], rev)
		if reason != "" {
			return off, rev, reason, nil
		}
		if rev >= from && replay != nil {
			if err := replay(rev, rec); err != nil {
				return off, rev, "", fmt.Errorf("wal: replay revision %d (segment %s, offset %d): %w", rev, name, off, err)
			}
		}
		off += n
		rev++
	}
	return off, rev, "", nil
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
	r, err := DecodeRecord(b[un : un+int(size)])
	if err != nil {
		return nil, 0, err.Error()
	}
	if r.Revision != rev {
		return nil, 0, fmt.Sprintf("record holds revision %d, expected %d", r.Revision, rev)
	}
	return r.Payload, un + int(size), ""
}

// tailCut decides what to do with a bad record at off in the last segment,
// where revision rev was expected. It returns the cut to make (an empty
// Reason for plain zero fill) or the corruption that forbids it.
func tailCut(name string, buf []byte, off int, rev uint64, reason string) (Cut, error) {
	c := Cut{Segment: name, Offset: int64(off), Bytes: int64(len(buf) - off)}
	after := scanAfter(buf, off, rev)
	if after.records == 0 {
		switch {
		case allZero(buf[off:]):
			return Cut{}, nil
		case tornRecord(buf, off):
			c.Reason = "torn write: the last record was never written whole"
			return c, nil
		}
		return c, &CorruptError{Segment: name, Offset: int64(off), Reason: reason, Hint: hintWhole}
	}
	if after.maxWatermark >= rev {
		return c, &CorruptError{Segment: name, Offset: int64(off), Hint: hintProvenDurable,
			Reason: fmt.Sprintf("%s; record %d after it was written when revisions up to %d were fsynced",
				reason, after.witness, after.maxWatermark)}
	}
	c.Records, c.FirstRevision, c.LastRevision = after.records, after.first, after.last
	c.Reason = fmt.Sprintf("a hole at revision %d with valid records after it that no fsync covered "+
		"(a power loss kept later unsynced pages and not earlier ones)", rev)
	return c, nil
}

// afterScan is what scanAfter found.
type afterScan struct {
	records      int
	first, last  uint64 // lowest and highest revision found
	maxWatermark uint64
	witness      uint64 // revision of the record carrying maxWatermark
}

// scanAfter finds the valid records, of revision rev or later, that start
// after offset off.
func scanAfter(buf []byte, off int, rev uint64) afterScan {
	var a afterScan
	if allZero(buf[off:]) {
		return a
	}
	for p := off + 1; p < len(buf); {
		size, un := binary.Uvarint(buf[p:])
		if un > 0 && size >= headerSizeV1 && size <= uint64(len(buf)-p-un) {
			b := buf[p+un : p+un+int(size)]
			if plausibleRecord(b, rev, rev+uint64(len(buf))) {
				if r, err := DecodeRecord(b); err == nil {
					if a.records == 0 || r.Revision < a.first {
						a.first = r.Revision
					}
					a.last = max(a.last, r.Revision)
					if a.records == 0 || r.Watermark > a.maxWatermark {
						a.maxWatermark, a.witness = r.Watermark, r.Revision
					}
					a.records++
					p += un + int(size)
					continue
				}
			}
		}
		p++
	}
	return a
}

// tornRecord reports whether the bad record at off shows that its write did
// not complete: the file ends inside it, or a sector-aligned piece of it is
// all zeros (what the zero-filled tail held before the write). This is the
// test etcd's WAL applies; a record whose data really holds a zero sector
// and then suffers a bit flip would be taken for torn.
func tornRecord(buf []byte, off int) bool {
	end := len(buf)
	switch size, un := binary.Uvarint(buf[off:]); {
	case un == 0:
		return true // the file ends inside the entry's length
	case un > 0:
		if size > uint64(len(buf)-off-un) {
			return true
		}
		end = off + un + int(size)
	}
	for a := off; a < end; {
		b := min((a/sectorSize+1)*sectorSize, end)
		if allZero(buf[a:b]) {
			return true
		}
		a = b
	}
	return false
}

func allZero(b []byte) bool { return len(bytes.TrimLeft(b, "\x00")) == 0 }

// cutBelowCheckpoint handles a bad record of revision rev < from in segment
// i: the state already holds every revision below from, so the log may
// start later. Segments wholly below from are removed; when from lies in
// segment i, the segment is rewritten from the record of revision from on
// (tidwall/wal's own START-file protocol, which finishTruncation completes);
// when the log ends before from, it restarts empty at from.
func cutBelowCheckpoint(dir string, segs []segmentFile, i int, buf []byte, off int, rev, from uint64, reason string) (Cut, error) {
	c := Cut{Segment: segs[i].name, Offset: int64(off), Reason: fmt.Sprintf(
		"%s at revision %d, at or below the checkpointed revision %d: the log now starts later", reason, rev, from-1)}
	k := i // the segment that holds from
	for k+1 < len(segs) && segs[k+1].first <= from {
		k++
	}
	if i < k {
		return c, removeSegments(dir, segs[:i+1], &c)
	}
	if p, ok := findRecord(buf, off+1, from); ok {
		c.Bytes = int64(p)
		for _, s := range segs[:i] {
			if fi, err := os.Stat(filepath.Join(dir, s.name)); err == nil {
				c.Bytes += fi.Size()
			}
		}
		tmp := filepath.Join(dir, segmentName(from)+".START.TEMP")
		if err := os.WriteFile(tmp, buf[p:], 0o640); err != nil {
			return c, fmt.Errorf("wal: repair: %w", err)
		}
		if err := syncFile(tmp); err != nil {
			return c, err
		}
		if err := os.Rename(tmp, tmp[:len(tmp)-len(".TEMP")]); err != nil {
			return c, fmt.Errorf("wal: repair: %w", err)
		}
		return c, SyncDir(dir) // finishTruncation removes what comes before it
	}
	if i == len(segs)-1 && scanAfter(buf, off, from).records == 0 {
		return c, removeSegments(dir, segs, &c)
	}
	return c, &CorruptError{Segment: segs[i].name, Offset: int64(off), Hint: hintNeeded,
		Reason: fmt.Sprintf("%s; revision %d, which the state file needs, is not found after it", reason, from)}
}

// findRecord returns the offset, at or after start, of the tidwall/wal
// entry holding a valid record of revision rev.
func findRecord(buf []byte, start int, rev uint64) (int, bool) {
	for p := start; p < len(buf); p++ {
		size, un := binary.Uvarint(buf[p:])
		if un <= 0 || size < headerSizeV1 || size > uint64(len(buf)-p-un) {
			continue
		}
		b := buf[p+un : p+un+int(size)]
		if !plausibleRecord(b, rev, rev) {
			continue
		}
		if _, err := DecodeRecord(b); err == nil {
			return p, true
		}
	}
	return 0, false
}

// removeSegments deletes segment files, adding their sizes to c.Bytes.
func removeSegments(dir string, segs []segmentFile, c *Cut) error {
	for _, s := range segs {
		path := filepath.Join(dir, s.name)
		if fi, err := os.Stat(path); err == nil {
			c.Bytes += fi.Size()
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("wal: repair: %w", err)
		}
	}
	return SyncDir(dir)
}
