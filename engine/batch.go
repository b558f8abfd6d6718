package engine

import (
	"encoding/binary"
	"fmt"
	"math"
)

// A Batch is a list of operations committed atomically by DB.Write: after a
// crash, either all of them survive or none does. A Batch is not safe for
// concurrent use; it may be reused after Write returns (or, after Submit,
// once WaitWritten returns).
//
// A Batch is plain data: its encoded form (Bytes) is the payload of its log
// record, and DB.Apply applies an encoded batch on any node. Conditional
// operations (PutIf, IncrBy, IncrByFloat, Append, GetDelete, DeleteAll,
// compare-and-set, and the result of Delete) are evaluated when
// the batch is applied, in revision order, against the state left by every
// earlier revision and by the batch's own earlier operations; each operation
// then has a Result (see Results). Applying the same encoded batches in the
// same order therefore gives the same state and the same results.
//
// # Encoding
//
// The encoding starts with four zero bytes and a version byte. The four
// zero bytes are what tells it from the format that earlier builds wrote,
// which logs may still hold and which is still decoded (never written):
// that one starts with its operation count, a uint32 that is never zero.
//
//	version 2:
//	  0x00 0x00 0x00 0x00 | version 0x02 | timestamp int64 BE (Unix ms; 0: none) | op+
//	  op:  as in version 1, and:
//	       7 put-ex   cond byte (PutCond bits, and 8 KeepExpiry) | varint (zigzag) expiry
//	                  (Unix ms; 0: none) | uvarint value length | value
//	       8 expire   cond byte (ExpireCond bits: 1 NX, 2 XX, 4 GT, 8 LT, 16 ReturnValue) |
//	                  varint (zigzag) expiry (Unix ms)
//	       9 persist  cond byte (ExpireCond: 16 ReturnValue or 0)
//
//	version 1 (read only; no timestamp: no key counts as expired when applying it):
//	  0x00 0x00 0x00 0x00 | version 0x01 | op+
//	  op:  kind byte | uvarint key length | key (not empty) | by kind:
//	       0 put      uvarint value length | value
//	       1 delete   (nothing)
//	       2 put-if   cond byte (PutCond bits: 1 NX, 2 XX, 4 GET) | uvarint value length | value
//	       3 incr-by  varint (zigzag) delta
//	       4 cas      flags byte (1: delete, else 0: put) | uvarint mod revision |
//	                  for a put: uvarint value length | value
//	       5 get      (nothing)
//	       6 require  uvarint mod revision
//	      10 append   uvarint value length | value
//	      11 incr-by-float  8 bytes: the increment's float64 bits, little-endian
//	      12 get-delete     (nothing)
//	  delete-all has no key: kind byte 13 only.
//
//	legacy (version 0, read only):
//	  count uint32 LE (≥ 1) | op*count
//	  op:  kind byte (0 put, 1 delete) | uvarint key length | key | put only: uvarint value length | value
type Batch struct {
	// wrote is the revision at which the log wrote the batch, set (with
	// atomic stores) by the log's OnWritten once the batch is applied, 0
	// until then; rev is the revision Submit gave it. They differ when the
	// log refused the batch and gave its revision to a later write.
	wrote uint64
	rev   uint64
	data  []byte
	ops   []batchOp
	// at is the batch's timestamp (Unix ms), also in data; stamped marks
	// one given by SetTimestamp, which Submit keeps.
	at      int64
	stamped bool
	// owned marks a batch made inside the engine: the memtable may keep
	// slices of its data instead of copying them.
	owned bool
	// vals is where applyBatch copies the values a batch not owned puts,
	// together (see keep); nil outside applyBatch.
	vals []byte

	// results holds one Result per op once the batch is applied; arena
	// holds the old values that results[i].Old point into.
	results []Result
	arena   []byte
	// aborted is set when the batch is applied and one of its require ops
	// failed.
	aborted bool
}

