package server

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/kvdstore/kvd/engine"
)

// The command executor: one path from a parsed request to its reply, for
// both I/O models. A connection's requests run in order; runs of plain SETs
// with the same durability are submitted to the store as one batch, each
// SET still getting its own reply; replies are flushed mid-pipeline past
// flushThreshold. Every other write command (SET with options, DEL, MSET,
// INCR and its kin, CAS, CAD) fills a batch of its own, submitted the same way; its
// reply comes from the batch's results, which the store evaluates when it
// applies the batch, in revision order. EXEC submits a whole MULTI
// transaction the same way, as one batch (resp_multi.go). The I/O models differ only in how bytes get in and out
// and in how a connection waits, which is what respIO abstracts.

// respIO is an I/O model: the event loop (resp_loop_linux.go) or a
// goroutine per connection (resp_goroutines.go).
type respIO interface {
	// flush writes c's pending replies. It returns false if c must wait
	// for its socket to drain (or was closed) before it runs on.
	flush(c *respConn) bool
	// awaitWrite waits for c.pending.commit to be acknowledged (written,
	// and fsynced if it is Sync), then calls c.finishWrite. It returns
	// true if c is parked meanwhile and the call comes later.
	awaitWrite(c *respConn) bool
	// runSlow runs run(c, args), a command that may block. It returns
	// true if c is parked until it is done.
	runSlow(c *respConn, run func(c *respConn, args [][]byte), args [][]byte) bool
	// awaitBarrier runs run(c, args), a read that must wait for a read
	// barrier (a cluster's linearizable read), once one has completed
	// that started after the read arrived. It returns true if c is parked
	// meanwhile.
	awaitBarrier(c *respConn, run func(c *respConn, args [][]byte), args [][]byte) bool
	// writeAsync commits c.batch through w, then calls c.finishWrite.
	// It returns true if c is parked meanwhile and the call comes later.
	writeAsync(c *respConn, w asyncWriter) bool
	// pushNotify returns the function pw's watcher, one of c's, calls when
	// it has more (see watch.Hub.WatchFunc and resp_push.go).
	pushNotify(c *respConn, pw *pushWatch) func()
	// pushChanged tells the I/O model that c's watches changed: added is
	// the watch added, nil when some ended.
	pushChanged(c *respConn, added *pushWatch)
}

// asyncWriter is a store that commits a write without its caller waiting
// (a cluster node, where a write waits for a quorum): done is called once
// it is acknowledged, or failed, on a goroutine of the store's, with b's
// Results set.
type asyncWriter interface {
	WriteAsync(b *engine.Batch, wo engine.WriteOptions, done func(engine.Commit, error))
}

// pendingWrite is a write being committed as one batch (respConn.batch):
// a run of plain SETs, or one write command.
type pendingWrite struct {
	n      int        // number of requests answered: the SETs of a run, else 1
	reply  writeReply // how they are answered once the batch is written
	d      engine.Durability
	commit engine.Commit // once submitted
	start  time.Time
}

// writeReply is how a written batch is answered, from its results.
type writeReply uint8

const (
	replyOK      writeReply = iota // +OK per request: SET runs, MSET, SET without NX, XX or GET
	replyPutIf                     // SET NX or XX: +OK if written, else null
	replyOld                       // SET ... GET: the previous value, or null
	replyIncr                      // INCR and its kin, APPEND: the new value or length, or the op's error
	replyCount                     // DEL: the number of keys deleted
	replyCAS                       // CAS, CAD: the key's new mod revision, or REVMISMATCH
	replyApplied                   // SETNX, EXPIRE and its kin, PERSIST: 1 if the op applied, else 0
	replyFloat                     // INCRBYFLOAT: the new value, or the op's error
)

type runResult uint8

const (
	runDone     runResult = iota // every request ran
	runParked                    // c waits for a commit or a slow command
	runStalled                   // c waits for its replies to drain
	runTurnOver                  // c ran its turn of requests
)

// setRequests hands c the requests of one read.
func (c *respConn) setRequests(reqs []request) {
	c.reqs, c.next = reqs, 0
	c.barrierOK = false
	c.lastActive.Store(time.Now().UnixNano())
}

// runRequests runs c's requests in order until every one ran, c must wait,
// or *turn requests ran (*turn is decreased by those that did).
func (c *respConn) runRequests(turn *int) runResult {
	for {
		if len(c.out) > flushThreshold && !c.io.flush(c) {
			return runStalled
		}
		if c.next == len(c.reqs) {
			return runDone
		}
		if c.quit {
			c.next = len(c.reqs)
			return runDone
		}
		if *turn <= 0 {
			return runTurnOver
		}
		n, parked := c.step()
		*turn -= n
		if parked {
			return runParked
		}
	}
}

