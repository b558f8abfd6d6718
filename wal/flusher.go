package wal

import (
	"time"
)

// SetFlushInterval changes how often the flusher fsyncs.
func (l *Log) SetFlushInterval(d time.Duration) {
	if d > 0 {
		l.flushInterval.Store(int64(d))
	}
}

// FlushInterval returns the flusher's period.
func (l *Log) FlushInterval() time.Duration { return time.Duration(l.flushInterval.Load()) }

// flusher fsyncs written records that nobody waits for, on a fixed period
// (so a record waits at most one FlushInterval, plus the fsync, however long
// the previous fsync took) or as soon as FlushBytes are unsynced.
//
// When a pass finds nothing left to fsync, the flusher parks without a timer
// until the next write wakes it, and then fsyncs one period after that
// write. A ticker that kept running would wake an idle server, or one that
// only serves reads or sync writes, 100 times a second at the default 10ms,
// with a few thread switches each time.
func (l *Log) flusher() {
	defer l.wg.Done()
	t := time.NewTimer(l.FlushInterval())
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		case <-l.flushKick:
		case woken := <-l.flushWake:
			t.Reset(l.FlushInterval() - time.Since(woken))
			continue
		}
		l.flusherRuns.Add(1)
		start := time.Now()
		l.mu.Lock()
		w := l.written
		l.mu.Unlock()
		if l.failure() == nil && l.durableRev() < w {
			// A failure is sticky and reported to every writer; the flusher
			// has nobody to tell.
			_ = l.WaitDurable(w)
		}
		// unsynced is zero once every written record is durable or claimed
		// by an fsync in progress (syncWritten), which ends in durability
		// or in the log's failure.
		l.mu.Lock()
		park := l.unsynced == 0 || l.failure() != nil
		l.flushParked = park
		l.mu.Unlock()
		if park {
			t.Stop()
		} else {
			t.Reset(l.FlushInterval() - time.Since(start))
		}
	}
}

func (l *Log) durableRev() uint64 {
	l.smu.Lock()
	defer l.smu.Unlock()
	return l.durable
}
