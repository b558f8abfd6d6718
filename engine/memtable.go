package engine

import (
	"slices"
	"strings"
	"sync"

	"github.com/tidwall/btree"
)

// memEntry is the newest committed state of a key not yet checkpointed: a
// value with its revisions, or a deletion. Lookups return one for a value
// of the state file too.
//
// A put does not read the state file to learn whether it creates its key:
// a put of a key that the memtables do not hold sets inherit, and create to
// its own revision. Whoever resolves the entry (a lookup, a scan, the
// checkpoint) then takes the create revision of the key's entry below it
// (in the frozen memtable, then in the state file) if the key is live
// there, and create otherwise. A later put of the key copies create and
// inherit; a put after a deletion in the memtables creates the key anew.
//
// A key with an expiry has expires, its absolute expiry time in Unix
// milliseconds (0: none). at is the timestamp of the batch that wrote the
// entry (0 for batches that carry none): an entry below that had expired
// by then was not live for the write, which therefore created the key anew.
type memEntry struct {
	value       []byte
	create, mod uint64 // revisions that created and last wrote the key
	expires     int64  // expiry time, Unix ms; 0: none
	at          int64  // timestamp of the writing batch, Unix ms; 0: none
	inherit     bool   // create is the entry's below, if live, instead
	del         bool
}

// expiredAt reports whether e holds a value that has expired at time now
// (Unix ms). A time of 0, that of batches that carry none, sees no key
// expired.
func (e memEntry) expiredAt(now int64) bool {
	return e.expires != 0 && now != 0 && e.expires <= now
}

// inheritsFrom reports whether e, with inherit set, takes the create
// revision of below, the key's entry under it: if below was live when e
// was written.
func (e memEntry) inheritsFrom(below memEntry) bool {
	return !below.del && !below.expiredAt(e.at)
}

// memEntryOverhead approximates the memory a memtable entry costs beyond its
// key and value (map slot, list slot, tree slot, entry).
const memEntryOverhead = 112

// expiryIndexOverhead approximates the memory an entry of a memtable's
// expiry index costs beyond its key (string header, tree slot).
const expiryIndexOverhead = 32

// memtable holds committed writes until a checkpoint moves them into the
// state file. A hash map serves point reads and overwrites. Key order, which
// only scans and checkpoints need, is built lazily: a new key is appended to
// a list, and ordered sorts that list into a B-tree of the same entries. A
// write therefore costs one hash lookup, and the ordering is paid for once
// per key, in sorted runs, by whoever first needs it (usually the
// checkpointer, off the write path).
//
// Not safe for concurrent writes: DB.smu guards set (held exclusively) and
// get (held shared). ordered may run concurrently with get and with itself,
// never with set: scans call it under the shared lock, and the checkpointer
// calls it on the frozen memtable, which is no longer written.
type memtable struct {
	byKey map[string]*memEntry
	bytes int64
	// logBytes is the size of the log records applied to the memtable: what
	// Open replays if the process stops before they are checkpointed.
	logBytes int64

	omu      sync.Mutex // serializes ordered
	unsorted []keyed    // entries of byKey not yet in tree
	slab     []memEntry // room for the next entries (insert)
	tree     btree.Map[string, *memEntry]

	// expiring indexes the entries set with an expiry by expiryKey (expiry
	// time, then key), for the sweep. It may hold entries since
	// overwritten: the sweep checks each against the key's entry and
	// drops it. set adds to it (DB.smu held exclusively); the sweep, the
	// only other user, drops from it under DB.smu shared (expiry.go).
	expiring btree.Set[string]
}

// keyed is an entry with its key, as the unsorted list holds it.
type keyed struct {
	key string
	e   *memEntry
}

func newMemtable() *memtable {
	return &memtable{byKey: make(map[string]*memEntry)}
}

func (t *memtable) set(key []byte, e memEntry) {
	if old, ok := t.byKey[string(key)]; ok {
		t.replace(key, old, e)
		return
	}
	t.insert(key, e)
}

// replace sets the entry old, key's in t, to e.
func (t *memtable) replace(key []byte, old *memEntry, e memEntry) {
	t.indexExpiry(key, e)
	t.bytes += int64(len(e.value)) - int64(len(old.value))
	*old = e
}

// insert adds key, which t does not have, with e.
func (t *memtable) insert(key []byte, e memEntry) {
	t.indexExpiry(key, e)
	k := string(key)
	// Entries are allocated a slab at a time: none is ever removed, all
	// go with the memtable.
	if len(t.slab) == 0 {
		t.slab = make([]memEntry, entrySlab)
	}
	p := &t.slab[0]
	t.slab = t.slab[1:]
	*p = e
	t.byKey[k] = p
	t.unsorted = append(t.unsorted, keyed{k, p})
	t.bytes += int64(len(k)) + int64(len(e.value)) + memEntryOverhead
}

// entrySlab is how many entries a memtable allocates at a time.
const entrySlab = 64

// indexExpiry adds e's expiry, if it has one, to the index.
func (t *memtable) indexExpiry(key []byte, e memEntry) {
	if e.expires != 0 && !e.del {
		// Counted as a key: an entry dropped by the sweep stays counted
		// until the memtable is checkpointed.
		if k := string(expiryKey(nil, e.expires, key)); !t.expiring.Contains(k) {
			t.expiring.Insert(k)
			t.bytes += int64(len(k)) + expiryIndexOverhead
		}
	}
}

func (t *memtable) get(key []byte) (memEntry, bool) {
	if p, ok := t.byKey[string(key)]; ok {
		return *p, true
	}
	return memEntry{}, false
}

// ordered returns every entry in key order. The tree it returns is not
// changed until the next set, so callers may iterate it concurrently.
func (t *memtable) ordered() *btree.Map[string, *memEntry] {
	t.omu.Lock()
	defer t.omu.Unlock()
	if len(t.unsorted) > 0 {
		slices.SortFunc(t.unsorted, func(a, b keyed) int { return strings.Compare(a.key, b.key) })
		for _, u := range t.unsorted {
			// Load appends when the key sorts after every key in the tree
			// (always so when the tree starts empty) and inserts otherwise.
			t.tree.Load(u.key, u.e)
		}
		clear(t.unsorted)
		t.unsorted = t.unsorted[:0]
	}
	return &t.tree
}

func (t *memtable) len() int { return len(t.byKey) }
