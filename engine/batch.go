package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A Batch is a list of writes committed atomically by DB.Write: after a
// crash, either all of them survive or none does. A Batch is not safe for
// concurrent use; it may be reused after Write returns.
//
// A Batch is kept in its encoded form, which is also the payload of its log
// record:
//
//	count  uint32 LE
//	op*    kind byte (0 put, 1 delete) | uvarint key length | key
//	       | put only: uvarint value length | value
type Batch struct {
	// wrote is the revision at which the log wrote the batch, set (with
	// atomic stores) by the log's OnWritten, 0 until then; rev is the
	// revision Submit gave it. They differ when the log refused the batch
	// and gave its revision to a later write.
	wrote uint64
	rev   uint64
	data  []byte
	ops   []batchOp
	// owned marks a batch made inside the engine: the memtable may keep
	// slices of its data instead of copying them.
	owned bool
}

type batchOp struct {
	del    bool
	k0, k1 int // key = data[k0:k1]
	v0, v1 int // value = data[v0:v1]
}

const (
	opPut    byte = 0
	opDelete byte = 1
)

// Put adds a write of value under key. The Batch copies both.
func (b *Batch) Put(key, value []byte) {
	b.init()
	b.data = append(b.data, opPut)
	b.data = binary.AppendUvarint(b.data, uint64(len(key)))
	k0 := len(b.data)
	b.data = append(b.data, key...)
	k1 := len(b.data)
	b.data = binary.AppendUvarint(b.data, uint64(len(value)))
	v0 := len(b.data)
	b.data = append(b.data, value...)
	b.ops = append(b.ops, batchOp{k0: k0, k1: k1, v0: v0, v1: len(b.data)})
	b.setCount()
}

// Delete adds a deletion of key. The Batch copies it.
func (b *Batch) Delete(key []byte) {
	b.init()
	b.data = append(b.data, opDelete)
	b.data = binary.AppendUvarint(b.data, uint64(len(key)))
	k0 := len(b.data)
	b.data = append(b.data, key...)
	b.ops = append(b.ops, batchOp{del: true, k0: k0, k1: len(b.data)})
	b.setCount()
}

// Len returns the number of writes in the batch.
func (b *Batch) Len() int { return len(b.ops) }

// Reset empties the batch for reuse.
func (b *Batch) Reset() {
	b.data = b.data[:0]
	b.ops = b.ops[:0]
}

func (b *Batch) init() {
	if len(b.data) == 0 {
		b.data = append(b.data, 0, 0, 0, 0)
	}
}

func (b *Batch) setCount() { binary.LittleEndian.PutUint32(b.data, uint32(len(b.ops))) }

func (b *Batch) key(op batchOp) []byte   { return b.data[op.k0:op.k1] }
func (b *Batch) value(op batchOp) []byte { return b.data[op.v0:op.v1] }

// check validates every key and value against the limits.
func (b *Batch) check(o *Options) error {
	for _, op := range b.ops {
		if err := checkKey(b.key(op), o); err != nil {
			return err
		}
		if !op.del && op.v1-op.v0 > o.MaxValueSize {
			return fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, op.v1-op.v0, o.MaxValueSize)
		}
	}
	return nil
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

var errBadBatch = errors.New("engine: malformed batch record")

// decodeBatch parses a log payload into a Batch that aliases payload.
func decodeBatch(payload []byte) (*Batch, error) {
	if len(payload) < 4 {
		return nil, errBadBatch
	}
	n := binary.LittleEndian.Uint32(payload)
	if n == 0 || uint64(n) > uint64(len(payload)) {
		return nil, errBadBatch
	}
	b := &Batch{data: payload, ops: make([]batchOp, 0, n)}
	p := 4
	field := func() (int, int, bool) {
		l, un := binary.Uvarint(payload[p:])
		if un <= 0 || l > uint64(len(payload)-p-un) {
			return 0, 0, false
		}
		s := p + un
		p = s + int(l)
		return s, p, true
	}
	for range n {
		if p >= len(payload) {
			return nil, errBadBatch
		}
		kind := payload[p]
		p++
		var op batchOp
		var ok bool
		if op.k0, op.k1, ok = field(); !ok || op.k0 == op.k1 {
			return nil, errBadBatch
		}
		switch kind {
		case opPut:
			if op.v0, op.v1, ok = field(); !ok {
				return nil, errBadBatch
			}
		case opDelete:
			op.del = true
		default:
			return nil, errBadBatch
		}
		b.ops = append(b.ops, op)
	}
	if p != len(payload) {
		return nil, errBadBatch
	}
	return b, nil
}