type batchOp struct {
	kind   byte
	cond   PutCond    // put-if and put-ex only
	econd  ExpireCond // expire and persist only
	exp    int64      // put-ex and expire: the expiry, Unix ms
	delta  int64      // incr-by only
	fdelta float64    // incr-by-float only
	ifRev  uint64     // cas and require: the mod revision it requires
	casDel bool       // cas only: delete instead of put
	k0, k1 int        // key = data[k0:k1]
	v0, v1 int        // value = data[v0:v1]
}

// Operation kinds, as encoded.
const (
	opPut     byte = 0
	opDelete  byte = 1
	opPutIf   byte = 2
	opIncrBy  byte = 3
	opCAS     byte = 4
	opGet     byte = 5
	opReq     byte = 6
	opPutEx   byte = 7
	opExpire  byte = 8
	opPersist byte = 9

	opAppend    byte = 10
	opIncrFloat byte = 11
	opGetDelete byte = 12
	opDeleteAll byte = 13
)

// casDelete is the flag of a cas op that deletes.
const casDelete = 1

const (
	batchVersion   = 2
	batchVersionV1 = 1
	headerLenV1    = 5  // four zero bytes and the version
	headerLen      = 13 // and the timestamp
)

// PutCond is the condition and options of a PutIf: Redis's SET NX, XX and
// GET. IfAbsent and IfPresent exclude each other.
type PutCond uint8

const (
	// IfAbsent writes only if the key holds no value (SET NX).
	IfAbsent PutCond = 1 << iota
	// IfPresent writes only if the key holds a value (SET XX).
	IfPresent
	// ReturnOld reports the key's previous value in Result.Old (SET GET).
	ReturnOld
	// KeepExpiry keeps the key's expiry (SET KEEPTTL), for PutExpiresAt
	// only; any other put clears it.
	KeepExpiry

	putCondMask = IfAbsent | IfPresent | ReturnOld
)

func (c PutCond) valid() bool {
	return c&^putCondMask == 0 && c&(IfAbsent|IfPresent) != IfAbsent|IfPresent
}

// ExpireCond is the condition and options of an Expire or Persist:
// Redis's EXPIRE NX, XX, GT and LT, and GETEX's returned value.
type ExpireCond uint8

const (
	// ExpireNX sets the expiry only if the key has none.
	ExpireNX ExpireCond = 1 << iota
	// ExpireXX sets it only if the key has one.
	ExpireXX
	// ExpireGT sets it only if it is later than the key's (a key without
	// one counts as never expiring: GT never holds for it).
	ExpireGT
	// ExpireLT sets it only if it is earlier than the key's (a key without
	// one counts as never expiring: LT always holds for it).
	ExpireLT
	// ExpireReturnValue reports the key's value in Result.Old (GETEX).
	ExpireReturnValue

	expireCondMask = ExpireNX | ExpireXX | ExpireGT | ExpireLT | ExpireReturnValue
)

func (c ExpireCond) valid() bool {
	if c&^expireCondMask != 0 || c&(ExpireGT|ExpireLT) == ExpireGT|ExpireLT {
		return false
	}
	return c&ExpireNX == 0 || c&(ExpireXX|ExpireGT|ExpireLT) == 0
}

