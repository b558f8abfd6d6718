package server

import (
	"bytes"
	"container/list"
	"math/rand/v2"
	"strconv"
	"sync"

	"github.com/kvdstore/kvd/engine"
)

// SCAN cursors. A Redis cursor is an integer, but kvd's keys are ordered, so
// a scan resumes from the last key it returned. The server maps each cursor
// it hands out, a random 63-bit number, to that key in a table shared by all
// connections (clients with connection pools may continue a scan on another
// connection). Each cursor belongs to the connection that opened it, and
// each connection holds at most maxConnCursors cursors and maxConnCursorBytes
// of keys: past that its own least recently used cursor goes. The whole table
// is bounded too (maxCursors, maxCursorBytes); past that the least recently
// used cursor of the connection holding the most goes. So a client that
// opens scans without end evicts only its own, never those of a client with
// fewer. A connection's cursors go when it closes. An evicted or unknown
// cursor gets an error, never a silently restarted scan.
const (
	maxCursors         = 10000
	maxCursorBytes     = 16 << 20
	maxConnCursors     = 100
	maxConnCursorBytes = 1 << 20
	defaultCount       = 10
	maxCount           = 1000
)

type cursorTable struct {
	mu                 sync.Mutex
	byID               map[uint64]*list.Element
	owners             map[int64]*cursorOwner
	n, bytes           int
	maxN, maxBytes     int
	ownerN, ownerBytes int
}

// cursorOwner is the cursors of one connection.
type cursorOwner struct {
	lru   list.List // of *cursorEntry, most recent first
	bytes int
}

type cursorEntry struct {
	id    uint64
	owner int64
	key   []byte
}

func newCursorTable(maxN, maxBytes, ownerN, ownerBytes int) *cursorTable {
	return &cursorTable{
		byID: make(map[uint64]*list.Element), owners: make(map[int64]*cursorOwner),
		maxN: maxN, maxBytes: maxBytes, ownerN: ownerN, ownerBytes: ownerBytes,
	}
}

// put stores key as a cursor of connection owner and returns the cursor.
func (t *cursorTable) put(owner int64, key []byte) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	var id uint64
	for id == 0 || t.byID[id] != nil {
		id = rand.Uint64() >> 1
	}
	o := t.owners[owner]
	if o == nil {
		o = &cursorOwner{}
		o.lru.Init()
		t.owners[owner] = o
	}
	t.byID[id] = o.lru.PushFront(&cursorEntry{id: id, owner: owner, key: bytes.Clone(key)})
	o.bytes += len(key)
	t.n++
	t.bytes += len(key)
	for o.lru.Len() > t.ownerN || o.bytes > t.ownerBytes {
		t.evictOldest(o)
	}
	for t.n > t.maxN || t.bytes > t.maxBytes {
		t.evictOldest(t.biggest())
	}
	return id
}

// biggest returns the owner holding the most cursors (by count, then
// bytes). Called over the table's bounds only.
func (t *cursorTable) biggest() *cursorOwner {
	var big *cursorOwner
	for _, o := range t.owners {
		if big == nil || o.lru.Len() > big.lru.Len() || (o.lru.Len() == big.lru.Len() && o.bytes > big.bytes) {
			big = o
		}
	}
	return big
}

func (t *cursorTable) evictOldest(o *cursorOwner) {
	e := o.lru.Back()
	ce := e.Value.(*cursorEntry)
	o.lru.Remove(e)
	o.bytes -= len(ce.key)
	delete(t.byID, ce.id)
	t.n--
	t.bytes -= len(ce.key)
	if o.lru.Len() == 0 {
		delete(t.owners, ce.owner)
	}
}

// get returns the key of cursor id.
func (t *cursorTable) get(id uint64) ([]byte, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.byID[id]
	if !ok {
		return nil, false
	}
	ce := e.Value.(*cursorEntry)
	t.owners[ce.owner].lru.MoveToFront(e)
	return ce.key, true
}

// drop removes the cursors of connection owner.
func (t *cursorTable) drop(owner int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	o := t.owners[owner]
	for o != nil && o.lru.Len() > 0 {
		t.evictOldest(o)
	}
}

