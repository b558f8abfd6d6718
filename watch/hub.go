// Package watch delivers a store's change history (engine.DB.Changes) to
// many watchers at once: a Hub reads each new revision once and hands its
// changes to the watchers whose key or prefix they match, into bounded
// per-watcher buffers. A watcher that falls behind (its buffer full, or
// started from an old revision) catches up from the history at its own
// pace, and is ended with a CompactedError only once the revision it needs
// is older than the history keeps. Writers never wait for watchers, and the
// memory a slow watcher holds is bounded by Options.Buffer.
//
// Exact keys are indexed in a map; prefixes in a map per prefix length, so
// that a key is matched against every prefix with one lookup per distinct
// length. One goroutine (the hub's) dispatches; watchers are read by their
// consumers (an HTTP stream, a RESP connection) with Next, which never
// blocks, and Ready, which signals that Next has more.
//
// Durability: a watcher sees either durable revisions only (the default:
// a revision it sees cannot be lost by a power failure) or written ones
// (sooner; in async commit mode a power loss may take back a revision the
// watcher has seen, and the store then reuses its number for another
// write).
package watch

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/kvdstore/kvd/engine"
)

// Source is the store a Hub reads: *engine.DB implements it.
type Source interface {
	Changes(from uint64, match func(key []byte) bool, max int, upTo uint64) ([]engine.ChangeSet, uint64, error)
	ChangesNotify() <-chan struct{}
	WrittenRevision() uint64
	DurableRevision() uint64
}

// Options configures a Hub. The zero value is valid.
type Options struct {
	// MaxWatchers bounds the watchers open at once (default 10,000).
	MaxWatchers int
	// Buffer bounds the changes a watcher holds undelivered (default
	// 1024): past it, it drops them and catches up from the history.
	Buffer int
}

// Defaults of Options.
const (
	DefaultMaxWatchers = 10_000
	DefaultBuffer      = 1024
)

var (
	// ErrTooManyWatchers is returned by Watch when MaxWatchers are open.
	ErrTooManyWatchers = errors.New("watch: too many watchers")
	// ErrClosed is returned by a watcher whose hub, or itself, is closed.
	ErrClosed = errors.New("watch: closed")
)

// Filter selects keys: Key itself, or with Prefix every key that starts
// with Key (an empty prefix: every key).
type Filter struct {
	Key    []byte
	Prefix bool
}

// Match reports whether key passes f.
func (f Filter) Match(key []byte) bool {
	if f.Prefix {
		return len(key) >= len(f.Key) && string(key[:len(f.Key)]) == string(f.Key)
	}
	return string(key) == string(f.Key)
}

// Hub dispatches new revisions to watchers. Its methods are safe for
// concurrent use.
type Hub struct {
	src  Source
	opts Options

	mu       sync.Mutex
	lanes    [2]lane // durable, written
	watchers map[*Watcher]struct{}
	closed   bool

	sent, compacted, overflows atomic.Uint64

	// wake tells an idle hub (no watchers) that one was added.
	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

// lane is the dispatch of one delivery bound (durable or written).
type lane struct {
	// next is the first revision not yet dispatched: every live watcher
	// has been given each matching revision below it.
	next     uint64
	exact    map[string]map[*Watcher]struct{}
	prefixes map[string]map[*Watcher]struct{}
	lens     []int // distinct prefix lengths, ascending
	live     int
}

// NewHub starts a hub over src. Close stops it.
func NewHub(src Source, opts Options) *Hub {
	if opts.MaxWatchers <= 0 {
		opts.MaxWatchers = DefaultMaxWatchers
	}
	if opts.Buffer <= 0 {
		opts.Buffer = DefaultBuffer
	}
	h := &Hub{src: src, opts: opts, watchers: map[*Watcher]struct{}{}, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	for i := range h.lanes {
		h.lanes[i] = lane{next: h.bound(i) + 1, exact: map[string]map[*Watcher]struct{}{}, prefixes: map[string]map[*Watcher]struct{}{}}
	}
	go h.run()
	return h
}

func (h *Hub) bound(l int) uint64 {
	if l == laneWritten {
		return h.src.WrittenRevision()
	}
	return h.src.DurableRevision()
}

const (
	laneDurable = 0
	laneWritten = 1
)

// Close ends every watcher (ErrClosed) and stops the hub.
func (h *Hub) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	for w := range h.watchers {
		w.fail(ErrClosed)
	}
	h.mu.Unlock()
	close(h.stop)
	<-h.done
}

// run dispatches each advance of the revisions while there are watchers.
// Without any it waits for one instead, so that writes wake nothing: the
// lanes' next revisions move on when the first watcher comes (WatchFunc).
func (h *Hub) run() {
	defer close(h.done)
	for {
		h.mu.Lock()
		idle := len(h.watchers) == 0
		h.mu.Unlock()
		var ch <-chan struct{}
		if !idle {
			ch = h.src.ChangesNotify()
			h.dispatch()
		}
		select {
		case <-ch:
		case <-h.wake:
		case <-h.stop:
			return
		}
	}
}

// dispatch reads the revisions each lane has not dispatched, once for all
// its watchers, and hands them out.
func (h *Hub) dispatch() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := range h.lanes {
		ln := &h.lanes[i]
		bound := h.bound(i)
		if bound < ln.next {
			continue
		}
		// Only the changes a watcher wants are copied out of the history:
		// idle watchers (whose keys are not written), or none, cost no
		// copy.
		sets, next, err := h.src.Changes(ln.next, ln.wants, 0, bound)
		if err != nil {
			// Behind the history (the hub cannot be, short of a stall
			// longer than the retention): every live watcher catches up
			// and finds out for itself.
			h.dropAll(ln)
			continue
		}
		for _, cs := range sets {
			h.hand(ln, cs)
		}
		ln.next = next
	}
}

