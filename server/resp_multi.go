package server

import (
	"errors"
	"strconv"
	"strings"

	"github.com/kvdstore/kvd/engine"
)

// Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH.
//
// Between MULTI and EXEC a connection's commands are checked and queued,
// not run. EXEC compiles every queued command into one engine.Batch —
// writes as their own operations, reads (GET, MGET, EXISTS, GETREV) as get
// operations, WATCHed keys as require operations — and submits it once,
// as any other write: the store applies it whole at one revision, so the
// reads see the state at the transaction's point, its own earlier writes
// included, and a WATCHed key changed since WATCH makes the batch apply
// nothing. EXEC then answers with each command's reply, built from the
// batch's results.
//
// A command with no batch form (SCAN, INFO, CONFIG, CLIENT, WAITAOF, ...)
// is refused when it is queued, as an unknown command or a wrong argument
// is: the transaction is then discarded at EXEC (EXECABORT).

// txnState is a connection's transaction: the commands queued since MULTI
// and the keys WATCHed since the last EXEC, DISCARD or UNWATCH.
type txnState struct {
	active bool // after MULTI, until EXEC or DISCARD
	dirty  bool // a command failed to queue: EXEC discards the transaction
	size   int  // bytes queued, to bound the transaction
	cmds   []queuedCmd
	watch  []watchedKey
	// running is the transaction EXEC submitted, answered by finishExec:
	// its commands and the number of require ops ahead of theirs.
	running  []queuedCmd
	requires int
}

// queuedCmd is a command queued in a transaction; args are copies.
type queuedCmd struct {
	cmd   *respCommand
	args  [][]byte
	reply writeReply // set when EXEC compiles it
	ops   int        // operations it put in the batch
}

// watchedKey is a WATCHed key and its mod revision then (0: absent).
type watchedKey struct {
	key []byte
	rev uint64
}

// Replies of commands that only transactions (or MSETNX) produce; they
// follow the writeReply constants of resp_exec.go.
const (
	replyExec   writeReply = 32 + iota // EXEC: an array of the queued commands' replies
	replyMSetNX                        // MSETNX: 1 if set, 0 if a key existed
	replyGet                           // GET in a transaction: the value or null
	replyMGet                          // MGET in a transaction: an array of values or nulls
	replyExists                        // EXISTS in a transaction: the number of keys found
	replyGetRev                        // GETREV in a transaction: [value, mod, create] or null
	replyConst                         // PING, ECHO, UNWATCH in a transaction: no operation
)

const (
	respErrExecAbort = "EXECABORT Transaction discarded because of previous errors."
	// txnArgOverhead counts each queued argument's bookkeeping in a
	// transaction's size.
	txnArgOverhead = 32
)

// reset ends the transaction and forgets the watched keys.
func (t *txnState) reset() {
	t.active, t.dirty, t.size = false, false, 0
	clear(t.cmds)
	t.cmds = t.cmds[:0]
	clear(t.watch)
	t.watch = t.watch[:0]
}

// failed marks an active transaction to be discarded at EXEC.
func (t *txnState) failed() {
	if t.active {
		t.dirty = true
	}
}

// txnControl reports whether cmd runs at once inside MULTI instead of
// being queued.
func txnControl(cmd *respCommand) bool {
	switch cmd.name {
	case "multi", "exec", "discard", "watch", "quit":
		return true
	}
	return false
}

// queue checks args, the request of cmd, and queues it in c's transaction
// (+QUEUED), or replies with an error and marks the transaction failed.
func (c *respConn) queue(cmd *respCommand, args [][]byte) {
	t := &c.txn
	ok := true
	switch {
	case cmd.name == "msetnx":
		// Its all-or-nothing condition is a require op, which would
		// abort the whole transaction.
		c.writeError("ERR MSETNX is not allowed in a transaction")
		ok = false
	case cmd.write != nil:
		c.batch.Reset()
		_, _, ok = cmd.write(c, args)
	case cmd.txnRead != nil:
		c.batch.Reset()
		_, ok = cmd.txnRead(c, args)
	case cmd.name == "ping" && len(args) > 2:
		c.writeError("ERR wrong number of arguments for 'ping' command")
		ok = false
	case cmd.name == "ping", cmd.name == "echo", cmd.name == "unwatch":
	default:
		c.writeError("ERR " + strings.ToUpper(cmd.name) +
			" is not allowed in a transaction (kvd runs MULTI/EXEC as one batch of reads and writes)")
		ok = false
	}
	c.batch.Reset()
	if !ok {
		t.dirty = true
		return
	}
	size := 0
	for _, a := range args {
		size += len(a) + txnArgOverhead
	}
	if t.size+size > c.s.cfg.MaxRequestSize {
		c.writeError("ERR transaction too large (max " + strconv.Itoa(c.s.cfg.MaxRequestSize) + " bytes queued)")
		t.dirty = true
		return
	}
	t.size += size
	cp := make([][]byte, len(args))
	for i, a := range args {
		cp[i] = append([]byte{}, a...)
	}
	t.cmds = append(t.cmds, queuedCmd{cmd: cmd, args: cp})
	c.writeStatus("QUEUED")
}

func cmdMulti(c *respConn, _ [][]byte) {
	if c.txn.active {
		c.writeError("ERR MULTI calls can not be nested")
		return
	}
	c.txn.active = true
	c.writeOK()
}

func cmdDiscard(c *respConn, _ [][]byte) {
	if !c.txn.active {
		c.writeError("ERR DISCARD without MULTI")
		return
	}
	c.txn.reset()
	c.writeOK()
}