// step runs c's next request, or the run of plain SETs starting there. It
// returns how many requests it took and whether c is parked.
func (c *respConn) step() (int, bool) {
	req := &c.reqs[c.next]
	if req.refused != nil {
		c.next++
		c.s.totalCommands.Add(1)
		c.replyRefused(req)
		c.txn.failed()
		return 1, false
	}
	subscribed := c.subscribed()
	if !c.txn.active && !subscribed {
		if d, ok := c.plainSet(req.args); ok {
			return c.submitSets(d)
		}
	}
	c.next++
	args := req.args
	cmd := c.command(args)
	switch {
	case cmd == nil:
		c.txn.failed()
		return 1, false
	case subscribed && !subscribedAllowed(cmd):
		c.refuseSubscribed(cmd)
		return 1, false
	case c.txn.active && !txnControl(cmd):
		c.queue(cmd, args)
		return 1, false
	case cmd.write != nil:
		d, reply, ok := cmd.write(c, args)
		if !ok {
			return 1, false
		}
		return 1, c.submit(pendingWrite{n: 1, reply: reply, d: d})
	case cmd.inline && cmd.keyArgs && c.s.localReads != nil && !c.barrierOK && c.readsMayWait():
		return 1, c.io.awaitBarrier(c, cmd.run, args)
	case cmd.inline:
		cmd.run(c, args)
		return 1, false
	}
	c.barrierOK = false
	return 1, c.io.runSlow(c, cmd.run, args)
}

// plainSet reports whether args is "SET key value [SYNC|ASYNC]" with a valid
// key and value, and its durability.
func (c *respConn) plainSet(args [][]byte) (engine.Durability, bool) {
	if (len(args) != 3 && len(args) != 4) || !equalFold(args[0], "set") {
		return 0, false
	}
	d := c.durability
	if len(args) == 4 {
		switch {
		case equalFold(args[3], "sync"):
			d = engine.DurabilitySync
		case equalFold(args[3], "async"):
			d = engine.DurabilityAsync
		default:
			return 0, false
		}
	}
	if c.checkKey(args[1]) != "" || len(args[2]) > c.s.cfg.MaxValueSize || !c.setAllowed(args[1]) {
		return 0, false
	}
	return d, true
}

// submitSets submits the run of plain SETs with durability d at c's next
// request to the store as one batch (see submit). It returns the number of
// SETs and whether c is parked.
func (c *respConn) submitSets(d engine.Durability) (int, bool) {
	n := c.batchSets(d)
	c.lastCmd.Store(c.s.setCmd)
	return n, c.submit(pendingWrite{n: n, d: d})
}

// submit submits c.batch, filled for w, to the store without waiting, and
// has c's I/O model wait for it to be written (and fsynced if w's
// durability asks) before w's requests are answered from its results. It
// reports whether c is parked meanwhile.
func (c *respConn) submit(w pendingWrite) bool {
	c.barrierOK = false
	w.start = time.Now()
	c.pending = w
	if c.movedWrite() {
		return false
	}
	if aw := c.s.asyncWrites; aw != nil {
		return c.io.writeAsync(c, aw)
	}
	commit, err := c.s.store.TrySubmit(&c.batch, writeOptions(w.d))
	switch {
	case errors.Is(err, engine.ErrThrottled):
		// The store waits for a checkpoint to free memory: wait in
		// Write, which the event loop runs on a worker so that it keeps
		// serving reads and other clients meanwhile.
		return c.io.runSlow(c, writeBatch, nil)
	case err != nil:
		c.finishWrite(err)
		return false
	}
	c.pending.commit = commit
	return c.io.awaitWrite(c)
}

// batchSets puts the run of plain SETs with durability d at c's next request
// into c.batch, takes and counts them, and returns how many there are.
func (c *respConn) batchSets(d engine.Durability) int {
	c.batch.Reset()
	i, size := c.next, 0
	for ; i < len(c.reqs) && c.batch.Len() < maxBatchOps && size < maxBatchBytes; i++ {
		req := &c.reqs[i]
		if req.refused != nil {
			break
		}
		if d2, ok := c.plainSet(req.args); !ok || d2 != d {
			break
		}
		c.batch.Put(req.args[1], req.args[2])
		size += len(req.args[1]) + len(req.args[2])
	}
	n := i - c.next
	c.next = i
	c.s.totalCommands.Add(int64(n))
	c.s.setCmd.requests.Add(float64(n))
	return n
}

