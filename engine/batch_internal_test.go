package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"path/filepath"
	"testing"

	"github.com/kvdstore/kvd/wal"
)

// legacyBatch encodes ops in the format that builds before the versioned
// encoding wrote (count uint32 LE, then kind 0 put / 1 delete, uvarint key
// length, key, put only: uvarint value length, value): the encoder of
// those builds, kept to make the records that old logs hold.
func legacyBatch(ops ...[2]string) []byte {
	data := []byte{0, 0, 0, 0}
	for _, op := range ops {
		k, v := op[0], op[1]
		if v == "<del>" {
			data = append(data, 1)
			data = binary.AppendUvarint(data, uint64(len(k)))
			data = append(data, k...)
			continue
		}
		data = append(data, 0)
		data = binary.AppendUvarint(data, uint64(len(k)))
		data = append(data, k...)
		data = binary.AppendUvarint(data, uint64(len(v)))
		data = append(data, v...)
	}
	binary.LittleEndian.PutUint32(data, uint32(len(ops)))
	return data
}

// sameOps reports whether a and b hold the same operations.
func sameOps(a, b *Batch) bool {
	if len(a.ops) != len(b.ops) {
		return false
	}
	for i, x := range a.ops {
		y := b.ops[i]
		if x.kind != y.kind || x.cond != y.cond || x.delta != y.delta || x.ifRev != y.ifRev || x.casDel != y.casDel ||
			math.Float64bits(x.fdelta) != math.Float64bits(y.fdelta) ||
			x.econd != y.econd || x.exp != y.exp ||
			!bytes.Equal(a.key(x), b.key(y)) || !bytes.Equal(a.value(x), b.value(y)) {
			return false
		}
	}
	return true
}

// reencode builds a batch of the same operations as b through the public
// methods.
func reencode(b *Batch) *Batch {
	var again Batch
	for _, op := range b.ops {
		switch op.kind {
		case opPut:
			again.Put(b.key(op), b.value(op))
		case opDelete:
			again.Delete(b.key(op))
		case opPutIf:
			again.PutIf(b.key(op), b.value(op), op.cond)
		case opIncrBy:
			again.IncrBy(b.key(op), op.delta)
		case opCAS:
			if op.casDel {
				again.CompareAndDelete(b.key(op), op.ifRev)
			} else {
				again.CompareAndPut(b.key(op), b.value(op), op.ifRev)
			}
		case opGet:
			again.Get(b.key(op))
		case opReq:
			again.Require(b.key(op), op.ifRev)
		case opAppend:
			again.Append(b.key(op), b.value(op))
		case opIncrFloat:
			again.IncrByFloat(b.key(op), op.fdelta)
		case opGetDelete:
			again.GetDelete(b.key(op))
		case opDeleteAll:
			again.DeleteAll()
		case opPutEx:
			again.PutExpiresAt(b.key(op), b.value(op), op.cond, op.exp)
		case opExpire:
			again.Expire(b.key(op), op.exp, op.econd)
		case opPersist:
			again.Persist(b.key(op), op.econd)
		}
	}
	if b.at != 0 {
		again.SetTimestamp(b.at)
	}
	return &again
}

// FuzzDecodeBatch: arbitrary bytes never panic the decoder, and whatever
// decodes (either format) re-encodes to a batch that decodes to the same
// operations.
func FuzzDecodeBatch(f *testing.F) {
	var b Batch
	b.Put([]byte("k"), []byte("v"))
	b.Delete([]byte("gone"))
	b.PutIf([]byte("nx"), []byte("1"), IfAbsent|ReturnOld)
	b.IncrBy([]byte("n"), -7)
	b.CompareAndPut([]byte("c"), []byte("v"), 1<<40)
	b.CompareAndDelete([]byte("c"), 3)
	b.Get([]byte("g"))
	b.Require([]byte("r"), 1<<50)
	b.Require([]byte("r0"), 0)
	b.PutExpiresAt([]byte("x"), []byte("v"), KeepExpiry|IfPresent, 0)
	b.Expire([]byte("x"), 1_700_000_000_000, ExpireLT|ExpireReturnValue)
	b.Persist([]byte("x"), 0)
	b.SetTimestamp(1_700_000_000_000)
	f.Add(b.Bytes())
	f.Add(legacyBatch([2]string{"k", "v"}, [2]string{"d", "<del>"}))
	f.Add([]byte{1, 0, 0, 0, 0, 1, 'k', 0})
	f.Add([]byte{0, 0, 0, 0, 1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, payload []byte) {
		got, err := DecodeBatch(payload)
		if err != nil {
			if !errors.Is(err, ErrBadBatch) {
				t.Fatalf("decode %x: %v, not ErrBadBatch", payload, err)
			}
			return
		}
		if got.Len() == 0 {
			t.Fatalf("%x decoded to an empty batch", payload)
		}
		again := reencode(got)
		back, err := DecodeBatch(again.Bytes())
		if err != nil || !sameOps(got, back) || back.Timestamp() != got.Timestamp() {
			t.Fatalf("batch decoded from %x changed in a round trip (%v)", payload, err)
		}
	})
}

