package server

import (
	"errors"
	"io"
	"net"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kvdstore/kvd/engine"
)

// ServeRESP accepts RESP connections on ln and serves them until
// [Server.Shutdown] or [Server.Close] is called; it then returns
// ErrServerClosed. It closes ln when it returns. Connections are served by
// the server's event loop (Config.RESPIO "loop", see eventLoop) or each by
// its own goroutine ("goroutines").
//
// kvd runs its own accept loop, connection handling and RESP parser,
// because it needs what a generic RESP server lacks: a graceful drain of
// in-flight pipelines on shutdown, a bound on connections, and limits on
// frame sizes enforced from declared lengths (see respParser).
func (s *Server) ServeRESP(ln net.Listener) error {
	if !s.trackListener(&ln, true) {
		ln.Close()
		return ErrServerClosed
	}
	defer s.trackListener(&ln, false)
	defer ln.Close()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			if isTemporary(err) {
				// Out of file descriptors and the like: back off as
				// net/http does, then try again.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("resp accept", "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		s.totalConns.Add(1)
		c := s.newRESPConn(nc)
		if reason := s.addConn(c); reason != "" {
			s.rejected.Add(1)
			s.metrics.rejected.Inc()
			nc.SetWriteDeadline(time.Now().Add(time.Second))
			nc.Write(appendLine(nil, '-', reason))
			nc.Close()
			continue
		}
		if s.cfg.RESPIO == "loop" {
			s.adoptConn(c)
		} else {
			go c.serve()
		}
	}
}

func isTemporary(err error) bool {
	var ne interface{ Temporary() bool }
	return errors.As(err, &ne) && ne.Temporary()
}

// addConn registers c, or returns the error reply for refusing it.
func (s *Server) addConn(c *respConn) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return "ERR server is shutting down"
	}
	if len(s.conns) >= s.cfg.MaxClients {
		return respErrMaxClients
	}
	s.conns[c] = struct{}{}
	s.metrics.clients.Inc()
	return ""
}

func (s *Server) removeConn(c *respConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[c]; ok {
		delete(s.conns, c)
		s.metrics.clients.Dec()
		s.connsDone.Broadcast()
	}
}

// Limits of one pipeline's batched SETs and of the reply buffer.
const (
	maxBatchOps    = 1024
	maxBatchBytes  = 4 << 20
	flushThreshold = 64 << 10 // flush replies mid-pipeline beyond this
	maxKeepOut     = 1 << 20  // drop a reply buffer that grew beyond this
)

// respConn is one RESP connection. Only its own goroutine touches its
// fields, except busy and shut (under mu) which Shutdown reads.
type respConn struct {
	s      *Server
	id     int64
	nc     net.Conn
	addr   string
	parser *respParser
	out    []byte
	// writeValue writes a value GetEach found, or null: made once, so that
	// GET and MGET pass it to the store without allocating.
	writeValue func(i int, value []byte, found bool)

	name       string
	resp3      bool
	durability engine.Durability // CLIENT DURABILITY; default: server mode
	lastRev    uint64            // revision of this connection's last successful write
	quit       bool
	batch      engine.Batch
	laddr      string // local address, for INFO

	mu   sync.Mutex
	busy bool // handling a pipeline
	shut bool // closed by Shutdown while idle

	// Event-loop state (connections served by the event loop only). The
	// loop goroutine owns it, except that a worker goroutine running one of
	// the connection's commands owns the connection until it hands it back.
	lp loopState
}

func (s *Server) newRESPConn(nc net.Conn) *respConn {
	c := &respConn{
		s:      s,
		id:     s.nextID.Add(1),
		nc:     nc,
		addr:   nc.RemoteAddr().String(),
		laddr:  nc.LocalAddr().String(),
		parser: newRESPParser(max(s.cfg.MaxKeySize, s.cfg.MaxValueSize), s.cfg.MaxRequestSize),
	}
	c.writeValue = func(_ int, v []byte, found bool) { c.writeBulkOrNull(v, found) }
	return c
}