// Result is the outcome of one operation of an applied batch.
//
// For a get, Applied is whether the key holds a value, Old is the value
// (nil if it holds none), and ModRevision and CreateRevision are its
// revisions (0 if it holds none). For a require, Applied is whether it
// held and ModRevision is the key's mod revision.
type Result struct {
	// Applied reports whether the operation changed the key: always for a
	// put; for a delete, whether the key held a value (a DEL's count is the
	// number of applied deletes); for a put-if, whether its condition held;
	// for an incr-by, whether it succeeded; for a compare-and-set, whether
	// the key's mod revision was the one given.
	Applied bool
	// Old is the previous value for a put-if with ReturnOld and for a
	// get-delete: nil if the key held none, otherwise non-nil (perhaps
	// empty).
	Old []byte
	// Int is the new value after an incr-by, the value's new length after
	// an append, and the number of keys deleted by a delete-all.
	Int int64
	// Value is the new value after an incr-by-float, as stored.
	Value []byte
	// ModRevision is, for a compare-and-set, the key's mod revision after
	// it: the batch's revision if it put, the key's unchanged one if its
	// condition failed, 0 if the key holds no value.
	ModRevision uint64
	// CreateRevision is, for a get, the key's create revision.
	CreateRevision uint64
	// Err is why an incr-by changed nothing: ErrNotInteger or ErrOverflow
	// (for an incr-by-float: ErrNotFloat or ErrFloatRange).
	// Such an error is the operation's result, not the batch's: the other
	// operations of the batch still apply. In a batch that a failed require
	// aborted, every operation's Err is ErrRequireFailed.
	Err error
}

// SetTimestamp sets the batch's timestamp, in Unix milliseconds: the time
// at which every decision of its operations that depends on expiry is
// taken (whether a key is live for PutIf, IncrBy, CompareAndPut, Delete's
// result, Expire...), so that every node that applies the batch takes the
// same. Submit, Write and Update stamp a batch with the local clock unless
// SetTimestamp gave it one; DB.Apply takes the timestamp the encoded batch
// carries. Reset clears it.
func (b *Batch) SetTimestamp(ms int64) {
	b.header()
	b.at, b.stamped = ms, true
	binary.BigEndian.PutUint64(b.data[5:], uint64(ms))
}

// Timestamp returns the batch's timestamp (see SetTimestamp): 0 until it is
// set or the batch is submitted, and for a decoded batch that carries none.
func (b *Batch) Timestamp() int64 { return b.at }

// stamp sets the timestamp of a batch about to be submitted.
func (b *Batch) stamp(now int64) {
	if !b.stamped && len(b.data) >= headerLen && b.data[4] == batchVersion {
		b.at = now
		binary.BigEndian.PutUint64(b.data[5:], uint64(now))
	}
}

func (b *Batch) header() {
	if len(b.data) == 0 {
		b.data = append(b.data, 0, 0, 0, 0, batchVersion, 0, 0, 0, 0, 0, 0, 0, 0)
	}
}

// Put adds a write of value under key. The Batch copies both. Like any
// put but PutExpiresAt with KeepExpiry, it clears the key's expiry.
func (b *Batch) Put(key, value []byte) {
	b.add(batchOp{kind: opPut}, key, value)
}

// Delete adds a deletion of key. Its Result.Applied reports whether the key
// held a value. The Batch copies key.
func (b *Batch) Delete(key []byte) {
	b.add(batchOp{kind: opDelete}, key, nil)
}

// PutIf adds a write of value under key that is applied only if cond holds
// when the batch is applied (SET with NX, XX and GET). A cond with both
// IfAbsent and IfPresent, or unknown bits, makes the batch fail its write
// with ErrBadBatch. The Batch copies key and value.
func (b *Batch) PutIf(key, value []byte, cond PutCond) {
	b.add(batchOp{kind: opPutIf, cond: cond}, key, value)
}

// IncrBy adds delta to the integer held by key (a missing key counts as 0)
// and stores the result in decimal (INCRBY, DECRBY). The value must be a
// 64-bit signed integer in canonical decimal form, as Redis requires;
// otherwise, or if the sum overflows, the operation's Result.Err is
// ErrNotInteger or ErrOverflow and the key is left unchanged. The Batch
// copies key.
func (b *Batch) IncrBy(key []byte, delta int64) {
	b.add(batchOp{kind: opIncrBy, delta: delta}, key, nil)
}

