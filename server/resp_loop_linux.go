package server

import (
	"errors"
	"io"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/replication"
)

const (
	haveEventLoop = true
	defaultRESPIO = "loop"
)

// The event loop.
//
// One goroutine serves every RESP connection over epoll (edge-triggered),
// as Redis does with its single thread. On a machine with few cores this is
// what makes unpipelined requests cheap: a request costs a read, the work
// and a write on the loop's thread, with no goroutine to wake per request.
//
// A pass of the loop:
//
//  1. epoll_wait; readable connections are marked ready.
//  2. Each ready connection runs its buffered commands in order until it has
//     none left or must wait (it is then "parked"):
//     - a run of plain SETs is submitted to the store as one batch without
//       waiting (Store.TrySubmit), and the connection parks on it; so is
//       the batch of any other write command (SET with options, DEL, MSET,
//       INCR...), whose reply the batch's results give once it is written;
//       when the store is over its memory bound, the batch is committed on
//       a worker goroutine instead, which waits for room;
//     - GET and other inline commands run on the loop;
//     - any other command runs on a worker goroutine while the connection
//       is parked, so that a slow command (SCAN, WAITAOF) never stalls the
//       loop.
//  3. One WaitWritten on the Commit of the newest submitted batch writes
//     the records of every client in one write(2) (the async
//     acknowledgement); each client's Commit then tells its own outcome,
//     at once, and whether it waits for an fsync (Commit.Sync: the store
//     decides).
//  4. If sync writes are parked, replies that need no fsync are written,
//     then one fsync covers every parked sync write (group commit: all the
//     clients whose requests arrived since the last fsync share it), and
//     their connections run on from step 2.
//  5. Replies are written, one write(2) per connection.
//
// Replies keep request order: a parked connection runs nothing after the
// command it waits for, and its replies are appended when the wait ends.

type parkState uint8

const (
	parkNone    parkState = iota
	parkWritten           // a write waits for its record to be written
	parkDurable           // ... and then fsynced
	parkWorker            // a worker goroutine runs one of its commands
)

// loopState is a connection's event-loop state.
type loopState struct {
	fd       int
	src      *fdReader
	park     parkState
	readable bool // input may be waiting: read until EAGAIN
	hup      bool // the peer closed or the socket failed: read until EOF
	ready    bool // in the ready or later list
	dirty    bool // in the dirty list
	stalled  bool // stopped running until its output drains
	closed   bool
	linger   time.Time // non-zero: draining input before close
	// active is when the connection last read or wrote, for the idle
	// timeout.
	active  time.Time
	drained int
}

// Limits of the loop's fairness.
const (
	maxCmdsPerTurn = 512                  // commands a connection runs before others get a turn
	yieldEvery     = 2 * time.Millisecond // see eventLoop.run
)

type msgKind uint8

const (
	msgConn     msgKind = iota // a new connection
	msgWorker                  // a worker finished a connection's command
	msgShutdown                // close idle connections, the rest when done
	msgCloseAll                // close every connection now
	msgKill                    // close one connection now (CLIENT KILL)
	msgPush                    // a KVWATCH watcher of the connection has more
	msgPushRead                // a worker read a watcher's history
	msgBarrier                 // a read barrier completed
)

type loopMsg struct {
	kind msgKind
	c    *respConn
	rev  uint64
	err  error
	read *pushRead // msgPushRead
	// waiters: msgBarrier's reads
	waiters []barrierWaiter
}

// barrierWaiter is a read parked until a read barrier completes.
type barrierWaiter struct {
	c    *respConn
	run  func(*respConn, [][]byte)
	args [][]byte
}

type eventLoop struct {
	s      *Server
	epfd   int
	wakefd int
	events []unix.EpollEvent
	conns  map[int64]*respConn // by connection id (the epoll data)

	inboxMu sync.Mutex
	stopped bool // under inboxMu: the loop has exited
	inbox   []loopMsg
	spare   []loopMsg
	woken   atomic.Bool

	ready     []*respConn // to run in this pass
	later     []*respConn // ran out of turn: run in the next pass
	dirty     []*respConn // output to write
	written   []*respConn // parkWritten, in revision order
	durable   []*respConn // parkDurable, in revision order
	lingering []*respConn

	workers int
	closing bool

	// Read barriers (a cluster's linearizable reads): the reads waiting
	// for the next, and whether one is running.
	barrierNext    []barrierWaiter
	barrierLin     bool
	barrierRunning bool

	lastIdleCheck time.Time

	// pushConns are the connections with KVWATCH watches; pushDue is when
	// the earliest progress mark may be due.
	pushConns map[*respConn]struct{}
	pushDue   time.Time
}

