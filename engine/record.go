package engine

import (
	"encoding/binary"
	"encoding/hex"
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
// another key does not check. Every read of a record checks it: a record
// that does not check is an error (ErrCorruptValue), never a value.
// Format 1 stored the bare value; Open
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

// decodeRecord decodes and checks the value record of key; the value
// aliases rec. It reports false for a record that is too short or whose
// checksum does not match.
func decodeRecord(key, rec []byte) (memEntry, bool) {
	if len(rec) < recordHeaderLen {
		return memEntry{}, false
	}
	sum := crc32.Update(crc32.Checksum(key, castagnoli), castagnoli, rec[4:])
	if sum != binary.BigEndian.Uint32(rec) {
		return memEntry{}, false
	}
	return memEntry{
		value:  rec[recordHeaderLen:],
		create: binary.BigEndian.Uint64(rec[4:]),
		mod:    binary.BigEndian.Uint64(rec[12:]),
	}, true
}

// corruptValue logs, counts (Stats.Corruptions) and returns the error of
// key's value record that does not check. Neither names the key, a user's data, in full: its length and
// the hex of its first bytes.
func (db *DB) corruptValue(key []byte) error {
	prefix := hex.EncodeToString(key[:min(len(key), 8)])
	db.log.Error("engine: corrupt value in the state file", "key_len", len(key), "key_prefix", prefix)
	err := fmt.Errorf("%w: key of %d bytes starting %s", ErrCorruptValue, len(key), prefix)
	db.sawCorruption(err)
	return err
}