// CompareAndPut adds a write of value under key that is applied only if
// the key's mod revision is modRev when the batch is applied; modRev 0
// means only if the key holds no value. Its Result.Applied says whether it
// was, and Result.ModRevision is the key's mod revision after it (see
// Result). The Batch copies key and value.
func (b *Batch) CompareAndPut(key, value []byte, modRev uint64) {
	b.add(batchOp{kind: opCAS, ifRev: modRev}, key, value)
}

// CompareAndDelete adds a deletion of key that is applied only if the
// key's mod revision is modRev when the batch is applied (modRev 0: only
// if the key holds no value, which deletes nothing). Its Result is as
// CompareAndPut's. The Batch copies key.
func (b *Batch) CompareAndDelete(key []byte, modRev uint64) {
	b.add(batchOp{kind: opCAS, ifRev: modRev, casDel: true}, key, nil)
}

// Get adds a read of key: its Result reports the key's value, as the
// batch's earlier operations left it, and its revisions (see Result). A
// get writes nothing, but it is part of the batch's log record, as any
// operation is. The Batch copies key.
func (b *Batch) Get(key []byte) {
	b.add(batchOp{kind: opGet}, key, nil)
}

// Require adds a precondition on the whole batch: key's mod revision must
// be modRev (0: the key holds no value). Every require op of a batch is
// checked before any of its operations is applied, against the state that
// earlier revisions left, wherever it stands in the batch. If one fails,
// the batch applies nothing: it still takes its revision (it is in the
// log), Aborted reports true, and every Result's Err is ErrRequireFailed.
// This is what WATCH needs. The Batch copies key.
func (b *Batch) Require(key []byte, modRev uint64) {
	b.add(batchOp{kind: opReq, ifRev: modRev}, key, nil)
}

// Aborted reports whether the applied batch applied nothing because one of
// its require ops failed (see Require). It is false before the batch is
// applied.
func (b *Batch) Aborted() bool { return b.aborted }

// Append adds value to the end of the value held by key (a missing key
// counts as empty; APPEND). Its Result.Int is the new length. A result
// over the applying DB's Options.MaxValueSize leaves the key unchanged,
// with Result.Err wrapping ErrValueTooLarge: DBs that apply the same
// batches must share that limit. The Batch copies key and value.
func (b *Batch) Append(key, value []byte) {
	b.add(batchOp{kind: opAppend}, key, value)
}

// IncrByFloat adds delta to the number held by key (a missing key counts
// as 0) and stores the sum as FormatFloat writes it (INCRBYFLOAT). The
// value must parse as a float (ParseFloat); otherwise Result.Err is
// ErrNotFloat, and a sum that is not finite gives ErrFloatRange; either
// way the key is left unchanged. Result.Value is the stored sum. The Batch
// copies key.
func (b *Batch) IncrByFloat(key []byte, delta float64) {
	b.add(batchOp{kind: opIncrFloat, fdelta: delta}, key, nil)
}

// GetDelete adds a deletion of key that reports the value it deleted in
// Result.Old (GETDEL); Result.Applied is as a Delete's. The Batch copies key.
func (b *Batch) GetDelete(key []byte) {
	b.add(batchOp{kind: opGetDelete}, key, nil)
}

// DeleteAll adds a deletion of every key that holds a value when the
// batch is applied (FLUSHDB), including the batch's earlier puts. Its
// Result.Int is the number of keys deleted. It costs a tombstone in memory
// per key until the next checkpoint.
func (b *Batch) DeleteAll() {
	b.header()
	b.data = append(b.data, opDeleteAll)
	b.ops = append(b.ops, batchOp{kind: opDeleteAll})
}

// PutExpiresAt is PutIf with an expiry: the key expires at expiresAt, in
// Unix milliseconds (SET EX, PX, EXAT, PXAT), or, with expiresAt 0, has
// none; cond may also hold KeepExpiry (SET KEEPTTL), which keeps the
// expiry the key has, if it is live, and needs expiresAt 0. An expiry that
// has passed when the batch is applied writes a key that has expired: no
// read returns it. A bad cond or a negative expiresAt makes the batch fail
// its write with ErrBadBatch. The Batch copies key and value.
func (b *Batch) PutExpiresAt(key, value []byte, cond PutCond, expiresAt int64) {
	b.add(batchOp{kind: opPutEx, cond: cond, exp: expiresAt}, key, value)
}

