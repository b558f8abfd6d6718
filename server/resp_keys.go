package server

import (
	"errors"
	"math"
	"strconv"
	"time"

	"github.com/kvdstore/kvd/engine"
)

func cmdGet(c *respConn, args [][]byte) {
	if err := c.reads().GetEach(args[1:2], c.writeValue); err != nil {
		c.writeError(respError(err))
	}
}

// trailingDurability splits a final SYNC or ASYNC token off args (which
// start after the command name) when more than one argument is left.
func (c *respConn) trailingDurability(args [][]byte) ([][]byte, engine.Durability) {
	if len(args) > 1 {
		switch last := args[len(args)-1]; {
		case equalFold(last, "sync"):
			return args[:len(args)-1], engine.DurabilitySync
		case equalFold(last, "async"):
			return args[:len(args)-1], engine.DurabilityAsync
		}
	}
	return args, c.durability
}

// The write commands below check their arguments and fill c.batch with
// operations the store evaluates when it applies the batch; the executor
// submits it as it does a run of plain SETs and answers from its results
// (see respConn.submit and finishWrite). They return the batch's
// durability and how to answer, or false after replying with an error.

// cmdSet answers SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL]
// [SYNC|ASYNC]. Without an expiry option, or KEEPTTL, it clears the key's
// expiry, as in Redis.
func cmdSet(c *respConn, args [][]byte) (engine.Durability, writeReply, bool) {
	key, value := args[1], args[2]
	var cond engine.PutCond
	var at int64
	expiry := false // EX, PX, EXAT, PXAT or KEEPTTL seen
	d := c.durability
	opts := args[3:]
	for i := 0; i < len(opts); i++ {
		opt := opts[i]
		u, isExp := expiryOption(opt)
		switch {
		case equalFold(opt, "nx") && cond&engine.IfPresent == 0:
			cond |= engine.IfAbsent
		case equalFold(opt, "xx") && cond&engine.IfAbsent == 0:
			cond |= engine.IfPresent
		case equalFold(opt, "get"):
			cond |= engine.ReturnOld
		case equalFold(opt, "keepttl") && !expiry:
			cond |= engine.KeepExpiry
			expiry = true
		case isExp && !expiry && i+1 < len(opts):
			var ok bool
			if at, ok = c.setExpiry(opts[i+1], u, "set"); !ok {
				return 0, 0, false
			}
			expiry = true
			i++
		case equalFold(opt, "sync"):
			d = engine.DurabilitySync
		case equalFold(opt, "async"):
			d = engine.DurabilityAsync
		default:
			c.writeError(respErrSyntax)
			return 0, 0, false
		}
	}
	if msg := c.checkKey(key); msg != "" {
		c.writeError(msg)
		return 0, 0, false
	}
	if msg := c.checkValue(value); msg != "" {
		c.writeError(msg)
		return 0, 0, false
	}
	c.batch.Reset()
	reply := replyPutIf
	if cond&engine.ReturnOld != 0 {
		reply = replyOld
	}
	switch {
	case cond == 0 && !expiry:
		c.batch.Put(key, value)
		return d, replyOK, true
	case expiry:
		c.batch.PutExpiresAt(key, value, cond, at)
	default:
		c.batch.PutIf(key, value, cond)
	}
	if cond&(engine.IfAbsent|engine.IfPresent|engine.ReturnOld) == 0 {
		reply = replyOK
	}
	return d, reply, true
}

// cmdDel answers DEL key [key ...] [SYNC|ASYNC] with the number of keys
// that existed, deleting them in one atomic batch. A key named twice counts
// once, as in Redis: its second delete finds nothing.
func cmdDel(c *respConn, args [][]byte) (engine.Durability, writeReply, bool) {
	keys, d := c.trailingDurability(args[1:])
	for _, k := range keys {
		if msg := c.checkKey(k); msg != "" {
			c.writeError(msg)
			return 0, 0, false
		}
	}
	c.batch.Reset()
	for _, k := range keys {
		c.batch.Delete(k)
	}
	return d, replyCount, true
}

// cmdExists answers EXISTS key [key ...]; a key named twice counts twice.
// The keys are looked up in one consistent state, as MGET's.
func cmdExists(c *respConn, args [][]byte) {
	var n int64
	err := c.reads().GetEach(args[1:], func(_ int, _ []byte, found bool) {
		if found {
			n++
		}
	})
	if err != nil {
		c.writeError(respError(err))
		return
	}
	c.writeInt(n)
}