// writeBatch commits c.pending with WriteContext, waiting for the store to
// have room.
func writeBatch(c *respConn, _ [][]byte) {
	var err error
	c.pending.commit, err = c.s.store.WriteContext(context.Background(), &c.batch, writeOptions(c.pending.d))
	c.finishWrite(err)
}

// finishWrite answers the requests of c.pending, whose commit ended with
// err, from c.batch's results.
func (c *respConn) finishWrite(err error) {
	w := &c.pending
	rev := w.commit.Revision()
	c.s.observeCommit(w.commit, w.start)
	if err != nil {
		if w.reply == replyExec {
			c.txn.running = c.txn.running[:0]
		}
		for range w.n {
			c.writeError(respError(err))
		}
		return
	}
	res := c.batch.Results()
	if w.reply == replyExec {
		c.finishExec(res)
		return
	}
	applied := false
	for _, r := range res {
		applied = applied || r.Applied
	}
	c.noteWrite(rev, nil, applied && !c.batch.Aborted())
	c.writeResult(w.reply, w.n, res)
}

// writeResult answers n requests, or one, of kind reply from the results
// of its batch's ops.
func (c *respConn) writeResult(reply writeReply, n int, res []engine.Result) {
	var applied int64
	for _, r := range res {
		if r.Applied {
			applied++
		}
	}
	switch reply {
	case replyOK:
		for range n {
			c.writeOK()
		}
	case replyPutIf:
		if res[0].Applied {
			c.writeOK()
		} else {
			c.writeNull()
		}
	case replyOld:
		c.writeBulkOrNull(res[0].Old, res[0].Old != nil)
	case replyIncr:
		if errors.Is(res[0].Err, engine.ErrValueTooLarge) { // APPEND
			c.writeError(respErrStringSize)
		} else if res[0].Err != nil {
			c.writeError(respError(res[0].Err))
		} else {
			c.writeInt(res[0].Int)
		}
	case replyCount:
		c.writeInt(applied)
	case replyApplied:
		c.writeInt(applied)
	case replyFloat:
		if res[0].Err != nil {
			c.writeError(respError(res[0].Err))
		} else {
			c.writeBulk(res[0].Value)
		}
	case replyCAS:
		if res[0].Applied {
			c.writeInt(int64(res[0].ModRevision))
		} else {
			c.writeError(respErrRevMismatch + " " + strconv.FormatUint(res[0].ModRevision, 10))
		}
	case replyMSetNX:
		if len(res) > 0 && errors.Is(res[0].Err, engine.ErrRequireFailed) {
			c.writeInt(0)
		} else {
			c.writeInt(1)
		}
	case replyGet:
		c.writeBulkOrNull(res[0].Old, res[0].Applied)
	case replyMGet:
		c.writeArray(len(res))
		for _, r := range res {
			c.writeBulkOrNull(r.Old, r.Applied)
		}
	case replyExists:
		c.writeInt(applied)
	case replyGetRev:
		if !res[0].Applied {
			c.writeNull()
			break
		}
		c.writeArray(3)
		c.writeBulk(res[0].Old)
		c.writeInt(int64(res[0].ModRevision))
		c.writeInt(int64(res[0].CreateRevision))
	}
}

// noteWrite records the revision of a successful write for CLIENT LASTREV
// and WAITAOF. A command that changed nothing (SET NX on an existing key,
// DEL of missing keys, a failed INCR) leaves it unchanged, though its batch
// took a revision.
func (c *respConn) noteWrite(rev uint64, err error, wrote bool) {
	if err == nil && wrote && rev > c.lastRev {
		c.lastRev = rev
	}
}

// command counts the command args names and returns it, or replies with an
// error and returns nil if it is unknown or has the wrong number of
// arguments.
func (c *respConn) command(args [][]byte) *respCommand {
	c.s.totalCommands.Add(1)
	var buf [32]byte
	cmd, ok := c.s.cmds[string(lower(buf[:0], args[0]))]
	if !ok {
		c.s.metrics.unknownCommands.Inc()
		c.writeError(unknownCommand(args))
		return nil
	}
	cmd.requests.Inc()
	c.lastCmd.Store(cmd)
	if (cmd.arity > 0 && len(args) != cmd.arity) || (cmd.arity < 0 && len(args) < -cmd.arity) {
		c.writeError("ERR wrong number of arguments for '" + cmd.name + "' command")
		return nil
	}
	if !c.authorize(cmd, args) {
		return nil
	}
	return cmd
}

