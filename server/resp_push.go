package server

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/watch"
)

// The change feed pushed over RESP: KVWATCH and KVUNWATCH, modelled on
// Redis's SUBSCRIBE and UNSUBSCRIBE (kvd's own names: Redis's WATCH is
// optimistic locking).
//
//	KVWATCH [KEY k | PREFIX p] [FROM rev] [DURABILITY durable|written] [PROGRESS ms]
//	    -> ["kvwatch", id, from, count]
//	KVUNWATCH [id ...]
//	    -> ["kvunwatch", [id, ...], count]
//
// then, for each watch, frames of its own, each naming the watch's id:
//
//	["kvchange", id, rev, [[op, key, value|nil], ...]]   a revision, whole
//	["kvprogress", id, rev]      every matching revision through rev was sent
//	["kvcompacted", id, oldest, requested]   behind the history: the watch ended
//	["kverror", id, message]     the store failed: the watch ended
//
// On RESP3 (after HELLO 3) these frames are push frames ('>') and the
// connection issues any command in between. On RESP2 they are arrays, and a
// connection with a watch open is in subscribed mode, as with SUBSCRIBE:
// only KVWATCH, KVUNWATCH, PING (answered ["pong", arg]), QUIT and RESET run
// until its last watch ends.
//
// Each watch is a watch.Watcher of the server's hub, so --watch-max bounds
// them and a slow consumer behaves as any watcher: the hub holds at most
// --watch-buffer changes for it, then it reads the history at its own pace,
// and it ends with kvcompacted once it falls behind the history. A
// connection takes more of a watcher only while its output holds less than
// maxPushOut bytes: a client that never reads costs the server at most that
// and a batch, never slows writers, and is compacted in time.
//
// The event loop serves watches without a goroutine each: a watcher that has
// more posts a message that wakes the loop (watch.Hub.WatchFunc), the loop
// takes what the watcher holds on its own thread (watch.Watcher.TryNext),
// and reads of the history, which can take long, run on a worker goroutine
// for one batch. The goroutine model gives a connection with watches one
// more goroutine, which writes their frames.

// Bounds of pushed watches.
const (
	maxPushOut          = 256 << 10 // output bytes past which a connection takes no more changes
	pushBatch           = 100       // changes taken from a watcher at a time (whole revisions)
	defaultPushProgress = 10 * time.Second
	minPushProgress     = 50 * time.Millisecond
	maxPushProgress     = 24 * time.Hour
)

// Frame kinds.
const (
	pushKindWatch     = "kvwatch"
	pushKindUnwatch   = "kvunwatch"
	pushKindChange    = "kvchange"
	pushKindProgress  = "kvprogress"
	pushKindCompacted = "kvcompacted"
	pushKindError     = "kverror"
)

// pushState is a connection's watches. The event loop keeps it on its own
// thread; in the goroutine model the connection's goroutine and its pusher
// share it under mu.
type pushState struct {
	mu      sync.Mutex
	watches []*pushWatch // open, in id order
	nextID  int64
	// count is len(watches), read without mu (subscribed mode, CLIENT LIST).
	count atomic.Int32
	// resp3: frames are push frames; a copy of respConn.resp3 the pusher
	// may read.
	resp3 atomic.Bool
	// omem is the output the connection holds, as of its last write or
	// push (CLIENT LIST omem).
	omem atomic.Int64

	// Event loop.
	posted atomic.Bool // a msgPush is on its way to the loop
	wanted bool        // take more of the watchers when the connection runs

	// Goroutine model.
	wake chan struct{} // a watcher has more (capacity 1)
	stop chan struct{} // closed when the connection closes
	done chan struct{} // closed when the pusher exits
}

// pushWatch is one KVWATCH.
type pushWatch struct {
	id    int64
	w     *watch.Watcher
	last  uint64 // the last revision sent or marked
	every time.Duration
	due   time.Time // when a progress mark is due if nothing else is sent
	// Event loop: signaled is set when the watcher has more; reading
	// while a worker reads the history for it; read holds what it read
	// until the connection takes it.
	signaled atomic.Bool
	reading  bool
	read     *pushRead
	// Goroutine model: announced is set once its KVWATCH reply is written:
	// its frames follow it.
	announced bool
	ended     bool // KVUNWATCH, RESET, the connection's close or its last frame ended it
}

// pushRead is what one Next of a watcher returned.
type pushRead struct {
	pw       *pushWatch
	sets     []engine.ChangeSet
	progress uint64
	err      error
}

// subscribed reports whether c is in RESP2 subscribed mode.
func (c *respConn) subscribed() bool {
	return !c.resp3 && c.push.count.Load() > 0
}