// startLoop starts the server's event loop if it is not running. Called with
// s.mu held.
func (s *Server) startLoop() (*eventLoop, error) {
	if s.loop != nil {
		return s.loop, nil
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN} // data 0: the wake-up fd
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return nil, err
	}
	l := &eventLoop{
		s:      s,
		epfd:   epfd,
		wakefd: wakefd,
		events: make([]unix.EpollEvent, 256),
		conns:  make(map[int64]*respConn),
	}
	s.loop = l
	// Not counted in s.bg: Shutdown waits for the connections, and the
	// loop exits on its own once they and its workers and fsync are done,
	// which after a forced close may be later than Shutdown returns.
	go l.run()
	return l, nil
}

// adopt moves an accepted connection, already counted by addConn, onto the
// loop: the loop reads and writes a duplicate of its socket, and the
// net.Conn is closed so that the runtime's poller lets go of it.
func (l *eventLoop) adopt(c *respConn) error {
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		return errors.New("connection has no file descriptor")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	fd := -1
	cerr := raw.Control(func(s uintptr) {
		fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	})
	if cerr != nil {
		return cerr
	}
	if err != nil {
		return err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return err
	}
	c.nc.Close()
	c.nc = nil
	c.lp.fd = fd
	c.lp.src = &fdReader{fd: fd}
	c.io = l
	l.post(loopMsg{kind: msgConn, c: c})
	return nil
}

// post hands m to the loop and wakes it. Safe from any goroutine; a no-op
// once the loop has stopped.
func (l *eventLoop) post(m loopMsg) {
	l.inboxMu.Lock()
	defer l.inboxMu.Unlock()
	if l.stopped {
		return
	}
	l.inbox = append(l.inbox, m)
	if !l.woken.Swap(true) {
		one := [8]byte{1}
		unix.Write(l.wakefd, one[:])
	}
}

// fdReader reads a non-blocking socket.
type fdReader struct {
	fd int
	// drained: the last read emptied the socket's receive queue (it
	// returned less than asked). With edge-triggered epoll, input arriving
	// later raises a new event, so the loop need not read again to see
	// EAGAIN: that saves a system call per request.
	drained bool
}

func (r *fdReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		// Not a raw system call, though the socket never blocks: the
		// garbage collector can scan a goroutine it knows to be in a
		// system call, but must stop one in a raw call by signals, which
		// costs more than the scheduler hooks save.
		n, err := unix.Read(r.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			r.drained = true
			return 0, errWouldBlock
		case err != nil:
			return 0, err
		case n == 0:
			return 0, io.EOF
		}
		r.drained = n < len(p)
		return n, nil
	}
}

func rawWrite(fd int, p []byte) (int, error) {
	for {
		n, err := unix.Write(fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return 0, errWouldBlock
		case err != nil:
			return 0, err
		}
		return n, nil
	}
}

