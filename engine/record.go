package engine

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// The state file's bucket "kv" maps each live key to a value record (state
// format 2):
//
//	+-----------+----------------+----------------+-----------------+
//	| crc32c    | create rev     | mod rev        | value           |
//	| uint32 BE | uint64 BE      | uint64 BE      | (rest, 0+ bytes)|
//	+-----------+----------------+----------------+-----------------+
//	0           4                12               20
//
// The checksum is CRC-32C (Castagnoli) over the key followed by the record
// from offset 4 (the revisions and the value): a record copied under
// another key does not check. Format 1 stored the bare value; Open
// migrates such a file (see openState).
const recordHeaderLen = 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendRecord appends the value record of key to dst.
func appendRecord(dst, key []byte, create, mod uint64, value []byte) []byte {
	r0 := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint64(dst, create)
	dst = binary.BigEndian.AppendUint64(dst, mod)
	dst = append(dst, value...)
	sum := crc32.Update(crc32.Checksum(key, castagnoli), castagnoli, dst[r0+4:])
	binary.BigEndian.PutUint32(dst[r0:], sum)
	return dst
}

// decodeRecord decodes the value record of key; the value aliases rec.
func decodeRecord(key, rec []byte) (memEntry, error) {
	if len(rec) < recordHeaderLen {
		return memEntry{}, fmt.Errorf("engine: state file: value record of %d bytes", len(rec))
	}
	return memEntry{
		value:  rec[recordHeaderLen:],
		create: binary.BigEndian.Uint64(rec[4:]),
		mod:    binary.BigEndian.Uint64(rec[12:]),
	}, nil
}