// cmdWatch answers WATCH key [key ...]: it records each key's mod revision
// (0 if it holds no value); EXEC applies nothing if any has changed since.
func cmdWatch(c *respConn, args [][]byte) {
	if c.txn.active {
		c.writeError("ERR WATCH inside MULTI is not allowed")
		return
	}
	for _, k := range args[1:] {
		if msg := c.checkKey(k); msg != "" {
			c.writeError(msg)
			return
		}
	}
	if len(c.txn.watch)+len(args) > maxBatchOps*64 {
		c.writeError("ERR too many watched keys")
		return
	}
	for _, k := range args[1:] {
		var rev uint64
		e, err := c.reads().GetEntry(k)
		switch {
		case errors.Is(err, engine.ErrNotFound):
		case err != nil:
			c.writeError(respError(err))
			return
		default:
			rev = e.ModRevision
		}
		c.txn.watch = append(c.txn.watch, watchedKey{key: append([]byte{}, k...), rev: rev})
	}
	c.writeOK()
}

func cmdUnwatch(c *respConn, _ [][]byte) {
	clear(c.txn.watch)
	c.txn.watch = c.txn.watch[:0]
	c.writeOK()
}

// cmdExec answers EXEC: it compiles c's transaction into c.batch and has
// the executor submit it (see finishExec), or replies at once.
func cmdExec(c *respConn, _ [][]byte) (engine.Durability, writeReply, bool) {
	t := &c.txn
	switch {
	case !t.active:
		c.writeError("ERR EXEC without MULTI")
		return 0, 0, false
	case t.dirty:
		t.reset()
		c.writeError(respErrExecAbort)
		return 0, 0, false
	}
	tb := &c.txnBatch
	tb.Reset()
	for _, w := range t.watch {
		tb.Require(w.key, w.rev)
	}
	d := c.durability
	for i := range t.cmds {
		q := &t.cmds[i]
		c.batch.Reset()
		var ok bool
		switch {
		case q.cmd.write != nil:
			var qd engine.Durability
			qd, q.reply, ok = q.cmd.write(c, q.args)
			if qd == engine.DurabilitySync {
				d = qd
			}
		case q.cmd.txnRead != nil:
			q.reply, ok = q.cmd.txnRead(c, q.args)
		default:
			q.reply, ok = replyConst, true
		}
		if !ok {
			// Checked when queued, with the same limits.
			panic("server: queued " + q.cmd.name + " failed to compile")
		}
		q.ops = c.batch.Len()
		tb.AppendBatch(&c.batch)
	}
	t.running, t.cmds = t.cmds, t.running[:0]
	t.requires = len(t.watch)
	t.reset()
	c.batch, c.txnBatch = c.txnBatch, c.batch
	if c.batch.Len() == 0 {
		// Nothing to submit: only PING, ECHO or UNWATCH, or nothing.
		c.finishExec(nil)
		return 0, 0, false
	}
	return d, replyExec, true
}

// finishExec answers an EXEC whose batch was applied with results res.
func (c *respConn) finishExec(res []engine.Result) {
	t := &c.txn
	defer func() {
		clear(t.running)
		t.running = t.running[:0]
	}()
	if c.batch.Aborted() {
		c.writeNullArray()
		return
	}
	res = res[min(t.requires, len(res)):]
	c.writeArray(len(t.running))
	wrote := false
	for _, q := range t.running {
		r := res[:q.ops]
		res = res[q.ops:]
		if q.cmd.write != nil {
			for _, x := range r {
				wrote = wrote || x.Applied
			}
		}
		switch q.reply {
		case replyConst:
			switch {
			case q.cmd.name == "unwatch", q.cmd.name == "ping" && len(q.args) == 1:
				if q.cmd.name == "ping" {
					c.writeStatus("PONG")
				} else {
					c.writeOK()
				}
			default: // PING message, ECHO message
				c.writeBulk(q.args[1])
			}
		default:
			c.writeResult(q.reply, 1, r)
		}
	}
	if wrote {
		c.noteWrite(c.pending.commit.Revision(), nil, true)
	}
}

func (c *respConn) writeNullArray() {
	if c.resp3 {
		c.out = append(c.out, "_\r\n"...)
	} else {
		c.out = append(c.out, "*-1\r\n"...)
	}
}

// The reads a transaction may hold: they fill c.batch with get ops.

func txnGet(c *respConn, args [][]byte) (writeReply, bool) {
	if !c.txnKeys(args[1:2]) {
		return 0, false
	}
	return replyGet, true
}

func txnMGet(c *respConn, args [][]byte) (writeReply, bool) {
	if !c.txnKeys(args[1:]) {
		return 0, false
	}
	return replyMGet, true
}

func txnExists(c *respConn, args [][]byte) (writeReply, bool) {
	if !c.txnKeys(args[1:]) {
		return 0, false
	}
	return replyExists, true
}

func txnGetRev(c *respConn, args [][]byte) (writeReply, bool) {
	if !c.txnKeys(args[1:2]) {
		return 0, false
	}
	return replyGetRev, true
}

// txnKeys adds a get op for each key, or replies with an error.
func (c *respConn) txnKeys(keys [][]byte) bool {
	for _, k := range keys {
		if msg := c.checkKey(k); msg != "" {
			c.writeError(msg)
			return false
		}
		c.batch.Get(k)
	}
	return true
}

// cmdMSetNX answers MSETNX key value [key value ...] [SYNC|ASYNC]: it sets
// every pair, as one atomic batch, only if none of the keys holds a value.
func cmdMSetNX(c *respConn, args [][]byte) (engine.Durability, writeReply, bool) {
	d, ok := c.msetPairs(args, "msetnx")
	if !ok {
		return 0, 0, false
	}
	// The require ops check the state before the batch, wherever they
	// stand: a key named twice is still set (to its last value).
	for i := range c.batch.Len() {
		c.batch.Require(args[1+2*i], 0)
	}
	return d, replyMSetNX, true
}