// cmdMGet answers MGET key [key ...] from one consistent state: it never
// shows part of an MSET or of any other atomic batch.
func cmdMGet(c *respConn, args [][]byte) {
	mark := len(c.out)
	c.writeArray(len(args) - 1)
	if err := c.reads().GetEach(args[1:], c.writeValue); err != nil {
		c.out = c.out[:mark]
		c.writeError(respError(err))
	}
}

// cmdMSet answers MSET key value [key value ...] [SYNC|ASYNC], committing
// every pair as one atomic batch.
func cmdMSet(c *respConn, args [][]byte) (engine.Durability, writeReply, bool) {
	d, ok := c.msetPairs(args, "mset")
	return d, replyOK, ok
}

// msetPairs checks the pairs of an MSET or MSETNX (name) and fills c.batch
// with a put of each.
func (c *respConn) msetPairs(args [][]byte, name string) (engine.Durability, bool) {
	pairs := args[1:]
	d := c.durability
	if len(pairs)%2 == 1 {
		pairs, d = c.trailingDurability(pairs)
		if len(pairs)%2 == 1 {
			c.writeError("ERR wrong number of arguments for '" + name + "' command")
			return 0, false
		}
	}
	for i := 0; i < len(pairs); i += 2 {
		if msg := c.checkKey(pairs[i]); msg != "" {
			c.writeError(msg)
			return 0, false
		}
		if msg := c.checkValue(pairs[i+1]); msg != "" {
			c.writeError(msg)
			return 0, false
		}
	}
	c.batch.Reset()
	for i := 0; i < len(pairs); i += 2 {
		c.batch.Put(pairs[i], pairs[i+1])
	}
	return d, true
}

// cmdIncr answers INCR, DECR, INCRBY and DECRBY: an atomic read-modify-write
// of a base-10 64-bit integer, as in Redis. The store adds the increment
// when it applies the batch; a value that is not an integer, or a sum that
// overflows, is the operation's error and changes nothing.
func cmdIncr(c *respConn, args [][]byte) (engine.Durability, writeReply, bool) {
	var delta int64 = 1
	if len(args) == 3 {
		n, ok := parseInt64(args[2])
		if !ok {
			c.writeError(respErrNotInteger)
			return 0, 0, false
		}
		delta = n
	}
	var buf [8]byte
	switch name := string(lower(buf[:0], args[0])); name {
	case "decr", "decrby":
		if delta == math.MinInt64 {
			c.writeError("ERR decrement would overflow")
			return 0, 0, false
		}
		delta = -delta
	}
	key := args[1]
	if msg := c.checkKey(key); msg != "" {
		c.writeError(msg)
		return 0, 0, false
	}
	c.batch.Reset()
	c.batch.IncrBy(key, delta)
	return c.durability, replyIncr, true
}

// cmdGetRev answers kvd's GETREV key with [value, mod_revision,
// create_revision], or null if the key holds no value.
func cmdGetRev(c *respConn, args [][]byte) {
	e, err := c.reads().GetEntry(args[1])
	switch {
	case errors.Is(err, engine.ErrNotFound):
		c.writeNull()
	case err != nil:
		c.writeError(respError(err))
	default:
		c.writeArray(3)
		c.writeBulk(e.Value)
		c.writeInt(int64(e.ModRevision))
		c.writeInt(int64(e.CreateRevision))
	}
}

// cmdCAS answers kvd's CAS key expected_rev value [SYNC|ASYNC], which sets
// key to value only if its mod revision is expected_rev (0: only if it
// holds no value) when the store applies the write, and kvd's CAD key
// expected_rev [SYNC|ASYNC], which deletes key on the same condition.
//
// Applied, they reply with the key's mod revision after the write: the
// write's revision for CAS, 0 for CAD (the key holds no value). A failed
// compare replies with the error "REVMISMATCH current N", N being the key's
// current mod revision (0 if it holds no value). An error rather than, say,
// a null or an array: a failed compare is then never mistaken for success
// by a client or script that does not check the reply's type, redis-cli
// shows it plainly, and its code (REVMISMATCH, not ERR) tells it apart from
// a bad request, as Redis's own conditional refusals (BUSYKEY) do; the
// reply to success stays one integer.
func cmdCAS(c *respConn, args [][]byte) (engine.Durability, writeReply, bool) {
	return c.compareAndSet(args, 4)
}