// Expire adds a change of key's expiry to expiresAt, in Unix milliseconds
// (EXPIRE, PEXPIREAT...), if the key is live and cond holds when the batch
// is applied; an expiry not after the batch's timestamp deletes the key, as
// in Redis. Result.Applied reports whether the expiry was set (or the key
// deleted); with ExpireReturnValue, Result.Old is the key's value if it was
// live. The key keeps its value and create revision and gets the batch's
// revision as its mod revision. A bad cond makes the batch fail its write
// with ErrBadBatch. The Batch copies key.
func (b *Batch) Expire(key []byte, expiresAt int64, cond ExpireCond) {
	b.add(batchOp{kind: opExpire, econd: cond, exp: expiresAt}, key, nil)
}

// Persist adds the removal of key's expiry (PERSIST). Result.Applied
// reports whether the key was live and had one (its mod revision is then
// the batch's); cond may be ExpireReturnValue (GETEX PERSIST), which
// reports the key's value in Result.Old. The Batch copies key.
func (b *Batch) Persist(key []byte, cond ExpireCond) {
	b.add(batchOp{kind: opPersist, econd: cond}, key, nil)
}

func (b *Batch) add(op batchOp, key, value []byte) {
	b.header()
	b.data = append(b.data, op.kind)
	b.data = binary.AppendUvarint(b.data, uint64(len(key)))
	op.k0 = len(b.data)
	b.data = append(b.data, key...)
	op.k1 = len(b.data)
	switch op.kind {
	case opPutIf:
		b.data = append(b.data, byte(op.cond))
		fallthrough
	case opPut, opAppend:
		b.data = binary.AppendUvarint(b.data, uint64(len(value)))
		op.v0 = len(b.data)
		b.data = append(b.data, value...)
		op.v1 = len(b.data)
	case opPutEx:
		b.data = append(b.data, byte(op.cond))
		b.data = binary.AppendVarint(b.data, op.exp)
		b.data = binary.AppendUvarint(b.data, uint64(len(value)))
		op.v0 = len(b.data)
		b.data = append(b.data, value...)
		op.v1 = len(b.data)
	case opExpire:
		b.data = append(b.data, byte(op.econd))
		b.data = binary.AppendVarint(b.data, op.exp)
	case opPersist:
		b.data = append(b.data, byte(op.econd))
	case opIncrBy:
		b.data = binary.AppendVarint(b.data, op.delta)
	case opIncrFloat:
		b.data = binary.LittleEndian.AppendUint64(b.data, math.Float64bits(op.fdelta))
	case opCAS:
		flags := byte(0)
		if op.casDel {
			flags = casDelete
		}
		b.data = append(b.data, flags)
		b.data = binary.AppendUvarint(b.data, op.ifRev)
		if !op.casDel {
			b.data = binary.AppendUvarint(b.data, uint64(len(value)))
			op.v0 = len(b.data)
			b.data = append(b.data, value...)
			op.v1 = len(b.data)
		}
	case opReq:
		b.data = binary.AppendUvarint(b.data, op.ifRev)
	}
	b.ops = append(b.ops, op)
}

// AppendBatch adds o's operations to b, after b's own, as if each had
// been added to b by its method. The Batch copies them.
func (b *Batch) AppendBatch(o *Batch) {
	for _, op := range o.ops {
		if op.kind == opDeleteAll {
			b.DeleteAll()
			continue
		}
		b.add(op, o.key(op), o.value(op))
	}
}

// Len returns the number of operations in the batch.
func (b *Batch) Len() int { return len(b.ops) }