// subscribedAllowed reports whether cmd runs in subscribed mode.
func subscribedAllowed(cmd *respCommand) bool {
	switch cmd.name {
	case "kvwatch", "kvunwatch", "ping", "quit", "reset":
		return true
	}
	return false
}

// refuseSubscribed answers a command that subscribed mode does not allow,
// in Redis's words.
func (c *respConn) refuseSubscribed(cmd *respCommand) {
	c.writeError("ERR Can't execute '" + cmd.name + "': only KVWATCH / KVUNWATCH / PING / QUIT / RESET are allowed in this context")
}

// kvwatchRequest is KVWATCH's arguments.
type kvwatchRequest struct {
	filter  watch.Filter
	from    uint64
	written bool
	every   time.Duration
}

const kvwatchUsage = "KVWATCH [KEY k | PREFIX p] [FROM rev] [DURABILITY durable|written] [PROGRESS ms]"

// parseKVWatch parses KVWATCH's arguments; a non-empty message is the error
// to answer.
func (c *respConn) parseKVWatch(args [][]byte) (kvwatchRequest, string) {
	req := kvwatchRequest{filter: watch.Filter{Prefix: true}, every: defaultPushProgress}
	haveFrom, haveFilter := false, false
	for i := 0; i < len(args); i += 2 {
		if i+1 >= len(args) {
			return req, "ERR KVWATCH option '" + printable(args[i], 64) + "' needs a value: " + kvwatchUsage
		}
		opt, v := args[i], args[i+1]
		if ok, msg := parseFeedOption(opt, v, &req.from, &req.filter, &req.written, &haveFrom, &haveFilter); ok || msg != "" {
			if msg != "" {
				return req, msg
			}
			if equalFold(opt, "key") || equalFold(opt, "prefix") {
				if msg := c.checkWatchKey(v, equalFold(opt, "key")); msg != "" {
					return req, msg
				}
			}
			continue
		}
		switch {
		case equalFold(opt, "progress"):
			n, err := strconv.ParseInt(string(v), 10, 64)
			d := time.Duration(n) * time.Millisecond
			if err != nil || d < minPushProgress || d > maxPushProgress {
				return req, fmt.Sprintf("ERR PROGRESS must be milliseconds, %d to %d", minPushProgress.Milliseconds(), maxPushProgress.Milliseconds())
			}
			req.every = d
		default:
			return req, "ERR unknown KVWATCH option '" + printable(opt, 64) + "': " + kvwatchUsage
		}
	}
	return req, ""
}

// checkWatchKey checks KVWATCH's KEY as any key, and its PREFIX against
// the key size limit.
func (c *respConn) checkWatchKey(v []byte, isKey bool) string {
	if isKey {
		return c.checkKey(v)
	}
	if len(v) > c.s.cfg.MaxKeySize {
		return respErrKeyTooLarge + " (max " + strconv.Itoa(c.s.cfg.MaxKeySize) + " bytes)"
	}
	return ""
}

// cmdKVWatch answers KVWATCH (see the top of this file): it opens a watch
// and replies ["kvwatch", id, from, count], from being the first revision
// the watch may send and count the watches the connection has open. A FROM
// older than the history gets "-COMPACTED oldest=N requested=M", as
// CHANGES does.
func cmdKVWatch(c *respConn, args [][]byte) {
	req, msg := c.parseKVWatch(args[1:])
	if msg != "" {
		c.writeError(msg)
		return
	}
	s := c.s
	if s.watch.hub == nil {
		c.writeError("ERR " + errNoFeed.Error())
		return
	}
	if req.from == 0 {
		req.from = s.feedBound(req.written) + 1
	}
	if oldest := s.watch.feed.OldestRevision(); req.from < oldest {
		c.writeError(changesError(&engine.CompactedError{Oldest: oldest, Requested: req.from}))
		return
	}
	// due now: the first position goes out at once, as the SSE stream's.
	pw := &pushWatch{last: req.from - 1, every: req.every, due: time.Now()}
	w, err := s.watch.hub.WatchFunc(req.filter, req.from, req.written, c.io.pushNotify(c, pw))
	switch {
	case errors.Is(err, watch.ErrTooManyWatchers):
		c.writeError("ERR too many watchers (--watch-max)")
		return
	case err != nil:
		c.writeError("ERR " + err.Error())
		return
	}
	pw.w = w
	p := &c.push
	p.mu.Lock()
	p.nextID++
	pw.id = p.nextID
	p.watches = append(p.watches, pw)
	n := len(p.watches)
	p.count.Store(int32(n))
	p.resp3.Store(c.resp3)
	p.mu.Unlock()
	c.io.pushChanged(c, pw)

	c.writeArray(4)
	c.writeBulkString(pushKindWatch)
	c.writeInt(pw.id)
	c.writeInt(int64(req.from))
	c.writeInt(int64(n))
}