// cmdCAD answers CAD key expected_rev [SYNC|ASYNC]; see cmdCAS.
func cmdCAD(c *respConn, args [][]byte) (engine.Durability, writeReply, bool) {
	return c.compareAndSet(args, 3)
}

// compareAndSet fills c.batch with the CAS (n = 4 arguments before the
// durability) or CAD (n = 3) of args.
func (c *respConn) compareAndSet(args [][]byte, n int) (engine.Durability, writeReply, bool) {
	d := c.durability
	switch {
	case len(args) == n+1 && equalFold(args[n], "sync"):
		d = engine.DurabilitySync
	case len(args) == n+1 && equalFold(args[n], "async"):
		d = engine.DurabilityAsync
	case len(args) != n:
		c.writeError(respErrSyntax)
		return 0, 0, false
	}
	key := args[1]
	if msg := c.checkKey(key); msg != "" {
		c.writeError(msg)
		return 0, 0, false
	}
	rev, ok := parseUint64(args[2])
	if !ok {
		c.writeError(respErrBadRevision)
		return 0, 0, false
	}
	if n == 4 {
		if msg := c.checkValue(args[3]); msg != "" {
			c.writeError(msg)
			return 0, 0, false
		}
	}
	c.batch.Reset()
	if n == 4 {
		c.batch.CompareAndPut(key, args[3], rev)
	} else {
		c.batch.CompareAndDelete(key, rev)
	}
	return d, replyCAS, true
}

// parseUint64 parses a base-10 unsigned integer without sign, spaces or
// leading zeros.
func parseUint64(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 || (len(b) > 1 && b[0] == '0') || b[0] == '+' {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b), 10, 64)
	return n, err == nil
}

// parseInt64 parses a Redis integer: base 10, optional '-', no '+', no
// spaces, no leading zeros.
func parseInt64(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 20 || b[0] == '+' || (len(b) > 1 && b[0] == '0') ||
		(len(b) > 2 && b[0] == '-' && b[1] == '0') || string(b) == "-0" {
		return 0, false
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	return n, err == nil
}

// cmdWaitAOF answers WAITAOF numlocal numreplicas timeout with
// [local, replicas]. local is 1 once every write acknowledged on this server
// before the call is durable (fsynced); kvd has no replicas, so replicas is
// always 0 and kvd does not wait for them.
func cmdWaitAOF(c *respConn, args [][]byte) {
	numLocal, ok1 := parseInt64(args[1])
	numReplicas, ok2 := parseInt64(args[2])
	timeout, ok3 := parseInt64(args[3])
	switch {
	case !ok1 || !ok2 || !ok3:
		c.writeError(respErrNotInteger)
		return
	case timeout < 0:
		c.writeError("ERR timeout is negative")
		return
	case numLocal < 0 || numReplicas < 0:
		c.writeError("ERR numlocal and numreplicas must not be negative")
		return
	}
	if n := c.s.node(); n != nil {
		local, replicas, err := c.waitAOFCluster(n, numLocal, numReplicas, time.Duration(timeout)*time.Millisecond)
		if err != nil {
			c.writeError(respError(err))
			return
		}
		c.writeArray(2)
		c.writeInt(local)
		c.writeInt(replicas)
		return
	}
	local := int64(0)
	if numLocal == 0 {
		if c.s.store.DurableRevision() >= c.lastRev {
			local = 1
		}
	} else {
		synced, err := c.s.syncWithin(time.Duration(timeout) * time.Millisecond)
		if err != nil {
			c.writeError(respError(err))
			return
		}
		if synced || c.s.store.DurableRevision() >= c.lastRev {
			local = 1
		}
	}
	c.writeArray(2)
	c.writeInt(local)
	c.writeInt(0)
}

// syncWithin runs the store's durability barrier, waiting at most timeout
// (0: no limit). It reports whether the barrier completed.
func (s *Server) syncWithin(timeout time.Duration) (bool, error) {
	start := time.Now()
	defer func() { s.metrics.syncSeconds.Observe(time.Since(start).Seconds()) }()
	if timeout == 0 {
		return true, s.store.Sync()
	}
	done := make(chan error, 1)
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		done <- s.store.Sync()
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-done:
		return true, err
	case <-t.C:
		return false, nil
	}
}
