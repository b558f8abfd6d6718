package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
)

// readSlots is how many segments Read keeps the record offsets of (and a
// read-only descriptor for): enough for a reader at the tail and a few
// reading older segments, such as Raft's replication to followers that lag.
const readSlots = 4

// readChunk is how much of a segment file Read reads at a time to find its
// records' boundaries; an entry larger than that is skipped, not read.
const readChunk = 4 << 10

// segIndex says where the records of one segment file are: the tidwall/wal
// entry of revision first+i spans offs[i]..offs[i+1]. It covers the records
// Read has needed so far and grows as the segment does; it holds offsets
// only, never record data.
type segIndex struct {
	first uint64
	f     *os.File
	offs  []int64
}

// Read returns the payload of the record of revision rev, after checking its
// frame (CRC, length, revision). The caller owns the returned slice.
//
// Only written records are read: Read returns ErrNotFound above
// WrittenIndex, which a record enqueued but not yet written, or written but
// still waiting for the fsync it asked for (EnqueueSync), is above. It
// returns ErrCompacted below FirstIndex, a *CorruptError for a record that
// fails its checks, ErrClosed after Close, and the log's sticky error after
// a failure.
//
// Read is safe for concurrent use with every other method. Reads are
// serialized with each other and with TruncateFront, TruncateBack and
// Reset, which change the segment files; they run concurrently with
// appends, fsyncs and the flusher. A read costs a pread of the record, plus,
// the first time a segment is read (again, once Read has let go of it) or
// when the tail has grown, a scan of the entry lengths it has not seen.
//
// Read reads the segment files itself and never calls tidwall/wal's Read,
// which mutates tidwall/wal's segment cache under a shared lock and keeps a
// whole sealed segment in memory for each one it reads.
func (l *Log) Read(rev uint64) ([]byte, error) {
	l.segMu.Lock()
	defer l.segMu.Unlock()
	l.mu.Lock()
	closed, first, written, seg0 := l.closed, l.first, l.written, l.segFirst[0]
	i := sort.Search(len(l.segFirst), func(i int) bool { return l.segFirst[i] > rev }) - 1
	var seg, last uint64 // the segment holding rev, and its last written revision
	if i >= 0 {
		seg, last = l.segFirst[i], written
		if i+1 < len(l.segFirst) {
			last = min(last, l.segFirst[i+1]-1)
		}
	}
	l.mu.Unlock()
	switch {
	case closed:
		return nil, ErrClosed
	case l.failure() != nil:
		return nil, l.failure()
	case rev == 0 || rev > written:
		return nil, fmt.Errorf("wal: read revision %d (last written %d): %w", rev, written, ErrNotFound)
	case rev < first:
		return nil, fmt.Errorf("wal: read revision %d (log starts at %d): %w", rev, first, ErrCompacted)
	case i < 0:
		return nil, fmt.Errorf("wal: read revision %d: no segment holds it (the first starts at %d)", rev, seg0)
	}
	p, err := l.readRecord(rev, seg, last)
	if ce := (*CorruptError)(nil); errors.As(err, &ce) {
		// The segment's index was read from the same bytes: forget it, so
		// that the next Read indexes the file again rather than repeat an
		// error that a wrong offset, not the record, may have caused.
		l.forgetRead(seg)
	}
	return p, err
}

// readRecord reads and checks the record of revision rev in segment seg,
// whose last written revision is last. Called with segMu held.
func (l *Log) readRecord(rev, seg, last uint64) ([]byte, error) {
	ix, err := l.readIndex(seg, last)
	if err != nil {
		return nil, err
	}
	k := rev - seg
	off, end := ix.offs[k], ix.offs[k+1]
	b := make([]byte, end-off)
	if _, err := ix.f.ReadAt(b, off); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &CorruptError{Segment: segmentName(seg), Offset: off, Reason: "the segment ends inside the record"}
		}
		return nil, fmt.Errorf("wal: read revision %d: %w", rev, err)
	}
	_, un := binary.Uvarint(b) // readIndex checked it
	r, err := DecodeRecord(b[un:])
	switch {
	case err != nil:
		return nil, &CorruptError{Segment: segmentName(seg), Offset: off, Reason: err.Error()}
	case r.Revision != rev:
		return nil, &CorruptError{Segment: segmentName(seg), Offset: off,
			Reason: fmt.Sprintf("record holds revision %d, expected %d", r.Revision, rev)}
	}
	return r.Payload[:len(r.Payload):len(r.Payload)], nil
}

