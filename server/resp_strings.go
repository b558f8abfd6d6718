package server

import (
	"bytes"
	"strconv"

	"github.com/kvdstore/kvd/engine"
)

// String and keyspace commands beyond GET, SET and their kin. Writes fill
// c.batch with operations the store evaluates when it applies the batch,
// as cmdSet's do (see resp_keys.go).

// cmdSetNX answers SETNX key value: 1 if it set the key, 0 if the key
// already held a value.
func cmdSetNX(c *respConn, args [][]byte) (engine.Durability, writeReply, bool) {
	if !c.checkKeyValue(args[1], args[2]) {
		return 0, 0, false
	}
	c.batch.Reset()
	c.batch.PutIf(args[1], args[2], engine.IfAbsent)
	return c.durability, replyApplied, true
}

// cmdGetSet answers GETSET key value (deprecated in Redis for SET key value
// GET, which it is): the previous value, or null.
func cmdGetSet(c *respConn, args [][]byte) (engine.Durability, writeReply, bool) {
	if !c.checkKeyValue(args[1], args[2]) {
		return 0, 0, false
	}
	c.batch.Reset()
	c.batch.PutIf(args[1], args[2], engine.ReturnOld)
	return c.durability, replyOld, true
}

// cmdGetDel answers GETDEL key: the value it deleted, or null.
func cmdGetDel(c *respConn, args [][]byte) (engine.Durability, writeReply, bool) {
	if !c.checkKeyValue(args[1], nil) {
		return 0, 0, false
	}
	c.batch.Reset()
	c.batch.GetDelete(args[1])
	return c.durability, replyOld, true
}

// cmdAppend answers APPEND key value with the value's new length. A result
// over the value limit is refused when the store applies it, as Redis
// refuses one over proto-max-bulk-len.
func cmdAppend(c *respConn, args [][]byte) (engine.Durability, writeReply, bool) {
	if !c.checkKeyValue(args[1], args[2]) {
		return 0, 0, false
	}
	c.batch.Reset()
	c.batch.Append(args[1], args[2])
	return c.durability, replyIncr, true
}

// cmdIncrByFloat answers INCRBYFLOAT key increment with the new value as
// stored: fixed-point with at most 17 decimals and no trailing zeros, as
// Redis formats it. kvd computes in float64 where Redis uses long double,
// so results can differ in the last digits.
func cmdIncrByFloat(c *respConn, args [][]byte) (engine.Durability, writeReply, bool) {
	delta, ok := engine.ParseFloat(args[2])
	if !ok {
		c.writeError(respErrNotFloat)
		return 0, 0, false
	}
	if !c.checkKeyValue(args[1], nil) {
		return 0, 0, false
	}
	c.batch.Reset()
	c.batch.IncrByFloat(args[1], delta)
	return c.durability, replyFloat, true
}

// cmdFlushDB answers FLUSHDB and FLUSHALL [ASYNC|SYNC]: every key is
// deleted by one write, at one revision, acknowledged once durable
// whatever the commit mode. ASYNC and SYNC are accepted and change nothing:
// the deletion is applied at once either way (the store then holds a
// tombstone per key until its next checkpoint).
func cmdFlushDB(c *respConn, args [][]byte) (engine.Durability, writeReply, bool) {
	if len(args) > 2 || (len(args) == 2 && !equalFold(args[1], "async") && !equalFold(args[1], "sync")) {
		c.writeError(respErrSyntax)
		return 0, 0, false
	}
	c.batch.Reset()
	c.batch.DeleteAll()
	return engine.DurabilitySync, replyOK, true
}

// checkKeyValue replies with an error and returns false if key or value
// is over its limit (or key is empty).
func (c *respConn) checkKeyValue(key, value []byte) bool {
	msg := c.checkKey(key)
	if msg == "" {
		msg = c.checkValue(value)
	}
	if msg != "" {
		c.writeError(msg)
		return false
	}
	return true
}

// cmdStrlen answers STRLEN key: the value's length, 0 if it has none.
func cmdStrlen(c *respConn, args [][]byte) {
	var n int
	if err := c.reads().GetEach(args[1:2], func(_ int, v []byte, _ bool) { n = len(v) }); err != nil {
		c.writeError(respError(err))
		return
	}
	c.writeInt(int64(n))
}

