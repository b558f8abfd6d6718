package server

import (
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvdstore/kvd/auth"
	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/replication"
)

// ServeRESP accepts RESP connections on ln and serves them until
// [Server.Shutdown] or [Server.Close] is called; it then returns
// ErrServerClosed. It closes ln when it returns. Connections are served by
// the server's event loop (Config.RESPIO "loop", see eventLoop) or each by
// its own goroutine ("goroutines"); either way a connection's requests go
// through the same parser (respParser) and executor (runRequests). ln may
// be a TLS listener (tls.NewListener) only with "goroutines": the loop
// reads and writes the sockets itself.
//
// kvd runs its own accept loop and connection handling, because it needs
// what a generic RESP server loop lacks: a graceful drain of in-flight
// pipelines on shutdown, a bound on connections, limits on frame sizes
// enforced from declared lengths, and writes of many clients committed
// together.
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
			refuse(nc, reason)
			continue
		}
		if s.cfg.RESPIO == "loop" {
			s.adoptConn(c)
		} else {
			c.io = goroutineIO{}
			go c.serve()
		}
	}
}
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
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
		s.cursors.drop(c.id)
		c.parser.release()
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

// A connection closed after a protocol error first drains what the client
// still sends, for at most this long and this much (see lingeringClose).
const (
	lingerTime  = 500 * time.Millisecond
	lingerBytes = 1 << 20
)

// respConn is one RESP connection. Only the goroutine serving it touches
// its fields (see the I/O models), except busy and shut (under mu), which
// Shutdown reads.
type respConn struct {
	s       *Server
	id      int64
	nc      net.Conn // nil once the event loop has adopted the connection
	io      respIO
	addr    string
	laddr   string // local address, for INFO
	parser  *respParser
	reqs    []request // read, and run up to next
	next    int
	out     []byte
	pending pendingWrite // the write being committed (see submit)
	batch   engine.Batch
	// txn is the MULTI transaction and WATCHed keys; txnBatch is where
	// EXEC compiles it (see resp_multi.go).
	txn      txnState
	txnBatch engine.Batch
	// writeValue writes a value GetEach found, or null: made once, so that
	// GET and MGET pass it to the store without allocating.
	writeValue func(i int, value []byte, found bool)

	// name, lastActive and lastCmd are read by CLIENT LIST on other
	// connections' goroutines.
	name       atomic.Pointer[string]
	created    time.Time
	lastActive atomic.Int64                // unix nanoseconds of the last read of requests
	lastCmd    atomic.Pointer[respCommand] // the last command run
	resp3      bool
	durability engine.Durability        // CLIENT DURABILITY; default: server mode
	lastRev    uint64                   // revision of this connection's last successful write
	readOpts   *replication.ReadOptions // CLIENT CONSISTENCY on a cluster; nil: the server's
	redirect   bool                     // CLIENT REDIRECT ON: writes on a follower get -MOVED
	quit       bool
	// barrierOK: on a cluster, a read barrier that started after the
	// requests in reqs arrived, and after this connection's last write,
	// has completed, so that their reads may be served from this node's
	// state as it is (see eventLoop.awaitBarrier).
	barrierOK bool
	// The authenticated user's name ("": none), and the user it named in
	// the users it was last looked up in (see respConn.user).
	authName  string
	authUser  *auth.User
	authUsers *auth.Users
	// shownUser is authName for CLIENT LIST on other goroutines; nil: default.
	shownUser atomic.Pointer[string]

	// Goroutine model only.
	mu   sync.Mutex
	busy bool // handling a pipeline
	shut bool // closed by Shutdown while idle

	// push is the connection's KVWATCH watches (resp_push.go).
	push pushState

	// Event-loop state (connections served by the event loop only). The
	// loop goroutine owns it, except that a worker goroutine running one of
	// the connection's commands owns the connection until it hands it back.
	lp loopState
}

func (s *Server) newRESPConn(nc net.Conn) *respConn {
	c := &respConn{
		s:       s,
		id:      s.nextID.Add(1),
		nc:      nc,
		addr:    nc.RemoteAddr().String(),
		laddr:   nc.LocalAddr().String(),
		created: time.Now(),
		parser:  newRESPParser(max(s.cfg.MaxKeySize, s.cfg.MaxValueSize), s.cfg.MaxRequestSize),
	}
	c.parser.budget = s.pending
	c.writeValue = func(_ int, v []byte, found bool) { c.writeBulkOrNull(v, found) }
	return c
}

// clientName returns the connection's name (CLIENT SETNAME), "" if none.
func (c *respConn) clientName() string {
	if p := c.name.Load(); p != nil {
		return *p
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
