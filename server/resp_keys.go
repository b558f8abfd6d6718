package server

import (
	"errors"
	"math"
	"strconv"
	"time"

	"github.com/kvdstore/kvd/engine"
)

func cmdGet(c *respConn, args [][]byte) {
	if err := c.s.store.GetEach(args[1:2], c.writeValue); err != nil {
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

// commit runs one store write, timing it and remembering its revision for
// CLIENT LASTREV and WAITAOF. write reports whether it wrote anything.
func (c *respConn) commit(d engine.Durability, write func(wo engine.WriteOptions) (uint64, bool, error)) error {
	start := time.Now()
	rev, wrote, err := write(writeOptions(d))
	c.s.observeCommit(d, start)
	c.noteWrite(rev, err, wrote)
	return err
}

// always adapts a write that always writes to commit.
func always(rev uint64, err error) (uint64, bool, error) { return rev, true, err }

// cmdSet answers SET key value [NX|XX] [GET] [KEEPTTL] [SYNC|ASYNC]. kvd
// has no expiry: EX, PX, EXAT and PXAT are refused.
func cmdSet(c *respConn, args [][]byte) {
	key, value := args[1], args[2]
	var nx, xx, get bool
	d := c.durability
	for _, opt := range args[3:] {
		switch {
		case equalFold(opt, "nx") && !xx:
			nx = true
		case equalFold(opt, "xx") && !nx:
			xx = true
		case equalFold(opt, "get"):
			get = true
		case equalFold(opt, "keepttl"):
		case equalFold(opt, "sync"):
			d = engine.DurabilitySync
		case equalFold(opt, "async"):
			d = engine.DurabilityAsync
		case equalFold(opt, "ex"), equalFold(opt, "px"), equalFold(opt, "exat"), equalFold(opt, "pxat"):
			c.writeError("ERR kvd does not support key expiry (EX, PX, EXAT, PXAT)")
			return
		default:
			c.writeError(respErrSyntax)
			return
		}
	}
	if msg := c.checkKey(key); msg != "" {
		c.writeError(msg)
		return
	}
	if msg := c.checkValue(value); msg != "" {
		c.writeError(msg)
		return
	}
	if !nx && !xx && !get {
		if err := c.commit(d, func(wo engine.WriteOptions) (uint64, bool, error) {
			return always(c.s.store.Put(key, value, wo))
		}); err != nil {
			c.writeError(respError(err))
			return
		}
		c.writeOK()
		return
	}
	var old []byte
	var existed, written bool
	err := c.commit(d, func(wo engine.WriteOptions) (uint64, bool, error) {
		rev, err := c.s.store.Update(wo, func(tx *engine.Txn) error {
			v, err := tx.Get(key)
			switch {
			case errors.Is(err, engine.ErrNotFound):
			case err != nil:
				return err
			default:
				old, existed = v, true
			}
			if (nx && existed) || (xx && !existed) {
				return nil
			}
			tx.Put(key, value)
			written = true
			return nil
		})
		return rev, written, err
	})
	switch {
	case err != nil:
		c.writeError(respError(err))
	case get:
		c.writeBulkOrNull(old, existed)
	case written:
		c.writeOK()
	default:
		c.writeNull()
	}
}

// cmdDel answers DEL key [key ...] [SYNC|ASYNC] with the number of keys
// that existed, deleting them in one atomic batch.
func cmdDel(c *respConn, args [][]byte) {
	keys, d := c.trailingDurability(args[1:])
	for _, k := range keys {
		if msg := c.checkKey(k); msg != "" {
			c.writeError(msg)
			return
		}
	}
	var n int64
	err := c.commit(d, func(wo engine.WriteOptions) (uint64, bool, error) {
		n = 0
		rev, err := c.s.store.Update(wo, func(tx *engine.Txn) error {
			for _, k := range keys {
				_, err := tx.Get(k)
				switch {
				case errors.Is(err, engine.ErrNotFound):
				case err != nil:
					return err
				default:
					tx.Delete(k)
					n++
				}
			}
			return nil
		})
		return rev, n > 0, err
	})
	if err != nil {
		c.writeError(respError(err))
		return
	}
	c.writeInt(n)
}

// cmdExists answers EXISTS key [key ...]; a key named twice counts twice.
// The keys are looked up in one consistent state, as MGET's.
func cmdExists(c *respConn, args [][]byte) {
	var n int64
	err := c.s.store.GetEach(args[1:], func(_ int, _ []byte, found bool) {
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
	if err := c.s.store.GetEach(args[1:], c.writeValue); err != nil {
		c.out = c.out[:mark]
		c.writeError(respError(err))
	}
}

// cmdMSet answers MSET key value [key value ...] [SYNC|ASYNC], committing
// every pair as one atomic batch.
func cmdMSet(c *respConn, args [][]byte) {
	pairs := args[1:]
	d := c.durability
	if len(pairs)%2 == 1 {
		pairs, d = c.trailingDurability(pairs)
		if len(pairs)%2 == 1 {
			c.writeError("ERR wrong number of arguments for 'mset' command")
			return
		}
	}
	var b engine.Batch
	for i := 0; i < len(pairs); i += 2 {
		if msg := c.checkKey(pairs[i]); msg != "" {
			c.writeError(msg)
			return
		}
		if msg := c.checkValue(pairs[i+1]); msg != "" {
			c.writeError(msg)
			return
		}
		b.Put(pairs[i], pairs[i+1])
	}
	if err := c.commit(d, func(wo engine.WriteOptions) (uint64, bool, error) {
		return always(c.s.store.Write(&b, wo))
	}); err != nil {
		c.writeError(respError(err))
		return
	}
	c.writeOK()
}

// cmdIncr answers INCR, DECR, INCRBY and DECRBY: an atomic read-modify-write
// of a base-10 64-bit integer, as in Redis.
func cmdIncr(c *respConn, args [][]byte) {
	var delta int64 = 1
	if len(args) == 3 {
		n, ok := parseInt64(args[2])
		if !ok {
			c.writeError(respErrNotInteger)
			return
		}
		delta = n
	}
	var buf [8]byte
	switch name := string(lower(buf[:0], args[0])); name {
	case "decr", "decrby":
		if delta == math.MinInt64 {
			c.writeError("ERR decrement would overflow")
			return
		}
		delta = -delta
	}
	key := args[1]
	if msg := c.checkKey(key); msg != "" {
		c.writeError(msg)
		return
	}
	var result int64
	err := c.commit(c.durability, func(wo engine.WriteOptions) (uint64, bool, error) {
		return always(c.s.store.Update(wo, func(tx *engine.Txn) error {
			var cur int64
			v, err := tx.Get(key)
			switch {
			case errors.Is(err, engine.ErrNotFound):
			case err != nil:
				return err
			default:
				n, ok := parseInt64(v)
				if !ok {
					return errNotInteger
				}
				cur = n
			}
			if (delta > 0 && cur > math.MaxInt64-delta) || (delta < 0 && cur < math.MinInt64-delta) {
				return errors.New("increment or decrement would overflow")
			}
			result = cur + delta
			tx.Put(key, strconv.AppendInt(nil, result, 10))
			return nil
		}))
	})
	if err != nil {
		c.writeError(respError(err))
		return
	}
	c.writeInt(result)
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
