package engine

import (
	"bytes"
	"testing"
)

func FuzzDecodeBatch(f *testing.F) {
	var b Batch
	b.Put([]byte("k"), []byte("v"))
	b.Delete([]byte("gone"))
	f.Add(b.data)
	f.Add([]byte{1, 0, 0, 0, 0, 1, 'k', 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, payload []byte) {
		got, err := decodeBatch(payload)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to the same bytes.
		var again Batch
		for _, op := range got.ops {
			if op.del {
				again.Delete(got.key(op))
			} else {
				again.Put(got.key(op), got.value(op))
			}
		}
		// decode(encode(x)) == x for what was decoded.
		back, err := decodeBatch(again.data)
		if err != nil || len(back.ops) != len(got.ops) {
			t.Fatalf("re-encoded batch of %x does not decode: %v", payload, err)
		}
		for i, op := range got.ops {
			bop := back.ops[i]
			if op.del != bop.del || !bytes.Equal(got.key(op), back.key(bop)) || !bytes.Equal(got.value(op), back.value(bop)) {
				t.Fatalf("op %d of %x changed in a round trip", i, payload)
			}
		}
	})
}

func TestBatchRoundTrip(t *testing.T) {
	var b Batch
	b.Put([]byte("a"), []byte("1"))
	b.Put([]byte("b"), nil)
	b.Delete([]byte("c"))
	got, err := decodeBatch(b.data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.ops) != 3 || string(got.key(got.ops[0])) != "a" || string(got.value(got.ops[0])) != "1" ||
		len(got.value(got.ops[1])) != 0 || !got.ops[2].del || string(got.key(got.ops[2])) != "c" {
		t.Fatalf("decoded %+v", got.ops)
	}
}