// cmdKVUnwatch answers KVUNWATCH [id ...]: it ends the watches named (all
// without an id) and replies ["kvunwatch", [id, ...], count], the ids it
// ended (an id that is not open, perhaps ended by kvcompacted, is left out)
// and the watches still open. No frame of an ended watch follows the reply.
func cmdKVUnwatch(c *respConn, args [][]byte) {
	var ids []int64 // nil: every watch
	for _, a := range args[1:] {
		id, ok := parseInt64(a)
		if !ok || id <= 0 {
			c.writeError("ERR KVUNWATCH takes watch ids (the positive integers KVWATCH returned), not '" + printable(a, 64) + "'")
			return
		}
		ids = append(ids, id)
	}
	ended, n := c.endWatches(ids)
	c.writeArray(3)
	c.writeBulkString(pushKindUnwatch)
	c.writeArray(len(ended))
	for _, id := range ended {
		c.writeInt(id)
	}
	c.writeInt(int64(n))
}

// endWatches ends c's watches with the given ids (nil: every one) and
// returns the ids it ended and the number still open.
func (c *respConn) endWatches(ids []int64) ([]int64, int) {
	p := &c.push
	p.mu.Lock()
	var ended []int64
	keep := p.watches[:0]
	for _, pw := range p.watches {
		if ids == nil || containsID(ids, pw.id) {
			pw.w.Close()
			pw.ended = true
			ended = append(ended, pw.id)
			continue
		}
		keep = append(keep, pw)
	}
	clear(p.watches[len(keep):])
	p.watches = keep
	n := len(keep)
	p.count.Store(int32(n))
	p.mu.Unlock()
	if len(ended) > 0 {
		c.io.pushChanged(c, nil)
	}
	return ended, n
}