// cmdType answers TYPE key: string, or none if the key holds no value.
func cmdType(c *respConn, args [][]byte) {
	var found bool
	if err := c.reads().GetEach(args[1:2], func(_ int, _ []byte, ok bool) { found = ok }); err != nil {
		c.writeError(respError(err))
		return
	}
	if found {
		c.writeStatus("string")
	} else {
		c.writeStatus("none")
	}
}

// memoryOverhead is what MEMORY USAGE adds to a key's and value's bytes: a
// rough cost of its memtable entry and state file record.
const memoryOverhead = 64

// cmdMemory answers MEMORY USAGE key [SAMPLES count] with an estimate of
// the bytes the key costs (its length, its value's and a fixed overhead),
// or null if it holds no value, and MEMORY HELP.
func cmdMemory(c *respConn, args [][]byte) {
	switch {
	case equalFold(args[1], "usage") && (len(args) == 3 || len(args) == 5):
		if len(args) == 5 {
			if _, ok := parseInt64(args[4]); !equalFold(args[3], "samples") || !ok {
				c.writeError(respErrSyntax)
				return
			}
		}
		n, found := 0, false
		if err := c.reads().GetEach(args[2:3], func(_ int, v []byte, ok bool) { n, found = len(v), ok }); err != nil {
			c.writeError(respError(err))
			return
		}
		if !found {
			c.writeNull()
			return
		}
		c.writeInt(int64(len(args[2]) + n + memoryOverhead))
	case equalFold(args[1], "help") && len(args) == 2:
		c.writeHelp("MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
			"USAGE <key> [SAMPLES <count>]",
			"    Return an estimate of the memory in bytes that <key> and its value use (SAMPLES is accepted and ignored).",
			"HELP",
			"    Print this help.")
	case equalFold(args[1], "usage"), equalFold(args[1], "help"):
		c.writeError("ERR wrong number of arguments for 'memory|" + string(lowerBytes(args[1])) + "' command")
	default:
		c.writeError("ERR unknown subcommand '" + printable(args[1], 64) + "'. Try MEMORY HELP.")
	}
}

// writeHelp writes a help reply: an array of status lines.
func (c *respConn) writeHelp(lines ...string) {
	c.writeArray(len(lines))
	for _, l := range lines {
		c.writeStatus(l)
	}
}

// maxKeysReply bounds the bytes of the keys one KEYS reply returns; over
// it, KEYS replies with an error and the client should use SCAN.
const maxKeysReply = 64 << 20

// keysChunk is how many keys KEYS reads from the store per scan, so that
// writes are not held back for long.
const keysChunk = 4096

// cmdKeys answers KEYS pattern with every key that matches the Redis glob
// pattern, in ascending order. It reads every key that starts with the
// pattern's literal prefix (every key for "*..."): O(n) in the number of keys, as
// in Redis, but in chunks, so that writes go on meanwhile; a key written
// during the call may or may not be listed. A reply over maxKeysReply
// bytes is refused.
func cmdKeys(c *respConn, args [][]byte) {
	pattern := args[1]
	var prefix []byte // the pattern's literal start
	if i := bytes.IndexAny(pattern, `*?[\`); i >= 0 {
		prefix = pattern[:i]
	} else {
		prefix = pattern
	}
	var keys [][]byte
	size := 0
	var after []byte
	for {
		kvs, err := c.reads().Scan(engine.ScanOptions{Start: after, Prefix: prefix, Limit: keysChunk, KeysOnly: true})
		if err != nil {
			c.writeError(respError(err))
			return
		}
		for _, kv := range kvs {
			if !globMatch(pattern, kv.Key) || !c.keyVisible(kv.Key) {
				continue
			}
			size += len(kv.Key)
			if size > maxKeysReply {
				c.writeError("ERR KEYS reply would exceed " + strconv.Itoa(maxKeysReply>>20) + " MiB; use SCAN")
				return
			}
			keys = append(keys, kv.Key)
		}
		if len(kvs) < keysChunk {
			break
		}
		after = append(kvs[len(kvs)-1].Key, 0)
	}
	c.writeArray(len(keys))
	for _, k := range keys {
		c.writeBulk(k)
	}
}