func (l *eventLoop) run() {
	defer func() {
		l.inboxMu.Lock()
		l.stopped = true
		l.inboxMu.Unlock()
		unix.Close(l.epfd)
		unix.Close(l.wakefd)
	}()
	// The loop never blocks in the Go scheduler: it waits in epoll_wait,
	// a system call. Go's sysmon takes a goroutine that has run for 10ms
	// without being scheduled for one that hogs its P: it signals it, takes
	// the P away when it is in a system call, and then polls every 20µs
	// for the next millisecond or more. Under load that was thousands of
	// sysmon wake-ups a second, 5% of kvd's CPU. Yielding now and then
	// tells the scheduler the loop is well: bench/cpu.sh measured about 8%
	// less CPU per request and a third fewer context switches.
	lastYield := time.Now()
	for {
		if now := time.Now(); now.Sub(lastYield) > yieldEvery {
			runtime.Gosched()
			lastYield = now
		}
		timeout := -1
		switch {
		case len(l.later) > 0:
			timeout = 0
		case len(l.lingering) > 0:
			timeout = 100
		case l.s.idleTimeout.Load() > 0:
			timeout = 1000 // for closeIdle
		}
		if len(l.pushConns) > 0 && timeout != 0 {
			d := int(max(time.Until(l.pushDue), 0)/time.Millisecond) + 1
			if timeout < 0 || d < timeout {
				timeout = d
			}
		}
		n, err := unix.EpollWait(l.epfd, l.events, timeout)
		if err != nil && err != unix.EINTR {
			// Not expected with valid descriptors: keep serving.
			l.s.log.Error("resp event loop: epoll_wait", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		l.ready = append(l.ready, l.later...)
		clear(l.later)
		l.later = l.later[:0]
		for _, ev := range l.events[:max(n, 0)] {
			id := int64(ev.Fd) | int64(ev.Pad)<<32
			if id == 0 {
				l.readInbox()
				continue
			}
			c := l.conns[id]
			if c == nil {
				continue
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				c.lp.readable = true
				l.markReady(c)
			}
			if ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				// No event will follow the end of input: read to EOF.
				c.lp.hup = true
			}
			if ev.Events&unix.EPOLLOUT != 0 && c.lp.park != parkWorker && (c.lp.stalled || len(c.out) > 0) {
				l.markReady(c)
			}
		}
		l.pushTick(time.Now())
		l.settle()
		for l.syncParked() {
			l.settle()
		}
		l.writeReplies()
		l.reapLingering()
		l.closeIdle()
		if l.closing && len(l.conns) == 0 && l.workers == 0 {
			return
		}
	}
}

func (l *eventLoop) readInbox() {
	var buf [8]byte
	unix.Read(l.wakefd, buf[:])
	l.woken.Store(false)
	l.inboxMu.Lock()
	msgs := l.inbox
	l.inbox = l.spare[:0]
	l.inboxMu.Unlock()
	for i, m := range msgs {
		l.handle(m)
		msgs[i] = loopMsg{}
	}
	l.spare = msgs[:0]
}

func (l *eventLoop) handle(m loopMsg) {
	switch m.kind {
	case msgConn:
		c := m.c
		ev := unix.EpollEvent{
			Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET,
			Fd:     int32(c.id),
			Pad:    int32(c.id >> 32),
		}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, c.lp.fd, &ev); err != nil {
			l.s.log.Warn("resp event loop: epoll_ctl", "err", err)
			unix.Close(c.lp.fd)
			c.lp.closed = true
			l.s.removeConn(c)
			return
		}
		l.conns[c.id] = c
		c.lp.readable = true
		c.lp.active = time.Now()
		if l.closing {
			l.closeConn(c)
			return
		}
		l.markReady(c)
	case msgWorker:
		l.workers--
		if c := m.c; !c.lp.closed {
			c.lp.park = parkNone
			l.markReady(c)
		}
	case msgShutdown:
		l.closing = true
		for _, c := range l.conns {
			if l.idle(c) {
				l.closeConn(c)
			}
		}
	case msgKill:
		if c, ok := l.conns[m.c.id]; ok {
			l.closeConn(c)
		}
	case msgPush:
		c := m.c
		c.push.posted.Store(false)
		if !c.lp.closed {
			c.push.wanted = true
			l.markReady(c)
		}
	case msgPushRead:
		l.workers--
		c, r := m.c, m.read
		r.pw.reading = false
		if !c.lp.closed && !r.pw.ended {
			r.pw.read = r
			c.push.wanted = true
			l.markReady(c)
		}
	case msgBarrier:
		l.workers--
		l.barrierRunning = false
		for _, w := range m.waiters {
			l.finishBarrier(w, m.err)
		}
		if len(l.barrierNext) > 0 {
			l.startBarrier()
		}
	case msgCloseAll:
		l.closing = true
		for _, c := range l.conns {
			l.closeConn(c)
		}
	}
}

// idle reports whether c has nothing in progress: no command read and not
// yet answered, no reply unsent.
func (l *eventLoop) idle(c *respConn) bool {
	return c.lp.park == parkNone && c.next == len(c.reqs) && len(c.out) == 0
}

