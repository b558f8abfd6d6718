package wal

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// HeaderSize is the size of a record frame without its payload.
const HeaderSize = 4 + 1 + 8 + 8 + 4

// headerSizeV1 is the size of a format-1 frame, which has no watermark.
const headerSizeV1 = 4 + 1 + 8 + 4

// MaxPayload is the largest payload a record may carry.
const MaxPayload = 1<<31 - 1

// Record types.
const (
	// TypeBatchV1 is a record of format 1 (no watermark), written by kvd
	// before the durable watermark existed. It is read, never written.
	TypeBatchV1 byte = 1
	// TypeBatch is a record holding one committed write batch, with the
	// durable watermark of the log when it was written.
	TypeBatch byte = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	errShort  = errors.New("record shorter than its header")
	errLength = errors.New("record length does not match its frame")
	errCRC    = errors.New("checksum mismatch")
	errType   = errors.New("unknown record type")
)

// Record is one decoded log record.
type Record struct {
	Type     byte
	Revision uint64
	// Watermark is the highest revision that the log knew to be durable
	// (fsynced) when this record was queued: proof, if this record survives,
	// that every record up to Watermark had reached stable storage. Zero in
	// format-1 records.
	Watermark uint64
	Payload   []byte // aliases the decoded bytes
}

// AppendRecord appends the frame of one record of revision rev to dst and
// returns the result. watermark is the log's durable revision when the
// record is queued.
func AppendRecord(dst []byte, rev, watermark uint64, payload []byte) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, TypeBatch)
	dst = binary.LittleEndian.AppendUint64(dst, rev)
	dst = binary.LittleEndian.AppendUint64(dst, watermark)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	dst = append(dst, payload...)
	binary.LittleEndian.PutUint32(dst[start:], crc32.Checksum(dst[start+4:], castagnoli))
	return dst
}

// DecodeRecord checks the frame of one record (either format) and returns
// its parts. The payload aliases b.
func DecodeRecord(b []byte) (Record, error) {
	if len(b) < headerSizeV1 {
		return Record{}, errShort
	}
	var r Record
	var hdr int
	switch r.Type = b[4]; r.Type {
	case TypeBatch:
		if len(b) < HeaderSize {
			return Record{}, errShort
		}
		r.Watermark = binary.LittleEndian.Uint64(b[13:21])
		hdr = HeaderSize
	case TypeBatchV1:
		hdr = headerSizeV1
	default:
		return Record{}, errType
	}
	if n := binary.LittleEndian.Uint32(b[hdr-4 : hdr]); uint64(n) != uint64(len(b)-hdr) {
		return Record{}, errLength
	}
	if crc32.Checksum(b[4:], castagnoli) != binary.LittleEndian.Uint32(b[0:4]) {
		return Record{}, errCRC
	}
	r.Revision = binary.LittleEndian.Uint64(b[5:13])
	r.Payload = b[hdr:]
	return r, nil
}

// plausibleRecord is DecodeRecord's cheap first half: whether b could be a
// record frame of a revision in [lo, hi], before the checksum is computed.
func plausibleRecord(b []byte, lo, hi uint64) bool {
	if len(b) < headerSizeV1 {
		return false
	}
	hdr := headerSizeV1
	switch b[4] {
	case TypeBatch:
		hdr = HeaderSize
	case TypeBatchV1:
	default:
		return false
	}
	if len(b) < hdr || uint64(binary.LittleEndian.Uint32(b[hdr-4:hdr])) != uint64(len(b)-hdr) {
		return false
	}
	r := binary.LittleEndian.Uint64(b[5:13])
	return r >= lo && r <= hi
}
