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

// flusher fsyncs written records that nobody waits for. Its next fsync is
// due when the oldest record that no fsync has claimed becomes FlushInterval
// old (unclaimedAt, see exposure.go), or at once when FlushBytes are
// unsynced. When the fsync in progress ends after that moment, the flusher
// starts the next one at once. One fsync runs at a time, so a record waits
// at most max(FlushInterval, F) + F for an fsync time F: until it is due or
// until the fsync in progress when it was written ends, whichever is later,
// then for the fsync that covers it. That is FlushInterval plus one fsync
// while fsyncs are shorter than FlushInterval, when the process gets the
// CPU it needs; Stats.OldestUnsynced and MaxUnsyncedLastMinute show what
// records actually waited, stalls included.
//
// When no record is left unclaimed, the flusher parks without a timer until
// the next write wakes it, and then fsyncs one period after that write. A
// ticker that kept running would wake an idle server, or one that only
// serves reads or sync writes, 100 times a second at the default 10ms, with
// a few thread switches each time.
func (l *Log) flusher() {
	defer l.wg.Done()
	t := time.NewTimer(l.FlushInterval())
	defer t.Stop()
	for {
		kicked := false
		select {
		case <-l.stop:
			return
		case <-t.C:
		case <-l.flushKick:
			kicked = true
		case woken := <-l.flushWake:
			t.Reset(l.FlushInterval() - time.Since(woken))
			continue
		}
		// Until nothing is due: a sync leader may have claimed the records
		// the timer was set for, and records may have become due during
		// the pass.
		for {
			wait, idle := l.flushDue()
			if idle {
				t.Stop()
				break
			}
			if wait > 0 && !kicked {
				t.Reset(wait)
				break
			}
			kicked = false
			l.flushPass()
		}
	}
}

// flushDue returns how long until the oldest record that no fsync has
// claimed is FlushInterval old (zero or less: it is). When there is none, or
// the log failed, it parks the flusher and returns idle.
func (l *Log) flushDue() (wait time.Duration, idle bool) {
	l.mu.Lock()
	oldest := l.unclaimedAt
	// unclaimedAt is zero once every written record is durable or claimed
	// by an fsync in progress (syncWritten), which ends in durability or in
	// the log's failure.
	idle = oldest.IsZero() || l.failure() != nil
	l.flushParked = idle
	l.mu.Unlock()
	if idle {
		return 0, true
	}
	return l.FlushInterval() - time.Since(oldest), false
}

// flushPass fsyncs every record written so far, or waits for the fsync in
// progress to do it, and then for a new one if need be.
func (l *Log) flushPass() {
	l.flusherRuns.Add(1)
	l.mu.Lock()
	w := l.written
	l.mu.Unlock()
	if l.failure() == nil && l.durableRev() < w {
		// A failure is sticky and reported to every writer; the flusher
		// has nobody to tell.
		_ = l.WaitDurable(w)
	}
}

func (l *Log) durableRev() uint64 {
	l.smu.Lock()
	defer l.smu.Unlock()
	return l.durable
}
