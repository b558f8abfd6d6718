package engine

import "github.com/tidwall/btree"

// memEntry is the newest committed state of a key not yet checkpointed: a
// value or a deletion.
type memEntry struct {
	value []byte
	del   bool
}

// memEntryOverhead approximates the memory a memtable entry costs beyond its
// key and value (map slot, tree slot, entry).
const memEntryOverhead = 96

// memtable holds committed writes until a checkpoint moves them into the
// state file. A hash map serves point reads and overwrites; a B-tree of the
// same entries keeps key order for scans and checkpoints, and is only
// touched when a key is new. Not safe for concurrent use: DB.smu guards it.
type memtable struct {
	byKey map[string]*memEntry
	tree  btree.Map[string, *memEntry]
	bytes int64
}

func newMemtable() *memtable {
	return &memtable{byKey: make(map[string]*memEntry)}
}

func (t *memtable) set(key []byte, e memEntry) {
	if old, ok := t.byKey[string(key)]; ok {
		t.bytes += int64(len(e.value)) - int64(len(old.value))
		*old = e
		return
	}
	k := string(key)
	p := &memEntry{value: e.value, del: e.del}
	t.byKey[k] = p
	t.tree.Set(k, p)
	t.bytes += int64(len(k)) + int64(len(e.value)) + memEntryOverhead
}

func (t *memtable) get(key []byte) (memEntry, bool) {
	if p, ok := t.byKey[string(key)]; ok {
		return *p, true
	}
	return memEntry{}, false
}

func (t *memtable) len() int { return len(t.byKey) }