func (l *eventLoop) markReady(c *respConn) {
	if !c.lp.ready && !c.lp.closed {
		c.lp.ready = true
		l.ready = append(l.ready, c)
	}
}

func (l *eventLoop) markDirty(c *respConn) {
	if !c.lp.dirty {
		c.lp.dirty = true
		l.dirty = append(l.dirty, c)
	}
}

// settle runs ready connections, and writes the records they submitted,
// until every connection is parked on an fsync or a worker, out of input,
// or out of its turn.
func (l *eventLoop) settle() {
	for len(l.ready) > 0 || len(l.written) > 0 {
		for len(l.ready) > 0 {
			c := l.ready[len(l.ready)-1]
			l.ready[len(l.ready)-1] = nil
			l.ready = l.ready[:len(l.ready)-1]
			c.lp.ready = false
			l.serve(c)
		}
		if len(l.written) == 0 {
			break
		}
		w := l.written
		w[len(w)-1].pending.commit.WaitWritten() // writes them all
		for _, c := range w {
			if c.lp.closed {
				continue
			}
			// A failed log write may have refused some of them and not
			// others: each batch says.
			err := c.pending.commit.WaitWritten()
			if err == nil && c.pending.commit.Sync() {
				c.lp.park = parkDurable
				l.durable = append(l.durable, c)
				continue
			}
			l.complete(c, err) // marks c ready; serves nothing yet
		}
		clear(w)
		l.written = w[:0]
	}
}

// syncParked fsyncs the log for the parked sync writes on the loop itself,
// and reports whether there were any. Replies that need no fsync are
// written first, so that reads and async writes do not wait for the disk.
//
// The loop blocks during the fsync, as Redis's does with appendfsync
// always; requests that arrive meanwhile are read in the next pass and
// share the next fsync. Handing fsyncs to a goroutine, so that the loop
// runs on during them (commit f29ab1e), measured slower and used more CPU
// per request on a 2-vCPU machine (see bench/RESULTS.md,
// bench/cpu.sh): the wake-ups per fsync cost more than the overlap saves.
// Deployments that want reads never to wait behind an fsync can serve RESP
// with one goroutine per connection instead (Config.RESPIO "goroutines").
func (l *eventLoop) syncParked() bool {
	if len(l.durable) == 0 {
		return false
	}
	l.writeReplies()
	l.durable[len(l.durable)-1].pending.commit.WaitDurable() // one fsync for all
	for i, c := range l.durable {
		l.complete(c, c.pending.commit.WaitDurable())
		l.durable[i] = nil
	}
	l.durable = l.durable[:0]
	return true
}

// complete ends the wait of a parked write: its replies are appended and
// the connection runs on.
func (l *eventLoop) complete(c *respConn, err error) {
	if c.lp.closed {
		return
	}
	c.finishWrite(err)
	c.lp.park = parkNone
	l.markReady(c)
}

// serve runs c's requests, reading more as they run out, until c parks,
// runs out of input or of its turn.
func (l *eventLoop) serve(c *respConn) {
	defer func() {
		if r := recover(); r != nil {
			// A bug, not bad input: input errors are replies.
			l.s.log.Error("resp connection panic", "conn", c.id, "remote", c.addr,
				"panic", r, "stack", string(debug.Stack()))
			l.closeConn(c)
		}
	}()
	if c.lp.closed || c.lp.park != parkNone {
		return
	}
	if !c.lp.linger.IsZero() {
		l.drain(c)
		return
	}
	l.markDirty(c)
	if c.push.wanted {
		l.pump(c)
		if c.lp.closed {
			return
		}
	}
	turn := maxCmdsPerTurn
	for !c.lp.closed {
		switch c.runRequests(&turn) {
		case runParked:
			return
		case runStalled:
			c.lp.stalled = true
			return
		case runTurnOver:
			c.lp.stalled = false
			c.lp.ready = true
			l.later = append(l.later, c)
			return
		}
		c.lp.stalled = false
		if c.quit || l.closing {
			l.closeAfterReplies(c)
			return
		}
		if !c.lp.readable {
			c.parser.shrink()
			return
		}
		c.setRequests(nil)
		c.lp.src.drained = false // set again only by a read in this call
		c.lp.active = time.Now()
		reqs, err := c.parser.ReadRequests(c.lp.src)
		switch {
		case err == errWouldBlock:
			c.lp.readable = false
		case err != nil:
			l.readError(c, err)
			return
		default:
			c.setRequests(reqs)
			if c.lp.src.drained && !c.lp.hup && !c.parser.pending() {
				c.lp.readable = false
			}
		}
	}
}