// lower appends the ASCII lower case of b to dst; names longer than dst's
// capacity are cut short (no command is that long).
func lower(dst, b []byte) []byte {
	if len(b) > cap(dst) {
		b = b[:cap(dst)]
	}
	for _, ch := range b {
		if 'A' <= ch && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		dst = append(dst, ch)
	}
	return dst
}

// unknownCommand formats Redis's reply to an unknown command.
func unknownCommand(args [][]byte) string {
	var b strings.Builder
	b.WriteString("ERR unknown command '")
	b.WriteString(printable(args[0], 128))
	b.WriteString("', with args beginning with: ")
	for _, a := range args[1:min(len(args), 4)] {
		b.WriteString("'")
		b.WriteString(printable(a, 64))
		b.WriteString("' ")
	}
	return b.String()
}

// printable returns b cut to limit bytes with control and non-ASCII bytes
// escaped, safe inside a one-line error reply.
func printable(b []byte, limit int) string {
	var sb strings.Builder
	for i, ch := range b {
		if i == limit {
			sb.WriteString("...")
			break
		}
		if ch < 0x20 || ch >= 0x7f || ch == '\'' || ch == '\\' {
			sb.WriteString(`\x`)
			sb.WriteString(strconv.FormatUint(uint64(ch)>>4, 16))
			sb.WriteString(strconv.FormatUint(uint64(ch)&15, 16))
			continue
		}
		sb.WriteByte(ch)
	}
	return sb.String()
}

// replyRefused answers a request whose oversized arguments were dropped
// unread.
func (c *respConn) replyRefused(req *request) {
	r := req.refused
	var cmd *respCommand
	if len(req.args) > 0 {
		var buf [32]byte
		cmd = c.s.cmds[string(lower(buf[:0], req.args[0]))]
	}
	var msg string
	switch {
	case !r.tooLarge:
		msg = respErrRequestLarge + " (max " + strconv.Itoa(c.s.cfg.MaxRequestSize) + " bytes per command)"
	case cmd != nil && cmd.valueArg != nil && cmd.valueArg(r.arg):
		msg = respErrValueTooLarge + " (max " + strconv.Itoa(c.s.cfg.MaxValueSize) + " bytes)"
	case cmd != nil && cmd.keyArgs && r.arg > 0:
		msg = respErrKeyTooLarge + " (max " + strconv.Itoa(c.s.cfg.MaxKeySize) + " bytes)"
	default:
		msg = respErrArgTooLarge + " (" + strconv.Itoa(r.size) + " bytes)"
	}
	c.writeError(msg)
}

// checkKey returns the error reply for an invalid key, or "".
func (c *respConn) checkKey(key []byte) string {
	switch {
	case len(key) == 0:
		return respErrEmptyKey
	case len(key) > c.s.cfg.MaxKeySize:
		return respErrKeyTooLarge + " (max " + strconv.Itoa(c.s.cfg.MaxKeySize) + " bytes)"
	}
	return ""
}

// checkValue returns the error reply for a value over the limit, or "".
func (c *respConn) checkValue(v []byte) string {
	if len(v) > c.s.cfg.MaxValueSize {
		return respErrValueTooLarge + " (max " + strconv.Itoa(c.s.cfg.MaxValueSize) + " bytes)"
	}
	return ""
}

// readFailed handles an error from reading c's requests. A malformed frame
// gets a protocol error reply, as Redis sends, and readFailed returns true:
// the I/O model then writes it and closes c after a lingering close (see
// lingeringClose). Other errors (EOF, reset) just close c.
func (c *respConn) readFailed(err error) bool {
	if errors.Is(err, errOverBudget) {
		c.s.rejected.Add(1)
		c.s.metrics.rejected.Inc()
		c.writeError("ERR " + err.Error())
		c.s.log.Warn("resp request refused: incomplete requests over their memory budget",
			"conn", c.id, "remote", c.addr, "budget", c.s.cfg.RESPPendingBytes)
		return true
	}
	if isTimeout(err) {
		c.s.log.Debug("resp connection idle: closed", "conn", c.id, "remote", c.addr)
		return false
	}
	var pe *protocolError
	if errors.As(err, &pe) {
		c.s.metrics.protocolErrors.Inc()
		c.writeError("ERR " + err.Error())
		c.s.log.Debug("resp protocol error", "conn", c.id, "remote", c.addr, "err", err)
		return true
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		c.s.log.Debug("resp read", "conn", c.id, "remote", c.addr, "err", err)
	}
	return false
}

// outWritten empties c's reply buffer once it is written, dropping it if a
// large reply grew it.
func (c *respConn) outWritten() {
	c.out = c.out[:0]
	if cap(c.out) > maxKeepOut {
		c.out = nil
	}
}
