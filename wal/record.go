package wal

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// HeaderSize is the size of a record frame without its payload.
const HeaderSize = 4 + 1 + 8 + 4

// MaxPayload is the largest payload a record may carry.
const MaxPayload = 1<<31 - 1

// Record types.
const (
	// TypeBatch is a record holding one committed write batch.
	TypeBatch byte = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	errShort  = errors.New("record shorter than its header")
	errLength = errors.New("record length does not match its frame")
	errCRC    = errors.New("checksum mismatch")
	errType   = errors.New("unknown record type")
)

// AppendRecord appends the frame of one record to dst and returns the result.
func AppendRecord(dst []byte, typ byte, rev uint64, payload []byte) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, typ)
	dst = binary.LittleEndian.AppendUint64(dst, rev)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	dst = append(dst, payload...)
	binary.LittleEndian.PutUint32(dst[start:], crc32.Checksum(dst[start+4:], castagnoli))
	return dst
}

// DecodeRecord checks the frame of one record and returns its parts. The
// payload aliases b.
func DecodeRecord(b []byte) (typ byte, rev uint64, payload []byte, err error) {
	if len(b) < HeaderSize {
		return 0, 0, nil, errShort
	}
	n := binary.LittleEndian.Uint32(b[13:17])
	if uint64(n) != uint64(len(b)-HeaderSize) {
		return 0, 0, nil, errLength
	}
	if crc32.Checksum(b[4:], castagnoli) != binary.LittleEndian.Uint32(b[0:4]) {
		return 0, 0, nil, errCRC
	}
	typ = b[4]
	if typ != TypeBatch {
		return 0, 0, nil, errType
	}
	return typ, binary.LittleEndian.Uint64(b[5:13]), b[HeaderSize:], nil
}