// closeIfIdle closes the connection if it is waiting for a request. A busy
// connection closes itself after replying. Called with s.mu held.
func (c *respConn) closeIfIdle() {
	if c.nc == nil {
		return // the event loop closes its own connections
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.busy {
		c.shut = true
		c.nc.Close()
	}
}

// setBusy marks the connection busy or idle. It returns false if Shutdown
// already closed the connection as idle.
func (c *respConn) setBusy(b bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shut {
		return false
	}
	c.busy = b
	return true
}

func (c *respConn) serve() {
	log := c.s.log.With("conn", c.id, "remote", c.addr)
	defer func() {
		if r := recover(); r != nil {
			// A bug, not bad input: input errors are replies. Keep the
			// process and every other connection alive.
			log.Error("resp connection panic", "panic", r, "stack", string(debug.Stack()))
		}
		c.nc.Close()
		c.s.removeConn(c)
	}()
	log.Debug("resp connection open")
	for {
		reqs, err := c.parser.ReadRequests(c.nc)
		if err != nil {
			c.readError(log, err)
			return
		}
		if !c.setBusy(true) {
			return
		}
		c.handlePipeline(reqs)
		err = c.flush()
		c.setBusy(false)
		if err != nil || c.quit || c.s.closing.Load() {
			return
		}
		c.maybeShrink()
	}
}

// readError answers a malformed frame with a protocol error, as Redis does,
// before the connection closes.
func (c *respConn) readError(log interface {
	Debug(string, ...any)
}, err error) {
	if isProtocolError(err) {
		c.s.metrics.protocolErrors.Inc()
		c.nc.SetWriteDeadline(time.Now().Add(time.Second))
		c.writeError("ERR " + err.Error())
		c.flush()
		log.Debug("resp protocol error", "err", err)
		c.lingeringClose()
		return
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		log.Debug("resp read", "err", err)
	}
}

// isProtocolError reports whether err is a malformed frame.
func isProtocolError(err error) bool {
	var pe *protocolError
	return errors.As(err, &pe)
}

// lingeringClose sends FIN and drains what the client still sends for a
// moment before the connection is closed, so that closing with unread input
// (which makes the kernel send a reset) does not destroy the error reply
// before the client reads it.
func (c *respConn) lingeringClose() {
	tc, ok := c.nc.(*net.TCPConn)
	if !ok {
		return
	}
	tc.CloseWrite()
	tc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	io.CopyN(io.Discard, tc, 1<<20)
}

// maybeShrink releases the parser's buffer grown by a large command.
func (c *respConn) maybeShrink() { c.parser.shrink() }

// outWritten empties c's reply buffer once it is written, dropping it if a
// large reply grew it.
func (c *respConn) outWritten() {
	c.out = c.out[:0]
	if cap(c.out) > maxKeepOut {
		c.out = nil
	}
}

func (c *respConn) flush() error {
	if len(c.out) == 0 {
		return nil
	}
	_, err := c.nc.Write(c.out)
	c.outWritten()
	return err
}

// handlePipeline runs the commands of one pipeline in order. Runs of plain
// SETs with the same durability are committed as one engine batch; each
// still gets its own reply.
func (c *respConn) handlePipeline(reqs []request) {
	for i := 0; i < len(reqs) && !c.quit; {
		req := &reqs[i]
		if req.refused != nil {
			i++
			c.s.totalCommands.Add(1)
			c.replyRefused(req)
			continue
		}
		if d, ok := c.plainSet(req.args); ok {
			i = c.setRun(reqs, i, d)
		} else {
			i++
			c.dispatch(req.args)
		}
		if len(c.out) > flushThreshold {
			if err := c.flush(); err != nil {
				c.quit = true
			}
		}
	}
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
	if c.checkKey(args[1]) != "" || len(args[2]) > c.s.cfg.MaxValueSize {
		return 0, false
	}
	return d, true
}

// batchSets puts the run of plain SETs with durability d starting at
// reqs[i] into c.batch, counts them as taken, and returns the index of the
// first request after the run.
func (c *respConn) batchSets(reqs []request, i int, d engine.Durability) int {
	c.batch.Reset()
	j, size := i, 0
	for j < len(reqs) && c.batch.Len() < maxBatchOps && size < maxBatchBytes {
		if reqs[j].refused != nil {
			break
		}
		d2, ok := c.plainSet(reqs[j].args)
		if !ok || d2 != d {
			break
		}
		args := reqs[j].args
		c.batch.Put(args[1], args[2])
		size += len(args[1]) + len(args[2])
		j++
	}
	n := j - i
	c.s.totalCommands.Add(int64(n))
	c.s.setCmd.requests.Add(float64(n))
	return j
}

// setRun commits the run of plain SETs starting at reqs[i] as one batch and
// replies to each. It returns the index of the first request after the run.
func (c *respConn) setRun(reqs []request, i int, d engine.Durability) int {
	j := c.batchSets(reqs, i, d)
	n := j - i
	start := time.Now()
	var rev uint64
	var err error
	if n == 1 {
		rev, err = c.s.store.Put(reqs[i].args[1], reqs[i].args[2], writeOptions(d))
	} else {
		rev, err = c.s.store.Write(&c.batch, writeOptions(d))
	}
	c.s.observeCommit(d, start)
	c.noteWrite(rev, err, true)
	c.replySets(n, err)
	return j
}

// replySets answers the n SETs of a batch committed with result err.
func (c *respConn) replySets(n int, err error) {
	for range n {
		if err != nil {
			c.writeError(respError(err))
		} else {
			c.writeOK()
		}
	}
}

// noteWrite records the revision of a successful write for CLIENT LASTREV
// and WAITAOF. A command that wrote nothing (SET NX on an existing key, DEL
// of missing keys) leaves it unchanged.
func (c *respConn) noteWrite(rev uint64, err error, wrote bool) {
	if err == nil && wrote && rev > c.lastRev {
		c.lastRev = rev
	}
}

// dispatch runs one command.
func (c *respConn) dispatch(args [][]byte) {
	c.s.totalCommands.Add(1)
	var buf [32]byte
	name := lower(buf[:0], args[0])
	cmd, ok := c.s.cmds[string(name)]
	if !ok {
		c.s.metrics.unknownCommands.Inc()
		c.writeError(unknownCommand(args))
		return
	}
	cmd.requests.Inc()
	if (cmd.arity > 0 && len(args) != cmd.arity) || (cmd.arity < 0 && len(args) < -cmd.arity) {
		c.writeError("ERR wrong number of arguments for '" + cmd.name + "' command")
		return
	}
	cmd.run(c, args)
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

// Reply encoding. RESP2 unless the connection switched to RESP3 with
// HELLO 3; only nulls and maps differ for the replies kvd sends.

func (c *respConn) writeOK()              { c.out = append(c.out, "+OK\r\n"...) }
func (c *respConn) writeStatus(s string)  { c.out = appendLine(c.out, '+', s) }
func (c *respConn) writeError(msg string) { c.out = appendLine(c.out, '-', msg) }
func (c *respConn) writeInt(n int64)      { c.out = appendPrefix(c.out, ':', n) }
func (c *respConn) writeArray(n int)      { c.out = appendPrefix(c.out, '*', int64(n)) }

func (c *respConn) writeBulk(b []byte) {
	c.out = appendPrefix(c.out, '$', int64(len(b)))
	c.out = append(c.out, b...)
	c.out = append(c.out, '\r', '\n')
}

func (c *respConn) writeBulkString(s string) {
	c.out = appendPrefix(c.out, '$', int64(len(s)))
	c.out = append(c.out, s...)
	c.out = append(c.out, '\r', '\n')
}

func (c *respConn) writeBulkOrNull(b []byte, ok bool) {
	if ok {
		c.writeBulk(b)
	} else {
		c.writeNull()
	}
}

func (c *respConn) writeNull() {
	if c.resp3 {
		c.out = append(c.out, "_\r\n"...)
	} else {
		c.out = append(c.out, "$-1\r\n"...)
	}
}

// writeMap writes the header of a map of n pairs: a RESP3 map, or a flat
// array of 2n elements in RESP2.
func (c *respConn) writeMap(n int) {
	if c.resp3 {
		c.out = appendPrefix(c.out, '%', int64(n))
	} else {
		c.writeArray(2 * n)
	}
}

// appendPrefix appends a line of kind and n: ":n", "*n", "$n" or "%n".
func appendPrefix(b []byte, kind byte, n int64) []byte {
	b = append(b, kind)
	b = strconv.AppendInt(b, n, 10)
	return append(b, '\r', '\n')
}

// appendLine appends a simple string ('+') or error ('-') reply, with any
// CR or LF in s, which would end the line early, replaced by a space.
func appendLine(b []byte, kind byte, s string) []byte {
	b = append(b, kind)
	i := len(b)
	b = append(b, s...)
	for ; i < len(b); i++ {
		if b[i] == '\r' || b[i] == '\n' {
			b[i] = ' '
		}
	}
	return append(b, '\r', '\n')
}