// awaitWrite parks c until its write is written (and fsynced): settle and
// syncParked wait for the writes of every connection at once.
func (l *eventLoop) awaitWrite(c *respConn) bool {
	c.lp.park = parkWritten
	l.written = append(l.written, c)
	return true
}

// runSlow parks c and runs one of its commands on a goroutine of its own, so
// that a command that may block (SCAN, WAITAOF, a write that waits for
// memory) never stalls the loop; c returns to the loop when it is done.
func (l *eventLoop) runSlow(c *respConn, run func(*respConn, [][]byte), args [][]byte) bool {
	c.lp.park = parkWorker
	l.workers++
	go l.work(c, run, args)
	return true
}

// awaitBarrier parks c until a read barrier that starts after this call
// completes, then runs the read on the loop from this node's state: the
// reads of every connection that arrive while a barrier runs share the
// next one. Reads that need more than a barrier (a minimum revision, a
// bound on staleness) run on a worker.
func (l *eventLoop) awaitBarrier(c *respConn, run func(*respConn, [][]byte), args [][]byte) bool {
	cons, ok := c.barrierConsistency()
	if !ok || cons == replication.Stale || l.s.localReads == nil {
		return l.runSlow(c, run, args)
	}
	c.lp.park = parkWorker
	l.barrierNext = append(l.barrierNext, barrierWaiter{c, run, args})
	l.barrierLin = l.barrierLin || cons == replication.Linearizable
	if !l.barrierRunning {
		l.startBarrier()
	}
	return true
}

// startBarrier runs a read barrier for the reads waiting for one.
func (l *eventLoop) startBarrier() {
	ws, cons := l.barrierNext, replication.Leader
	if l.barrierLin {
		cons = replication.Linearizable
	}
	l.barrierNext, l.barrierLin = nil, false
	l.barrierRunning = true
	l.workers++
	view := l.s.store.(clusterReads).At(replication.ReadOptions{Consistency: cons})
	go func() {
		l.post(loopMsg{kind: msgBarrier, err: view.Barrier(), waiters: ws})
	}()
}

// finishBarrier runs w's read once its barrier completed with err.
func (l *eventLoop) finishBarrier(w barrierWaiter, err error) {
	c := w.c
	if c.lp.closed {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			l.s.log.Error("resp connection panic", "conn", c.id, "remote", c.addr,
				"panic", r, "stack", string(debug.Stack()))
			l.closeConn(c)
		}
	}()
	c.lp.park = parkNone
	if err != nil {
		c.writeError(respError(err))
	} else {
		c.barrierOK = true
		w.run(c, w.args)
	}
	l.markReady(c)
}

// writeAsync parks c until its write, committed by w, is acknowledged:
// the store's goroutine answers it and hands c back to the loop.
func (l *eventLoop) writeAsync(c *respConn, w asyncWriter) bool {
	c.lp.park = parkWorker
	l.workers++
	w.WriteAsync(&c.batch, writeOptions(c.pending.d), func(cm engine.Commit, err error) {
		// Answered as a worker's command is, on the store's goroutine.
		l.work(c, func(c *respConn, _ [][]byte) {
			c.pending.commit = cm
			c.finishWrite(err)
		}, nil)
	})
	return true
}

func (l *eventLoop) work(c *respConn, run func(*respConn, [][]byte), args [][]byte) {
	defer func() {
		if r := recover(); r != nil {
			l.s.log.Error("resp connection panic", "conn", c.id, "remote", c.addr,
				"panic", r, "stack", string(debug.Stack()))
			c.quit = true
		}
		l.post(loopMsg{kind: msgWorker, c: c})
	}()
	run(c, args)
}