// Reset empties the batch for reuse, results included.
func (b *Batch) Reset() {
	b.data = b.data[:0]
	b.ops = b.ops[:0]
	b.at, b.stamped = 0, false
	b.clearResults()
}

// Bytes returns the encoded batch: what DB.Apply and DecodeBatch take. It
// aliases the batch and is valid until the batch is changed. An empty
// batch encodes to nil.
func (b *Batch) Bytes() []byte {
	if len(b.ops) == 0 {
		return nil
	}
	return b.data
}

// Results returns the result of each operation, in order, once the batch
// is applied: after Write or Apply returns, or WaitWritten returns nil. It
// is nil before, and after a write that failed. The results, and the Old
// values in them, belong to the batch: they stay valid until the batch is
// reset or written again, so a caller such as an event loop can read them
// without copying.
func (b *Batch) Results() []Result { return b.results }

func (b *Batch) clearResults() {
	clear(b.results) // let go of errors
	b.results = b.results[:0]
	b.arena = b.arena[:0]
	b.aborted = false
}

func (b *Batch) key(op batchOp) []byte   { return b.data[op.k0:op.k1] }
func (b *Batch) value(op batchOp) []byte { return b.data[op.v0:op.v1] }

// check validates every key, value and condition.
func (b *Batch) check(o *Options) error {
	for _, op := range b.ops {
		if op.kind == opDeleteAll {
			continue
		}
		if err := checkKey(b.key(op), o); err != nil {
			return err
		}
		if op.v1-op.v0 > o.MaxValueSize {
			return fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, op.v1-op.v0, o.MaxValueSize)
		}
		if op.kind == opPutIf && !op.cond.valid() {
			return fmt.Errorf("%w: put-if condition %#x", ErrBadBatch, op.cond)
		}
		if op.kind == opPutEx && !validPutEx(op.cond, op.exp) {
			return fmt.Errorf("%w: put-ex condition %#x with expiry %d", ErrBadBatch, op.cond, op.exp)
		}
		if (op.kind == opExpire && !op.econd.valid()) || (op.kind == opPersist && op.econd&^ExpireReturnValue != 0) {
			return fmt.Errorf("%w: expire condition %#x", ErrBadBatch, op.econd)
		}
	}
	return nil
}

func validPutEx(c PutCond, exp int64) bool {
	return (c &^ KeepExpiry).valid() && exp >= 0 && (c&KeepExpiry == 0 || exp == 0)
}

func checkKey(key []byte, o *Options) error {
	if len(key) == 0 {
		return ErrEmptyKey
	}
	if len(key) > o.MaxKeySize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrKeyTooLarge, len(key), o.MaxKeySize)
	}
	return nil
}

// DecodeBatch parses an encoded batch (Batch.Bytes, or a log record's
// payload written by any kvd build) into a Batch that aliases data. It
// returns ErrBadBatch for anything malformed, an empty batch included.
func DecodeBatch(data []byte) (*Batch, error) {
	b, err := decodeBatch(data[:len(data):len(data)])
	if err != nil {
		return nil, err
	}
	return b, nil
}

