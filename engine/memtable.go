package engine

import (
	"unsafe"

	"github.com/tidwall/btree"
)

// memEntry is the newest committed state of a key not yet checkpointed: a
// value or a deletion.
type memEntry struct {
	value []byte
	del   bool
}

// memEntryOverhead approximates the memory a memtable entry costs beyond its
// key and value.
const memEntryOverhead = 64

// memtable holds committed writes in key order until a checkpoint moves them
// into the state file. Not safe for concurrent use: DB.smu guards it.
type memtable struct {
	m     btree.Map[string, memEntry]
	bytes int64
}

func (t *memtable) set(key []byte, e memEntry) {
	k := string(key)
	old, replaced := t.m.Set(k, e)
	if replaced {
		t.bytes -= int64(len(old.value))
	} else {
		t.bytes += int64(len(k)) + memEntryOverhead
	}
	t.bytes += int64(len(e.value))
}

func (t *memtable) get(key []byte) (memEntry, bool) {
	return t.m.Get(unsafeString(key))
}

// unsafeString views b as a string without copying, for lookups that do not
// keep the string.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