func containsID(ids []int64, id int64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// dropWatch removes pw, which ended, from c's watches. Called with p.mu held
// in the goroutine model.
func (p *pushState) dropWatch(pw *pushWatch) {
	for i, x := range p.watches {
		if x == pw {
			p.watches = append(p.watches[:i], p.watches[i+1:]...)
			p.watches = p.watches[:len(p.watches):len(p.watches)]
			break
		}
	}
	pw.w.Close()
	pw.ended = true
	p.count.Store(int32(len(p.watches)))
}

// cmdReset answers RESET as Redis does: it ends the connection's watches
// and transaction, forgets WATCHed keys, its name and its CLIENT settings,
// and goes back to RESP2.
func cmdReset(c *respConn, _ [][]byte) {
	c.endWatches(nil)
	c.txn.reset()
	c.resp3 = false
	c.push.resp3.Store(false)
	c.name.Store(nil)
	c.durability = engine.DurabilityDefault
	c.readOpts = nil
	c.redirect = false
	// As Redis's RESET: the connection is the default user again, which,
	// when users are configured, means not authenticated.
	c.authName, c.authUser = "", nil
	c.shownUser.Store(nil)
	c.writeStatus("RESET")
}

// frames appends to b the frames of one Next of pw, r: a kvchange per
// revision, a kvprogress if nothing matched, the position moved and a mark
// is due, or the kvcompacted or kverror that ends the watch. It reports
// whether the watch ended.
func (pw *pushWatch) frames(b []byte, resp3 bool, r pushRead, now time.Time) ([]byte, bool) {
	if r.err != nil {
		var ce *engine.CompactedError
		switch {
		case errors.Is(r.err, watch.ErrClosed):
		case errors.As(r.err, &ce):
			b = appendPushHeader(b, resp3, 4)
			b = appendBulkString(b, pushKindCompacted)
			b = appendPrefix(b, ':', pw.id)
			b = appendPrefix(b, ':', int64(ce.Oldest))
			b = appendPrefix(b, ':', int64(ce.Requested))
		default:
			b = appendPushHeader(b, resp3, 3)
			b = appendBulkString(b, pushKindError)
			b = appendPrefix(b, ':', pw.id)
			b = appendBulkString(b, respError(r.err))
		}
		return b, true
	}
	for _, cs := range r.sets {
		b = appendPushHeader(b, resp3, 4)
		b = appendBulkString(b, pushKindChange)
		b = appendPrefix(b, ':', pw.id)
		b = appendPrefix(b, ':', int64(cs.Revision))
		b = appendPrefix(b, '*', int64(len(cs.Changes)))
		for _, ch := range cs.Changes {
			b = appendPrefix(b, '*', 3)
			if ch.Delete {
				b = appendBulkString(b, "del")
				b = appendBulkBytes(b, ch.Key)
				b = appendNull(b, resp3)
			} else {
				b = appendBulkString(b, "put")
				b = appendBulkBytes(b, ch.Key)
				b = appendBulkBytes(b, ch.Value)
			}
		}
		pw.last = cs.Revision
	}
	if len(r.sets) > 0 {
		pw.due = now.Add(pw.every)
		return b, false
	}
	if !now.Before(pw.due) {
		if r.progress > pw.last {
			b = appendPushHeader(b, resp3, 3)
			b = appendBulkString(b, pushKindProgress)
			b = appendPrefix(b, ':', pw.id)
			b = appendPrefix(b, ':', int64(r.progress))
			pw.last = r.progress
		}
		pw.due = now.Add(pw.every)
	}
	return b, false
}

func appendPushHeader(b []byte, resp3 bool, n int64) []byte {
	if resp3 {
		return appendPrefix(b, '>', n)
	}
	return appendPrefix(b, '*', n)
}

func appendBulkString(b []byte, s string) []byte {
	b = appendPrefix(b, '$', int64(len(s)))
	b = append(b, s...)
	return append(b, '\r', '\n')
}

func appendBulkBytes(b, p []byte) []byte {
	b = appendPrefix(b, '$', int64(len(p)))
	b = append(b, p...)
	return append(b, '\r', '\n')
}

func appendNull(b []byte, resp3 bool) []byte {
	if resp3 {
		return append(b, "_\r\n"...)
	}
	return append(b, "$-1\r\n"...)
}

// The goroutine model's pusher.

// pushNotify for the goroutine model: a watcher with more wakes the
// connection's pusher.
func (goroutineIO) pushNotify(c *respConn, _ *pushWatch) func() {
	p := &c.push
	if p.wake == nil {
		p.wake = make(chan struct{}, 1)
	}
	wake := p.wake
	return func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
}

// pushChanged starts c's pusher with its first watch.
func (goroutineIO) pushChanged(c *respConn, added *pushWatch) {
	p := &c.push
	if added == nil || p.stop != nil {
		return
	}
	p.stop = make(chan struct{})
	p.done = make(chan struct{})
	go c.runPusher()
}

// announceWatches lets the pusher send the frames of the watches whose
// KVWATCH replies the connection's goroutine has now written.
func (c *respConn) announceWatches() {
	p := &c.push
	if p.stop == nil {
		return
	}
	p.mu.Lock()
	woke := false
	for _, pw := range p.watches {
		if !pw.announced {
			pw.announced = true
			woke = true
		}
	}
	p.mu.Unlock()
	if woke {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// stopPusher ends c's watches and its pusher, once c is closed.
func (c *respConn) stopPusher() {
	c.endWatches(nil)
	p := &c.push
	if p.stop != nil {
		close(p.stop)
		<-p.done
	}
}

// runPusher writes the frames of c's watches as the watchers have more, and
// progress marks as they fall due. It writes under p.mu, so that no frame
// of a watch follows the KVUNWATCH that ended it, and each write whole, so
// that frames never split a reply.
func (c *respConn) runPusher() {
	p := &c.push
	defer close(p.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var buf []byte
	for {
		select {
		case <-p.wake:
		case <-timer.C:
		case <-p.stop:
			return
		}
		p.mu.Lock()
		now := time.Now()
		next := now.Add(time.Hour)
		resp3 := p.resp3.Load()
		var err error
		for _, pw := range append([]*pushWatch(nil), p.watches...) {
			if !pw.announced {
				continue
			}
			sets, progress, nerr := pw.w.Next(pushBatch)
			var ended bool
			buf, ended = pw.frames(buf, resp3, pushRead{sets: sets, progress: progress, err: nerr}, now)
			if ended {
				p.dropWatch(pw)
			} else {
				next = earlier(next, pw.due)
			}
			if len(buf) >= maxPushOut {
				if err = c.writePushes(buf); err != nil {
					break
				}
				buf = buf[:0]
			}
		}
		if err == nil && len(buf) > 0 {
			err = c.writePushes(buf)
		}
		p.mu.Unlock()
		if cap(buf) > maxKeepOut {
			buf = nil
		}
		buf = buf[:0]
		if err != nil {
			// The connection's goroutine sees the failure too and
			// closes it.
			c.nc.Close()
			<-p.stop
			return
		}
		timer.Reset(max(time.Until(next), time.Millisecond))
	}
}

// writePushes writes frames to c's socket in one write. Called with p.mu
// held.
func (c *respConn) writePushes(b []byte) error {
	c.push.omem.Store(int64(len(b)))
	_, err := c.nc.Write(b)
	c.push.omem.Store(0)
	return err
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
