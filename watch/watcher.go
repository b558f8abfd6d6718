package watch

import (
	"errors"

	"github.com/kvdstore/kvd/engine"
)

// Watcher is one watch: the changes of the keys its filter selects, from a
// revision on. Its consumer reads it with Next and waits on Ready; it must
// Close it. Safe for concurrent use, though one consumer is the rule.
type Watcher struct {
	h      *Hub
	filter Filter
	lane   int
	ready  chan struct{}
	notify func() // see WatchFunc; nil for Watch

	// Guarded by h.mu.
	live     bool   // in the hub's index, fed from its dispatch
	from     uint64 // live: the first revision it wants
	pos      uint64 // catching up: the next revision to read from history
	buf      []engine.ChangeSet
	buffered int // changes in buf
	err      error
}

// Watch opens a watcher of the keys f selects from revision from on
// (revision 0: from the next one), of durable revisions only, or of written
// ones if written is set (see the package doc). It starts by catching up
// from the history; a from older than the history gives a CompactedError
// from its first Next.
func (h *Hub) Watch(f Filter, from uint64, written bool) (*Watcher, error) {
	return h.WatchFunc(f, from, written, nil)
}

// WatchFunc is Watch with notify called, besides, each time Ready
// receives: a consumer of many watchers (an event loop) learns which have
// more without a goroutine waiting on each. notify runs with the hub's lock
// held, on the hub's goroutine or a caller of the hub or watcher, possibly
// before WatchFunc returns: it must return at once and call nothing of the
// hub's or its watchers'.
func (h *Hub) WatchFunc(f Filter, from uint64, written bool, notify func()) (*Watcher, error) {
	w := &Watcher{h: h, filter: f, ready: make(chan struct{}, 1), notify: notify}
	f.Key = append([]byte(nil), f.Key...)
	w.filter = f
	if written {
		w.lane = laneWritten
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	if len(h.watchers) >= h.opts.MaxWatchers {
		return nil, ErrTooManyWatchers
	}
	if from == 0 {
		from = h.bound(w.lane) + 1
	}
	w.pos = from
	if len(h.watchers) == 0 {
		// The hub was idle: nobody missed the revisions it did not
		// dispatch. It dispatches from here on.
		for i := range h.lanes {
			h.lanes[i].next = max(h.lanes[i].next, h.bound(i)+1)
		}
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
	h.watchers[w] = struct{}{}
	if ln := &h.lanes[w.lane]; from >= ln.next {
		// Nothing to catch up on: the hub feeds it from the start.
		w.from = from
		h.index(ln, w)
	} else {
		w.signal()
	}
	return w, nil
}

// Ready returns a channel that receives when Next may have more to give.
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

func (w *Watcher) signal() {
	select {
	case w.ready <- struct{}{}:
	default:
	}
	if w.notify != nil {
		w.notify()
	}
}

func (w *Watcher) fail(err error) {
	if w.err == nil {
		w.err = err
	}
	w.h.unindex(&w.h.lanes[w.lane], w)
	w.signal()
}

// Next returns the next change sets, at most limit changes (0: no bound) but
// always whole revisions, and progress: the revision through which every
// matching change has now been returned (a bookmark, which moves even when
// nothing matches). It never blocks: with nothing to give it returns no
// change sets, and Ready receives once it may have more. Its errors are
// final: a *engine.CompactedError once the watcher needs a revision the
// history no longer has, ErrClosed, or a read error of the store.
func (w *Watcher) Next(limit int) ([]engine.ChangeSet, uint64, error) {
	sets, progress, ok, err := w.TryNext(limit)
	if ok {
		return sets, progress, err
	}
	return w.catchUp(limit)
}

// TryNext is Next for a consumer that must not wait on the store (an event
// loop): when the watcher is catching up, which reads the history, it
// returns ok false and nothing else, and leaves the read to Next. With ok
// true its results are Next's.
func (w *Watcher) TryNext(limit int) (sets []engine.ChangeSet, progress uint64, ok bool, err error) {
	h := w.h
	h.mu.Lock()
	if w.err != nil {
		h.mu.Unlock()
		return nil, 0, true, w.err
	}
	if !w.live {
		h.mu.Unlock()
		return nil, 0, false, nil
	}
	sets, progress, n := w.takeBuffered(limit)
	h.mu.Unlock()
	h.sent.Add(uint64(n))
	return sets, progress, true, nil
}

// takeBuffered takes the change sets of a live watcher's buffer, at most
// limit changes but whole revisions, and returns them, its progress and the
// number of changes. Called with h.mu held.
func (w *Watcher) takeBuffered(limit int) ([]engine.ChangeSet, uint64, int) {
	ln := &w.h.lanes[w.lane]
	var out []engine.ChangeSet
	n := 0
	for len(w.buf) > 0 {
		cs := w.buf[0]
		if limit > 0 && n > 0 && n+len(cs.Changes) > limit {
			break
		}
		out = append(out, cs)
		n += len(cs.Changes)
		w.buf[0] = engine.ChangeSet{}
		w.buf = w.buf[1:]
	}
	w.buffered -= n
	progress := max(ln.next, w.from) - 1
	if len(w.buf) > 0 {
		progress = w.buf[0].Revision - 1
		w.signal()
	}
	if len(w.buf) == 0 {
		w.buf = nil // let the backing array go
	}
	return out, progress, n
}

// catchUp is Next for a watcher that is catching up: it reads the history
// without holding the hub's lock.
func (w *Watcher) catchUp(limit int) ([]engine.ChangeSet, uint64, error) {
	h := w.h
	h.mu.Lock()
	if w.err != nil {
		h.mu.Unlock()
		return nil, 0, w.err
	}
	ln := &h.lanes[w.lane]
	if w.live {
		// Only the consumer's own Next makes a watcher live; with
		// another consumer calling it, take what it left.
		sets, progress, n := w.takeBuffered(limit)
		h.mu.Unlock()
		h.sent.Add(uint64(n))
		return sets, progress, nil
	}
	pos, bound := w.pos, ln.next-1
	h.mu.Unlock()

	sets, next, err := h.src.Changes(pos, w.filter.Match, limit, bound)
	if err != nil {
		h.mu.Lock()
		defer h.mu.Unlock()
		if errors.Is(err, engine.ErrCompacted) {
			h.compacted.Add(1)
		}
		w.fail(err)
		return nil, 0, err
	}
	n := 0
	for _, cs := range sets {
		n += len(cs.Changes)
	}
	h.sent.Add(uint64(n))
	h.mu.Lock()
	defer h.mu.Unlock()
	if w.err != nil {
		return nil, 0, w.err
	}
	w.pos = next
	if next >= ln.next {
		// Caught up with the dispatch: from here the hub feeds it.
		w.from = next
		h.index(ln, w)
	} else {
		w.signal() // more to read
	}
	return sets, next - 1, nil
}

// Close ends the watcher; Next then returns ErrClosed.
func (w *Watcher) Close() {
	h := w.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.watchers[w]; !ok {
		return
	}
	delete(h.watchers, w)
	w.fail(ErrClosed)
}