// decodeBatch parses a log payload into a Batch that aliases payload.
func decodeBatch(payload []byte) (*Batch, error) {
	if len(payload) < 4 {
		return nil, ErrBadBatch
	}
	if binary.LittleEndian.Uint32(payload) != 0 {
		return decodeLegacy(payload)
	}
	b := &Batch{data: payload}
	d := decoder{p: payload}
	switch {
	case len(payload) > headerLenV1 && payload[4] == batchVersionV1:
		d.i = headerLenV1
	case len(payload) > headerLen && payload[4] == batchVersion:
		d.i = headerLen
		b.at = int64(binary.BigEndian.Uint64(payload[5:]))
		b.stamped = b.at != 0
	default:
		return nil, ErrBadBatch
	}
	v2 := payload[4] == batchVersion
	for d.i < len(payload) {
		kind := d.byte()
		op := batchOp{kind: kind}
		if kind == opDeleteAll {
			b.ops = append(b.ops, op)
			continue
		}
		op.k0, op.k1 = d.field()
		switch kind {
		case opPut, opAppend:
			op.v0, op.v1 = d.field()
		case opDelete, opGetDelete:
		case opIncrFloat:
			op.fdelta = math.Float64frombits(d.uint64())
		case opPutIf:
			op.cond = PutCond(d.byte())
			op.v0, op.v1 = d.field()
			if !op.cond.valid() {
				d.bad = true
			}
		case opPutEx:
			op.cond = PutCond(d.byte())
			op.exp = d.varint()
			op.v0, op.v1 = d.field()
			d.bad = d.bad || !v2 || !validPutEx(op.cond, op.exp)
		case opExpire:
			op.econd = ExpireCond(d.byte())
			op.exp = d.varint()
			d.bad = d.bad || !v2 || !op.econd.valid()
		case opPersist:
			op.econd = ExpireCond(d.byte())
			d.bad = d.bad || !v2 || op.econd&^ExpireReturnValue != 0
		case opIncrBy:
			op.delta = d.varint()
		case opCAS:
			switch d.byte() {
			case 0:
				op.ifRev = d.uvarint()
				op.v0, op.v1 = d.field()
			case casDelete:
				op.casDel = true
				op.ifRev = d.uvarint()
			default:
				d.bad = true
			}
		case opGet:
		case opReq:
			op.ifRev = d.uvarint()
		default:
			d.bad = true
		}
		if d.bad || op.k0 == op.k1 {
			return nil, ErrBadBatch
		}
		b.ops = append(b.ops, op)
	}
	return b, nil
}

// decodeLegacy parses the format earlier builds wrote.
func decodeLegacy(payload []byte) (*Batch, error) {
	n := binary.LittleEndian.Uint32(payload)
	if uint64(n) > uint64(len(payload)) {
		return nil, ErrBadBatch
	}
	d := decoder{p: payload, i: 4}
	b := &Batch{data: payload, ops: make([]batchOp, 0, n)}
	for range n {
		op := batchOp{kind: d.byte()}
		op.k0, op.k1 = d.field()
		switch op.kind {
		case opPut:
			op.v0, op.v1 = d.field()
		case opDelete:
		default:
			d.bad = true
		}
		if d.bad || op.k0 == op.k1 {
			return nil, ErrBadBatch
		}
		b.ops = append(b.ops, op)
	}
	if d.i != len(payload) {
		return nil, ErrBadBatch
	}
	return b, nil
}

// decoder reads fields from p at i; after a malformed one, bad is set and
// every later read returns zeros.
type decoder struct {
	p   []byte
	i   int
	bad bool
}

func (d *decoder) byte() byte {
	if d.bad || d.i >= len(d.p) {
		d.bad = true
		return 0
	}
	d.i++
	return d.p[d.i-1]
}

// field reads a uvarint length and skips that many bytes, returning their
// bounds.
func (d *decoder) field() (int, int) {
	if d.bad {
		return 0, 0
	}
	l, n := binary.Uvarint(d.p[d.i:])
	if n <= 0 || l > uint64(len(d.p)-d.i-n) {
		d.bad = true
		return 0, 0
	}
	s := d.i + n
	d.i = s + int(l)
	return s, d.i
}

func (d *decoder) uint64() uint64 {
	if d.bad || len(d.p)-d.i < 8 {
		d.bad = true
		return 0
	}
	d.i += 8
	return binary.LittleEndian.Uint64(d.p[d.i-8:])
}

func (d *decoder) uvarint() uint64 {
	if d.bad {
		return 0
	}
	v, n := binary.Uvarint(d.p[d.i:])
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.i += n
	return v
}

// varint reads a zigzag-encoded varint, as binary.AppendVarint writes it.
func (d *decoder) varint() int64 {
	u := d.uvarint()
	return int64(u>>1) ^ -int64(u&1)
}