// flush writes c's pending replies. It returns true if they are all
// written, false if the socket is full (the loop resumes on EPOLLOUT) or
// the connection failed and was closed.
func (l *eventLoop) flush(c *respConn) bool {
	for len(c.out) > 0 {
		n, err := rawWrite(c.lp.fd, c.out)
		if err == errWouldBlock {
			c.push.omem.Store(int64(len(c.out)))
			return false
		}
		if err != nil {
			l.closeConn(c)
			return false
		}
		c.lp.active = time.Now()
		if n == len(c.out) {
			c.outWritten()
			break
		}
		c.out = c.out[:copy(c.out, c.out[n:])]
	}
	c.push.omem.Store(int64(len(c.out)))
	return true
}

// writeReplies writes the replies produced in this pass.
func (l *eventLoop) writeReplies() {
	for i, c := range l.dirty {
		l.dirty[i] = nil
		c.lp.dirty = false
		if c.lp.closed || c.lp.park == parkWorker {
			continue // a worker owns c.out; the loop writes it when it is back
		}
		if l.flush(c) && c.lp.linger.IsZero() && (c.quit || l.closing) && l.idle(c) {
			l.closeConn(c)
		}
	}
	l.dirty = l.dirty[:0]
}

// closeAfterReplies closes c once its replies are written.
func (l *eventLoop) closeAfterReplies(c *respConn) {
	if len(c.out) == 0 || l.flush(c) {
		l.closeConn(c)
	}
	// Otherwise writeReplies or the next EPOLLOUT retries and closes.
}

// readError answers a malformed frame with a protocol error, as Redis does,
// then lingers before closing; other errors (EOF, reset) close c.
func (l *eventLoop) readError(c *respConn, err error) {
	if !c.readFailed(err) {
		l.closeConn(c)
		return
	}
	l.flush(c)
	if c.lp.closed {
		return
	}
	// As lingeringClose: send FIN, drain what the client still sends for a
	// moment, so that the reply is not destroyed by a reset.
	unix.Shutdown(c.lp.fd, unix.SHUT_WR)
	c.lp.linger = time.Now().Add(lingerTime)
	l.lingering = append(l.lingering, c)
	l.drain(c)
}

// drain reads and discards the input of a lingering connection, closing it
// at EOF or past its byte budget.
func (l *eventLoop) drain(c *respConn) {
	var buf [4096]byte
	for !c.lp.closed {
		n, err := c.lp.src.Read(buf[:])
		if err == errWouldBlock {
			return
		}
		c.lp.drained += n
		if err != nil || c.lp.drained > lingerBytes {
			l.closeConn(c)
		}
	}
}

func (l *eventLoop) reapLingering() {
	if len(l.lingering) == 0 {
		return
	}
	now := time.Now()
	keep := l.lingering[:0]
	for _, c := range l.lingering {
		if !c.lp.closed && now.After(c.lp.linger) {
			l.closeConn(c)
		}
		if !c.lp.closed {
			keep = append(keep, c)
		}
	}
	clear(l.lingering[len(keep):])
	l.lingering = keep
}

// closeIdle closes, once a second, the connections that neither read nor
// wrote for the idle timeout (CONFIG SET timeout), unless a command of
// theirs is running.
func (l *eventLoop) closeIdle() {
	d := time.Duration(l.s.idleTimeout.Load())
	if d <= 0 {
		return
	}
	now := time.Now()
	if now.Sub(l.lastIdleCheck) < time.Second {
		return
	}
	l.lastIdleCheck = now
	for _, c := range l.conns {
		// Connections with watches are not idle, as Redis does not time
		// out its subscribers.
		if c.lp.park == parkNone && c.lp.linger.IsZero() && now.Sub(c.lp.active) > d && c.push.count.Load() == 0 {
			l.s.log.Debug("resp connection idle: closed", "conn", c.id, "remote", c.addr)
			l.closeConn(c)
		}
	}
}

// closeConn closes c. A worker still running one of its commands finishes
// and hands it back to be dropped.
func (l *eventLoop) closeConn(c *respConn) {
	if c.lp.closed {
		return
	}
	c.lp.closed = true
	unix.Close(c.lp.fd)
	delete(l.conns, c.id)
	c.endWatches(nil)
	delete(l.pushConns, c)
	c.s.removeConn(c)
}

