package engine

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
)

// The state file's bucket "kv" maps each live key to a value record (state
// format 3):
//
//	+-----------+-------------+-------------+---------------+-----------------+
//	| crc32c    | create rev  | mod rev     | expires at    | value           |
//	| uint32 BE | uint64 BE   | uint64 BE   | int64 BE (ms) | (rest, 0+ bytes)|
//	+-----------+-------------+-------------+---------------+-----------------+
//	0           4             12            20              28
//
// The checksum is CRC-32C (Castagnoli) over the key followed by the record
// from offset 4 (the revisions, the expiry and the value): a record copied
// under another key does not check. Every read of a record checks it: a
// record that does not check is an error (ErrCorruptValue), never a value.
// "expires at" is the key's absolute expiry time in Unix milliseconds, 0 for
// none.
//
// Format 2 had the same record without the expiry (a header of 20 bytes),
// format 1 stored the bare value; Open migrates both (see openState).
const recordHeaderLen = 28

// recordHeaderLenV2 is the header of a format 2 record: no expiry.
const recordHeaderLenV2 = 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendRecord appends the value record of key to dst.
func appendRecord(dst, key []byte, create, mod uint64, expires int64, value []byte) []byte {
	r0 := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint64(dst, create)
	dst = binary.BigEndian.AppendUint64(dst, mod)
	dst = binary.BigEndian.AppendUint64(dst, uint64(expires))
	dst = append(dst, value...)
	sum := crc32.Update(crc32.Checksum(key, castagnoli), castagnoli, dst[r0+4:])
	binary.BigEndian.PutUint32(dst[r0:], sum)
	return dst
}

// decodeRecord decodes and checks the value record of key; the value
// aliases rec. It reports false for a record that is too short or whose
// checksum does not match.
func decodeRecord(key, rec []byte) (memEntry, bool) {
	if !checkRecord(key, rec, recordHeaderLen) {
		return memEntry{}, false
	}
	return memEntry{
		value:   rec[recordHeaderLen:],
		create:  binary.BigEndian.Uint64(rec[4:]),
		mod:     binary.BigEndian.Uint64(rec[12:]),
		expires: int64(binary.BigEndian.Uint64(rec[20:])),
	}, true
}

// decodeRecordV2 decodes and checks a value record of state format 2.
func decodeRecordV2(key, rec []byte) (memEntry, bool) {
	if !checkRecord(key, rec, recordHeaderLenV2) {
		return memEntry{}, false
	}
	return memEntry{
		value:  rec[recordHeaderLenV2:],
		create: binary.BigEndian.Uint64(rec[4:]),
		mod:    binary.BigEndian.Uint64(rec[12:]),
	}, true
}

func checkRecord(key, rec []byte, header int) bool {
	if len(rec) < header {
		return false
	}
	sum := crc32.Update(crc32.Checksum(key, castagnoli), castagnoli, rec[4:])
	return sum == binary.BigEndian.Uint32(rec)
}

// The state file's bucket "expiry" indexes the keys that have an expiry, in
// the order of their expiry: each entry's key is the expiry time (Unix
// milliseconds, uint64 BE) followed by the key, and its value is empty. The
// checkpoint keeps it in step with bucket "kv" in the same transaction, so
// it holds exactly the keys of "kv" whose record has an expiry. The sweep
// (expiry.go) reads it from the front to find expired keys without reading
// the others. It holds no data of its own: a damaged entry can at worst make
// the sweep look at a key that has not expired, which it checks against the
// key's value record.
var bucketExpiry = []byte("expiry")

// expiryKey appends the index key of key expiring at expires to dst.
func expiryKey(dst []byte, expires int64, key []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(expires))
	return append(dst, key...)
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