// FuzzBatchRoundTrip: decode(encode(x)) == x for batches built from
// arbitrary operations.
func FuzzBatchRoundTrip(f *testing.F) {
	f.Add([]byte("\x00ab\x01c\x02d\x03e"), int64(-1))
	f.Add([]byte{3, 0xff, 2, 0}, int64(1<<62))
	f.Fuzz(func(t *testing.T, prog []byte, delta int64) {
		var b Batch
		for i := 0; i+1 < len(prog); i += 2 {
			key := []byte{prog[i+1], byte(i)}
			value := prog[i:] // any length, sometimes empty
			switch prog[i] % 16 {
			case 0:
				b.Put(key, value)
			case 1:
				b.Delete(key)
			case 2:
				b.PutIf(key, value, PutCond(prog[i]>>3)&(IfAbsent|ReturnOld))
			case 3:
				b.PutIf(key, nil, IfPresent)
			case 4:
				b.IncrBy(key, delta^int64(i))
			case 5:
				b.CompareAndPut(key, value, uint64(delta)+uint64(i))
			case 6:
				b.CompareAndDelete(key, uint64(delta)>>uint(i%64))
			case 7:
				b.Get(key)
			case 8:
				b.Require(key, uint64(delta)<<uint(i%64))
			case 9:
				b.Append(key, value)
			case 10:
				b.IncrByFloat(key, math.Float64frombits(uint64(delta)))
			case 11:
				b.GetDelete(key)
			case 12:
				b.DeleteAll()
			case 13:
				b.PutExpiresAt(key, value, PutCond(prog[i]>>4)&(IfAbsent|ReturnOld), delta&(1<<62-1))
			case 14:
				b.Expire(key, delta, ExpireCond(prog[i]>>4)&(ExpireXX|ExpireGT|ExpireReturnValue))
			case 15:
				b.Persist(key, ExpireCond(prog[i]>>4)&ExpireReturnValue)
			}
		}
		if b.Len() == 0 {
			if b.Bytes() != nil {
				t.Fatalf("empty batch encodes to %x", b.Bytes())
			}
			return
		}
		back, err := DecodeBatch(b.Bytes())
		if err != nil || !sameOps(&b, back) {
			t.Fatalf("batch of %x changed in a round trip (%v)", prog, err)
		}
	})
}

