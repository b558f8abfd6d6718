package wal

import "time"

// The exposure of the log: how long written records stay unsynced, which is
// what a power loss can take. In async commit mode a record is acknowledged
// once written, so the age of the oldest written record that is not yet
// durable is the age of the oldest acknowledged write a power loss would
// lose now (an upper bound: a record's age is counted from its write, before
// its writer is acknowledged, and sync records, acknowledged only once
// durable, are counted too).
//
// The commit pipeline has at most two groups of written, unsynced records,
// because one fsync runs at a time: those claimed by the fsync in progress
// (syncWritten captured them as its target) and those written since that
// claim. The Log keeps the write time of the oldest record of each group,
// under mu with written and unsynced:
//
//   - unclaimedAt is set by the write of a batch when the group of records
//     written since the last claim was empty, and moved to claimedAt when
//     syncWritten claims them;
//   - claimedAt holds until the fsync of claimedRev completes, which the
//     sync side (durable, under smu) tells; it is not cleared then, so that
//     completing an fsync takes no lock of the write side.
//
// When an fsync completes, the age its oldest record had then is the
// longest any record it made durable stayed unsynced; the Log keeps the
// maximum of those ages since Open and, per second, over the last minute
// (ageWindow, under smu).

// windowSeconds is the span of Stats.MaxUnsyncedLastMinute.
const windowSeconds = 60

// ageWindow holds the longest unsynced age observed in each of the last
// windowSeconds seconds of the Log's clock, in a ring indexed by the second.
// Observing and reading allocate nothing.
type ageWindow struct {
	sec [windowSeconds]int64         // the second whose maximum slot i holds
	max [windowSeconds]time.Duration // the maximum observed in that second
}

// observe records age, observed in second sec.
func (w *ageWindow) observe(sec int64, age time.Duration) {
	i := sec % windowSeconds
	if w.sec[i] != sec {
		w.sec[i], w.max[i] = sec, 0
	}
	w.max[i] = max(w.max[i], age)
}

// maxSince returns the longest age observed in second sec or in the
// windowSeconds-1 seconds before it.
func (w *ageWindow) maxSince(sec int64) time.Duration {
	var m time.Duration
	for i, s := range w.sec {
		if s <= sec && sec-s < windowSeconds {
			m = max(m, w.max[i])
		}
	}
	return m
}

// second returns the second of the Log's clock (seconds since Open, on the
// monotonic clock) that t falls in.
func (l *Log) second(t time.Time) int64 { return int64(t.Sub(l.opened) / time.Second) }

// observeDurable records, with smu held, that an fsync completing at end made
// durable records of which the oldest was written at oldest.
func (l *Log) observeDurable(end, oldest time.Time) {
	if oldest.IsZero() {
		return // nothing was claimed: cannot happen when records were synced
	}
	age := end.Sub(oldest)
	l.maxUnsynced = max(l.maxUnsynced, age)
	l.unsyncedAges.observe(l.second(end), age)
}

// exposure fills the unsynced ages of s, with smu held: unclaimed, claimed
// and claimedRev were read under mu before smu was taken.
func (l *Log) exposure(s *Stats, unclaimed, claimed time.Time, claimedRev uint64) {
	now := time.Now()
	oldest := unclaimed
	if !claimed.IsZero() && l.durable < claimedRev {
		// The fsync that claimed them has not completed (or failed).
		oldest = claimed
	}
	if !oldest.IsZero() {
		s.OldestUnsynced = max(now.Sub(oldest), 0)
	}
	s.MaxUnsyncedLastMinute = max(l.unsyncedAges.maxSince(l.second(now)), s.OldestUnsynced)
	s.MaxUnsyncedSinceOpen = max(l.maxUnsynced, s.OldestUnsynced)
}