// watchersOf calls f with each set of ln's live watchers that key matches
// (its exact key's, then each prefix's), while f returns true. Called with
// the hub's mu held.
func (ln *lane) watchersOf(key []byte, f func(ws map[*Watcher]struct{}) bool) {
	if ws := ln.exact[string(key)]; len(ws) > 0 && !f(ws) {
		return
	}
	for _, n := range ln.lens {
		if n > len(key) {
			return
		}
		if ws := ln.prefixes[string(key[:n])]; len(ws) > 0 && !f(ws) {
			return
		}
	}
}

// wants reports whether a live watcher of ln matches key. Called with the
// hub's mu held.
func (ln *lane) wants(key []byte) bool {
	found := false
	ln.watchersOf(key, func(map[*Watcher]struct{}) bool { found = true; return false })
	return found
}

// hand gives cs's changes to every live watcher of ln they match.
func (h *Hub) hand(ln *lane, cs engine.ChangeSet) {
	var got map[*Watcher][]engine.Change
	for _, c := range cs.Changes {
		ln.watchersOf(c.Key, func(ws map[*Watcher]struct{}) bool {
			for w := range ws {
				if cs.Revision < w.from {
					continue
				}
				if got == nil {
					got = map[*Watcher][]engine.Change{}
				}
				got[w] = append(got[w], c)
			}
			return true
		})
	}
	for w, changes := range got {
		if w.buffered > 0 && w.buffered+len(changes) > h.opts.Buffer {
			// Full: the watcher drops what it holds and reads it again
			// from the history, at its own pace.
			h.overflows.Add(1)
			w.pos = w.buf[0].Revision
			h.unindex(ln, w)
			w.signal()
			continue
		}
		w.buf = append(w.buf, engine.ChangeSet{Revision: cs.Revision, Time: cs.Time, Changes: changes})
		w.buffered += len(changes)
		w.signal()
	}
}

func (h *Hub) dropAll(ln *lane) {
	for w := range h.watchers {
		if w.live && &h.lanes[w.lane] == ln {
			if len(w.buf) > 0 {
				w.pos = w.buf[0].Revision
			} else {
				w.pos = max(ln.next, w.from)
			}
			h.unindex(ln, w)
			w.signal()
		}
	}
}

func (h *Hub) index(ln *lane, w *Watcher) {
	m := ln.exact
	if w.filter.Prefix {
		m = ln.prefixes
		if n := len(w.filter.Key); !slices.Contains(ln.lens, n) {
			ln.lens = append(ln.lens, n)
			slices.Sort(ln.lens)
		}
	}
	k := string(w.filter.Key)
	if m[k] == nil {
		m[k] = map[*Watcher]struct{}{}
	}
	m[k][w] = struct{}{}
	w.live = true
	ln.live++
}

// unindex takes w out of ln's index: it is in catch-up (or closed) then,
// its buffer dropped.
func (h *Hub) unindex(ln *lane, w *Watcher) {
	if !w.live {
		return
	}
	w.live = false
	w.buf, w.buffered = nil, 0
	ln.live--
	m := ln.exact
	if w.filter.Prefix {
		m = ln.prefixes
	}
	k := string(w.filter.Key)
	delete(m[k], w)
	if len(m[k]) == 0 {
		delete(m, k)
		if w.filter.Prefix {
			n := len(w.filter.Key)
			still := false
			for p := range ln.prefixes {
				if len(p) == n {
					still = true
					break
				}
			}
			if !still {
				ln.lens = slices.DeleteFunc(ln.lens, func(x int) bool { return x == n })
			}
		}
	}
}

// Stats are a hub's figures, for metrics.
type Stats struct {
	Live, CatchingUp int
	// Sent counts the changes watchers took; Compacted the watchers ended
	// behind the history; Overflows the times a watcher's buffer filled.
	Sent, Compacted, Overflows uint64
	// MaxLag is the largest number of revisions a watcher is behind its
	// lane's bound.
	MaxLag uint64
}

// Stats returns the hub's figures.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := Stats{Sent: h.sent.Load(), Compacted: h.compacted.Load(), Overflows: h.overflows.Load()}
	bounds := [2]uint64{h.bound(0), h.bound(1)}
	for w := range h.watchers {
		if w.live {
			s.Live++
		} else {
			s.CatchingUp++
		}
		at := w.pos
		if w.live {
			at = max(h.lanes[w.lane].next, w.from)
			if len(w.buf) > 0 {
				at = w.buf[0].Revision
			}
		}
		if b := bounds[w.lane] + 1; at < b {
			s.MaxLag = max(s.MaxLag, b-at)
		}
	}
	return s
}