func TestBatchRoundTrip(t *testing.T) {
	var b Batch
	b.Put([]byte("a"), []byte("1"))
	b.Put([]byte("b"), nil)
	b.Delete([]byte("c"))
	b.PutIf([]byte("d"), []byte("2"), IfPresent|ReturnOld)
	b.IncrBy([]byte("e"), -3)
	b.CompareAndPut([]byte("f"), []byte("3"), 300)
	b.CompareAndDelete([]byte("g"), 0)
	b.Get([]byte("h"))
	b.Require([]byte("i"), 12345)
	got, err := DecodeBatch(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if got.Len() != 9 || got.ops[7].kind != opGet || string(got.key(got.ops[7])) != "h" ||
		got.ops[8].kind != opReq || got.ops[8].ifRev != 12345 || string(got.key(got.ops[8])) != "i" || string(got.key(got.ops[0])) != "a" || string(got.value(got.ops[0])) != "1" ||
		len(got.value(got.ops[1])) != 0 || got.ops[2].kind != opDelete || string(got.key(got.ops[2])) != "c" ||
		got.ops[3].cond != IfPresent|ReturnOld || string(got.value(got.ops[3])) != "2" ||
		got.ops[4].kind != opIncrBy || got.ops[4].delta != -3 ||
		got.ops[5].kind != opCAS || got.ops[5].ifRev != 300 || got.ops[5].casDel || string(got.value(got.ops[5])) != "3" ||
		got.ops[6].kind != opCAS || got.ops[6].ifRev != 0 || !got.ops[6].casDel || string(got.key(got.ops[6])) != "g" {
		t.Fatalf("decoded %+v", got.ops)
	}
	if !bytes.Equal(b.Bytes()[:headerLen], []byte{0, 0, 0, 0, batchVersion, 0, 0, 0, 0, 0, 0, 0, 0}) {
		t.Fatalf("header %x", b.Bytes()[:headerLen])
	}
}

func TestDecodeRefuses(t *testing.T) {
	var nxxx Batch
	nxxx.PutIf([]byte("k"), nil, IfAbsent|IfPresent)
	for name, p := range map[string][]byte{
		"header only":     {0, 0, 0, 0, batchVersionV1},
		"unknown version": {0, 0, 0, 0, 3, opDelete, 1, 'k'},
		"unknown kind":    {0, 0, 0, 0, batchVersionV1, 0xff, 1, 'k'},
		"require trunc":   {0, 0, 0, 0, batchVersionV1, opReq, 1, 'k', 0x80},
		"cas flags":       {0, 0, 0, 0, batchVersionV1, opCAS, 1, 'k', 2, 0},
		"cas truncated":   {0, 0, 0, 0, batchVersionV1, opCAS, 1, 'k', 0, 0x80},
		"float truncated": {0, 0, 0, 0, batchVersionV1, opIncrFloat, 1, 'k', 0, 0, 0, 0, 0, 0, 0},
		"empty key":       {0, 0, 0, 0, batchVersionV1, opDelete, 0},
		"truncated":       {0, 0, 0, 0, batchVersionV1, opPut, 1, 'k', 2, 'v'},
		"v2 header only":  {0, 0, 0, 0, batchVersion, 0, 0, 0, 0, 0, 0, 0, 1},
		"v2 short header": {0, 0, 0, 0, batchVersion, 0, 0, 0, opDelete, 1, 'k'},
		"put-ex in v1":    {0, 0, 0, 0, batchVersionV1, opPutEx, 1, 'k', 0, 0, 0},
		"put-ex keep+exp": {0, 0, 0, 0, batchVersion, 0, 0, 0, 0, 0, 0, 0, 0, opPutEx, 1, 'k', byte(KeepExpiry), 2, 0},
		"put-ex negative": {0, 0, 0, 0, batchVersion, 0, 0, 0, 0, 0, 0, 0, 0, opPutEx, 1, 'k', 0, 1, 0},
		"expire NX GT":    {0, 0, 0, 0, batchVersion, 0, 0, 0, 0, 0, 0, 0, 0, opExpire, 1, 'k', byte(ExpireNX | ExpireGT), 2},
		"expire GT LT":    {0, 0, 0, 0, batchVersion, 0, 0, 0, 0, 0, 0, 0, 0, opExpire, 1, 'k', byte(ExpireGT | ExpireLT), 2},
		"persist NX":      {0, 0, 0, 0, batchVersion, 0, 0, 0, 0, 0, 0, 0, 0, opPersist, 1, 'k', byte(ExpireNX)},
		"expire short":    {0, 0, 0, 0, batchVersion, 0, 0, 0, 0, 0, 0, 0, 0, opExpire, 1, 'k', 0},
		"NX and XX":       nxxx.Bytes(),
		"legacy extra":    append(legacyBatch([2]string{"k", "v"}), 0),
		"legacy kind":     {1, 0, 0, 0, opPutIf, 1, 'k', 0, 0},
	} {
		if _, err := DecodeBatch(p); !errors.Is(err, ErrBadBatch) {
			t.Errorf("%s: %x decoded (%v)", name, p, err)
		}
	}
}

func TestLegacyBatchDecodes(t *testing.T) {
	got, err := DecodeBatch(legacyBatch([2]string{"a", "1"}, [2]string{"b", ""}, [2]string{"c", "<del>"}))
	if err != nil {
		t.Fatal(err)
	}
	var want Batch
	want.Put([]byte("a"), []byte("1"))
	want.Put([]byte("b"), nil)
	want.Delete([]byte("c"))
	if !sameOps(got, &want) {
		t.Fatalf("decoded %+v", got.ops)
	}
}

// TestReplayLegacyLog opens a store whose log holds records in the format
// earlier builds wrote, and a new one after them, none checkpointed.
func TestReplayLegacyLog(t *testing.T) {
	dir := t.TempDir()
	l, err := wal.Open(filepath.Join(dir, "wal"), 1, wal.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var cur Batch
	cur.IncrBy([]byte("n"), 5)
	cur.PutIf([]byte("a"), []byte("no"), IfAbsent)
	for _, p := range [][]byte{
		legacyBatch([2]string{"a", "1"}, [2]string{"b", "2"}, [2]string{"n", "10"}),
		legacyBatch([2]string{"b", "<del>"}, [2]string{"c", "3"}),
		cur.Bytes(),
	} {
		rev, err := l.Enqueue(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.WaitDurable(rev); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if r := db.WrittenRevision(); r != 3 {
		t.Fatalf("committed revision %d after replay, want 3", r)
	}
	kvs, err := db.Scan(ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, kv := range kvs {
		got = append(got, string(kv.Key)+"="+string(kv.Value))
	}
	want := []string{"a=1", "c=3", "n=15"}
	if len(got) != len(want) {
		t.Fatalf("state %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("state %q, want %q", got, want)
		}
	}
}

// TestBatchAppend: AppendBatch copies another batch's ops, whatever its
// encoding, after the batch's own.
func TestBatchAppend(t *testing.T) {
	var a, b, want Batch
	a.Require([]byte("r"), 9)
	b.PutIf([]byte("p"), []byte("v"), IfAbsent)
	b.Get([]byte("g"))
	legacy, err := DecodeBatch(legacyBatch([2]string{"k", "v"}, [2]string{"d", "<del>"}))
	if err != nil {
		t.Fatal(err)
	}
	a.AppendBatch(&b)
	a.AppendBatch(legacy)
	a.AppendBatch(&Batch{})
	want.Require([]byte("r"), 9)
	want.PutIf([]byte("p"), []byte("v"), IfAbsent)
	want.Get([]byte("g"))
	want.Put([]byte("k"), []byte("v"))
	want.Delete([]byte("d"))
	back, err := DecodeBatch(a.Bytes())
	if err != nil || !sameOps(back, &want) || !bytes.Equal(a.Bytes(), want.Bytes()) {
		t.Fatalf("appended batch decodes to %+v (%v)", back, err)
	}
}

func TestExpiryBatchRoundTrip(t *testing.T) {
	var b Batch
	b.PutExpiresAt([]byte("a"), []byte("1"), IfAbsent|ReturnOld, 1_700_000_000_123)
	b.PutExpiresAt([]byte("b"), []byte("2"), KeepExpiry, 0)
	b.Expire([]byte("c"), -5, ExpireXX|ExpireGT|ExpireReturnValue)
	b.Persist([]byte("d"), ExpireReturnValue)
	b.SetTimestamp(1_700_000_000_000)
	got, err := DecodeBatch(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if got.Timestamp() != 1_700_000_000_000 || !sameOps(got, &b) {
		t.Fatalf("decoded at %d: %+v", got.Timestamp(), got.ops)
	}
	o := got.ops
	if o[0].kind != opPutEx || o[0].exp != 1_700_000_000_123 || o[0].cond != IfAbsent|ReturnOld || string(got.value(o[0])) != "1" ||
		o[1].cond != KeepExpiry || o[1].exp != 0 ||
		o[2].kind != opExpire || o[2].exp != -5 || o[2].econd != ExpireXX|ExpireGT|ExpireReturnValue ||
		o[3].kind != opPersist || o[3].econd != ExpireReturnValue {
		t.Fatalf("decoded %+v", o)
	}
	b.Reset()
	if b.Timestamp() != 0 {
		t.Fatalf("timestamp %d after Reset", b.Timestamp())
	}
}