// FirstIndex returns the first revision the log holds: the lowest that Read
// finds, unless the log is empty (FirstIndex = WrittenIndex+1).
func (l *Log) FirstIndex() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first
}

// readIndex returns the index of segment seg, covering its records up to
// revision last, from the cache or built now. Called with segMu held.
func (l *Log) readIndex(seg, last uint64) (*segIndex, error) {
	var ix *segIndex
	for i, x := range l.reads {
		if x.first == seg {
			ix = x
			copy(l.reads[1:i+1], l.reads[:i])
			l.reads[0] = ix
			break
		}
	}
	if ix == nil {
		f, err := os.Open(filepath.Join(l.dir, segmentName(seg)))
		if err != nil {
			return nil, fmt.Errorf("wal: read: %w", err)
		}
		ix = &segIndex{first: seg, f: f, offs: []int64{0}}
		if len(l.reads) == readSlots {
			l.reads[readSlots-1].f.Close()
			l.reads[readSlots-1] = nil
			l.reads = l.reads[:readSlots-1]
		}
		l.reads = append(l.reads, nil)
		copy(l.reads[1:], l.reads)
		l.reads[0] = ix
	}
	if want := int(last-seg) + 2; len(ix.offs) < want {
		if l.readBuf == nil {
			l.readBuf = make([]byte, readChunk)
		}
		if err := ix.extend(want-len(ix.offs), l.readBuf); err != nil {
			return nil, err
		}
	}
	return ix, nil
}

// extend finds the boundaries of the next n entries of the segment, reading
// their lengths through buf. Only written records are indexed, so that the
// bytes it reads are never being written.
func (ix *segIndex) extend(n int, buf []byte) error {
	off := ix.offs[len(ix.offs)-1]
	for n > 0 {
		m, err := ix.f.ReadAt(buf, off)
		if m == 0 {
			if err == nil || errors.Is(err, io.EOF) {
				return &CorruptError{Segment: filepath.Base(ix.f.Name()), Offset: off,
					Reason: fmt.Sprintf("the segment ends before revision %d", ix.first+uint64(len(ix.offs)-1))}
			}
			return fmt.Errorf("wal: read segment %s: %w", filepath.Base(ix.f.Name()), err)
		}
		p := 0
		for n > 0 && p < m {
			size, un := binary.Uvarint(buf[p:m])
			if un == 0 {
				break // the length runs past what was read
			}
			if un < 0 || size > MaxPayload {
				return &CorruptError{Segment: filepath.Base(ix.f.Name()), Offset: off + int64(p), Reason: "bad entry length"}
			}
			end := off + int64(p+un) + int64(size)
			ix.offs = append(ix.offs, end)
			n--
			p = int(end - off)
		}
		if p == 0 {
			return &CorruptError{Segment: filepath.Base(ix.f.Name()), Offset: off, Reason: "the segment ends inside an entry length"}
		}
		off += int64(p)
	}
	return nil
}

// forgetRead forgets the index of segment seg, if Read keeps one, closing
// its descriptor. Called with segMu held.
func (l *Log) forgetRead(seg uint64) {
	for i, ix := range l.reads {
		if ix.first == seg {
			ix.f.Close()
			l.reads = slices.Delete(l.reads, i, i+1)
			return
		}
	}
}

// dropReads forgets the indexes of segments that start below rev, closing
// their descriptors: their files are being removed or replaced. Called with
// segMu held.
func (l *Log) dropReads(rev uint64) {
	kept := l.reads[:0]
	for _, ix := range l.reads {
		if ix.first < rev {
			ix.f.Close()
		} else {
			kept = append(kept, ix)
		}
	}
	clear(l.reads[len(kept):])
	l.reads = kept
}