// cmdScan answers SCAN cursor [MATCH pattern] [COUNT count] [TYPE type].
// Keys come in ascending order; COUNT keys are examined per call (at most
// 1000) and MATCH filters them, so a call may return fewer keys than COUNT
// and still have a non-zero cursor, as in Redis. Cursor 0 ends the scan.
func cmdScan(c *respConn, args [][]byte) {
	id, err := strconv.ParseUint(string(args[1]), 10, 64)
	if err != nil {
		c.writeError("ERR invalid cursor")
		return
	}
	var pattern []byte
	count := defaultCount
	onlyStrings := true
	for i := 2; i < len(args); i += 2 {
		if i+1 >= len(args) {
			c.writeError(respErrSyntax)
			return
		}
		switch opt, val := args[i], args[i+1]; {
		case equalFold(opt, "match"):
			pattern = val
		case equalFold(opt, "count"):
			n, ok := parseInt64(val)
			if !ok || n < 1 {
				c.writeError(respErrSyntax)
				return
			}
			count = int(min(n, maxCount))
		case equalFold(opt, "type"):
			onlyStrings = equalFold(val, "string")
		default:
			c.writeError(respErrSyntax)
			return
		}
	}
	var after []byte
	if id != 0 {
		key, ok := c.s.cursors.get(id)
		if !ok {
			c.writeError("ERR invalid or expired cursor")
			return
		}
		after = key
	}
	if !onlyStrings {
		// kvd stores only strings.
		c.writeArray(2)
		c.writeBulkString("0")
		c.writeArray(0)
		return
	}
	opts := engine.ScanOptions{Prefix: literalPrefix(pattern), Limit: count, KeysOnly: true}
	if after != nil {
		// The smallest key after the last one returned.
		opts.Start = append(bytes.Clone(after), 0)
	}
	if opts.Prefix != nil && bytes.Compare(opts.Start, opts.Prefix) < 0 {
		opts.Start = opts.Prefix
	}
	kvs, err := c.reads().Scan(opts)
	if err != nil {
		c.writeError(respError(err))
		return
	}
	next := "0"
	if len(kvs) == count {
		next = strconv.FormatUint(c.s.cursors.put(c.id, kvs[len(kvs)-1].Key), 10)
	}
	keys := kvs[:0]
	for _, kv := range kvs {
		if (pattern == nil || globMatch(pattern, kv.Key)) && c.keyVisible(kv.Key) {
			keys = append(keys, kv)
		}
	}
	c.writeArray(2)
	c.writeBulkString(next)
	c.writeArray(len(keys))
	for _, kv := range keys {
		c.writeBulk(kv.Key)
	}
}

// literalPrefix returns the bytes every key matching the glob pattern starts
// with (nil if none).
func literalPrefix(pattern []byte) []byte {
	var p []byte
	for i := 0; i < len(pattern); i++ {
		switch ch := pattern[i]; ch {
		case '*', '?', '[':
			return p
		case '\\':
			if i+1 == len(pattern) {
				return p
			}
			i++
			p = append(p, pattern[i])
		default:
			p = append(p, ch)
		}
	}
	return p
}

// globMatch reports whether s matches the Redis glob pattern: '*' any run,
// '?' any byte, '[abc]', '[^a-z]' classes, '\' escapes the next byte. It
// backtracks only to the last '*', so it runs in O(len(pattern)*len(s)).
func globMatch(pattern, s []byte) bool {
	p, i := 0, 0
	starP, starI := -1, 0
	for i < len(s) {
		if p < len(pattern) {
			switch pattern[p] {
			case '*':
				starP, starI = p, i
				p++
				continue
			case '?':
				p++
				i++
				continue
			case '[':
				if ok, next := matchClass(pattern, p, s[i]); ok {
					p = next
					i++
					continue
				}
			case '\\':
				if p+1 < len(pattern) && pattern[p+1] == s[i] {
					p += 2
					i++
					continue
				}
				if p+1 == len(pattern) && s[i] == '\\' {
					p++
					i++
					continue
				}
			default:
				if pattern[p] == s[i] {
					p++
					i++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		starI++
		p, i = starP+1, starI
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// matchClass matches ch against the class starting at pattern[p] == '['. It
// returns whether it matched and the index after the class. An unterminated
// class runs to the end of the pattern, as in Redis.
func matchClass(pattern []byte, p int, ch byte) (bool, int) {
	p++
	negate := p < len(pattern) && pattern[p] == '^'
	if negate {
		p++
	}
	matched := false
	for p < len(pattern) && pattern[p] != ']' {
		switch {
		case pattern[p] == '\\' && p+1 < len(pattern):
			p++
			if pattern[p] == ch {
				matched = true
			}
			p++
		case p+2 < len(pattern) && pattern[p+1] == '-' && pattern[p+2] != ']':
			lo, hi := pattern[p], pattern[p+2]
			if lo > hi {
				lo, hi = hi, lo
			}
			if lo <= ch && ch <= hi {
				matched = true
			}
			p += 3
		default:
			if pattern[p] == ch {
				matched = true
			}
			p++
		}
	}
	if p < len(pattern) {
		p++ // ']'
	}
	return matched != negate, p
}
