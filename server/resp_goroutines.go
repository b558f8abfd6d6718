package server

import (
	"io"
	"math"
	"runtime/debug"
	"time"
)

// The goroutine I/O model (Config.RESPIO "goroutines"): each connection is
// served by a goroutine of its own, which blocks in reads, writes and
// commits. Its requests go through the same parser and executor as the
// event loop's.

// goroutineIO waits in place: the connection's goroutine blocks.
type goroutineIO struct{}

func (goroutineIO) flush(c *respConn) bool {
	if err := c.flush(); err != nil {
		c.quit = true
	}
	return true
}

func (goroutineIO) awaitWrite(c *respConn) bool {
	c.finishWrite(c.pending.commit.Wait())
	return false
}

// awaitBarrier runs the read in place: its store waits for the barrier.
func (goroutineIO) awaitBarrier(c *respConn, run func(*respConn, [][]byte), args [][]byte) bool {
	run(c, args)
	return false
}

// writeAsync waits in place: the connection's goroutine commits the
// write with WriteContext.
func (goroutineIO) writeAsync(c *respConn, _ asyncWriter) bool {
	writeBatch(c, nil)
	return false
}

func (goroutineIO) runSlow(c *respConn, run func(*respConn, [][]byte), args [][]byte) bool {
	run(c, args)
	return false
}

// serve serves c until it closes: each read's requests are run and their
// replies written in one write.
func (c *respConn) serve() {
	defer func() {
		if r := recover(); r != nil {
			// A bug, not bad input: input errors are replies. Keep the
			// process and every other connection alive.
			c.s.log.Error("resp connection panic", "conn", c.id, "remote", c.addr,
				"panic", r, "stack", string(debug.Stack()))
		}
		c.nc.Close()
		c.stopPusher()
		c.s.removeConn(c)
	}()
	c.s.log.Debug("resp connection open", "conn", c.id, "remote", c.addr)
	src := &idleReader{c: c}
	for {
		reqs, err := c.parser.ReadRequests(src)
		if err != nil {
			if c.readFailed(err) {
				c.nc.SetWriteDeadline(time.Now().Add(time.Second))
				c.flush()
				c.lingeringClose()
			}
			return
		}
		if !c.setBusy(true) {
			return
		}
		c.setRequests(reqs)
		turn := math.MaxInt
		c.runRequests(&turn) // never parks nor stalls: goroutineIO waits in place
		err = c.flush()
		c.announceWatches()
		c.setBusy(false)
		if err != nil || c.quit || c.s.closing.Load() {
			return
		}
		c.parser.shrink()
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

// lingeringClose sends FIN and drains what the client still sends for a
// moment before the connection is closed, so that closing with unread input
// (which makes the kernel send a reset) does not destroy the error reply
// before the client reads it.
func (c *respConn) lingeringClose() {
	tc, ok := c.nc.(closeWriter)
	if !ok || tc.CloseWrite() != nil {
		return
	}
	tc.SetReadDeadline(time.Now().Add(lingerTime))
	io.CopyN(io.Discard, tc, lingerBytes)
}

// idleReader reads c's socket, each read bounded by the idle timeout
// (CONFIG SET timeout) in force when it starts: a read that times out
// closes the connection.
type idleReader struct {
	c     *respConn
	armed bool
}

func (r *idleReader) Read(p []byte) (int, error) {
	// A connection with watches is not idle, as Redis does not time out
	// its subscribers.
	if d := time.Duration(r.c.s.idleTimeout.Load()); d > 0 && r.c.push.count.Load() == 0 {
		r.armed = true
		r.c.nc.SetReadDeadline(time.Now().Add(d))
	} else if r.armed {
		r.armed = false
		r.c.nc.SetReadDeadline(time.Time{})
	}
	return r.c.nc.Read(p)
}
