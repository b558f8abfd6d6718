package wal

import "sync"

// waitList parks goroutines until a revision is reached, waking each one
// only when its revision is (or when it is handed a job), instead of waking
// every waiter on every change. The caller's mutex guards it.
type waitList struct {
	ws []*waiter
}

type waiter struct {
	rev     uint64
	ch      chan struct{}
	dropped bool // woken by drop
}

var waiterPool = sync.Pool{New: func() any { return &waiter{ch: make(chan struct{}, 1)} }}

// wait parks the caller until it is woken, and reports whether drop woke
// it. mu is held on entry and on return.
func (l *waitList) wait(rev uint64, mu *sync.Mutex) (dropped bool) {
	w := waiterPool.Get().(*waiter)
	w.rev, w.dropped = rev, false
	l.ws = append(l.ws, w)
	mu.Unlock()
	<-w.ch
	dropped = w.dropped
	waiterPool.Put(w)
	mu.Lock()
	return dropped
}

// drop wakes every waiter whose revision is above rev, telling it that its
// record is gone (TruncateBack, Reset).
func (l *waitList) drop(rev uint64) {
	kept := l.ws[:0]
	for _, w := range l.ws {
		if w.rev > rev {
			w.dropped = true
			w.ch <- struct{}{}
		} else {
			kept = append(kept, w)
		}
	}
	clear(l.ws[len(kept):])
	l.ws = kept
}

// wakeUpTo wakes every waiter whose revision is at most rev.
func (l *waitList) wakeUpTo(rev uint64) {
	kept := l.ws[:0]
	for _, w := range l.ws {
		if w.rev <= rev {
			w.ch <- struct{}{}
		} else {
			kept = append(kept, w)
		}
	}
	clear(l.ws[len(kept):])
	l.ws = kept
}

// wakeOne wakes the waiter with the lowest revision, if any.
func (l *waitList) wakeOne() {
	if len(l.ws) == 0 {
		return
	}
	low := 0
	for i, w := range l.ws {
		if w.rev < l.ws[low].rev {
			low = i
		}
	}
	l.ws[low].ch <- struct{}{}
	l.ws[low] = l.ws[len(l.ws)-1]
	l.ws[len(l.ws)-1] = nil
	l.ws = l.ws[:len(l.ws)-1]
}

// wakeAll wakes every waiter.
func (l *waitList) wakeAll() {
	for _, w := range l.ws {
		w.ch <- struct{}{}
	}
	clear(l.ws)
	l.ws = l.ws[:0]
}