// adoptConn hands an accepted connection, already counted by addConn, to
// the event loop, starting the loop if needed. It holds s.mu so that
// Shutdown sees the connection either before (and closes its net.Conn) or
// after it is on the loop.
func (s *Server) adoptConn(c *respConn) {
	s.mu.Lock()
	var err error
	if s.closing.Load() {
		err = ErrServerClosed
	} else {
		var l *eventLoop
		if l, err = s.startLoop(); err == nil {
			err = l.adopt(c)
		}
	}
	s.mu.Unlock()
	if err != nil {
		if !errors.Is(err, ErrServerClosed) {
			s.log.Warn("resp event loop: adopt connection", "err", err)
		}
		if c.nc != nil {
			c.nc.Close()
		}
		s.removeConn(c)
	}
}

// KVWATCH on the loop (see resp_push.go).

// pushNotify for the event loop: a watcher with more marks its watch and
// posts a message that wakes the loop, one for the connection however many
// of its watchers have more.
func (l *eventLoop) pushNotify(c *respConn, pw *pushWatch) func() {
	return func() {
		pw.signaled.Store(true)
		if !c.push.posted.Swap(true) {
			l.post(loopMsg{kind: msgPush, c: c})
		}
	}
}

// pushChanged keeps l.pushConns to the connections with watches.
func (l *eventLoop) pushChanged(c *respConn, added *pushWatch) {
	if c.lp.closed || c.push.count.Load() == 0 {
		delete(l.pushConns, c)
		return
	}
	if l.pushConns == nil {
		l.pushConns = map[*respConn]struct{}{}
	}
	l.pushConns[c] = struct{}{}
	if added != nil && (l.pushDue.IsZero() || added.due.Before(l.pushDue)) {
		l.pushDue = added.due
	}
}

// pushTick has the connections whose watches owe a progress mark take
// their watchers' positions.
func (l *eventLoop) pushTick(now time.Time) {
	if len(l.pushConns) == 0 || now.Before(l.pushDue) {
		return
	}
	next := now.Add(maxPushProgress)
	for c := range l.pushConns {
		for _, pw := range c.push.watches {
			if now.Before(pw.due) {
				next = earlier(next, pw.due)
				continue
			}
			next = earlier(next, now.Add(pw.every))
			c.push.wanted = true
			l.markReady(c)
		}
	}
	l.pushDue = next
}

// pump takes what c's watchers hold into c's output, while it is under
// maxPushOut bytes (past it c takes more once its socket drains), and hands
// the history reads of the watchers that are catching up to workers.
func (l *eventLoop) pump(c *respConn) {
	p := &c.push
	p.wanted = false
	now := time.Now()
	for i := 0; i < len(p.watches); {
		pw := p.watches[i]
		if len(c.out) >= maxPushOut && !l.flush(c) {
			p.wanted = true
			break
		}
		var r pushRead
		switch {
		case pw.read != nil:
			r, pw.read = *pw.read, nil
		case pw.reading || (!pw.signaled.Load() && now.Before(pw.due)):
			i++ // nothing new, no mark due
			continue
		default:
			pw.signaled.Store(false) // before TryNext, which may set it again
			sets, progress, ok, err := pw.w.TryNext(pushBatch)
			if !ok {
				l.readHistory(c, pw)
				i++
				continue
			}
			r = pushRead{sets: sets, progress: progress, err: err}
		}
		var ended bool
		c.out, ended = pw.frames(c.out, c.resp3, r, now)
		if ended {
			p.dropWatch(pw)
			continue
		}
		i++
	}
	if c.lp.closed {
		return
	}
	if len(p.watches) == 0 {
		l.pushChanged(c, nil)
	}
	p.omem.Store(int64(len(c.out)))
}

// readHistory reads a batch of pw's history on a worker goroutine, as the
// history may be long to scan: the loop sends it when it is back.
func (l *eventLoop) readHistory(c *respConn, pw *pushWatch) {
	pw.reading = true
	l.workers++
	go func() {
		sets, progress, err := pw.w.Next(pushBatch)
		l.post(loopMsg{kind: msgPushRead, c: c, read: &pushRead{pw: pw, sets: sets, progress: progress, err: err}})
	}()
}
