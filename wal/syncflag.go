package wal

// EnqueueSync is Enqueue for a record that must be durable before it counts
// as written. The goroutine that writes the batch holding it (the records
// queued when it started, in one write(2) through tidwall/wal) fsyncs the
// tail segment before any record of the batch counts as written and before
// Options.OnWritten sees them: WaitWritten returns for such a record only
// once it, and every record before it, is durable. A batch with no such
// record is written without an fsync, as Enqueue's are. The fsync is one of
// the log's (Stats.Fsyncs, Stats.FsyncSeconds, Durable) and its failure is the
// log's, as WaitDurable's are.
func (l *Log) EnqueueSync(payload []byte, v any) (uint64, error) {
	return l.enqueue(payload, v, true)
}

// syncBatch fsyncs the tail segment for the batch the writer has just
// written, whose last revision is last, before the batch counts as written.
// tidwall/wal fsynced the segments it sealed, so the fsync makes every
// record up to last durable. It takes the sync lead as WaitDurable's leaders
// do, waiting for an fsync in progress, and claims and fsyncs as
// syncWritten does. Only the writing goroutine calls it.
func (l *Log) syncBatch(last uint64) error {
	l.smu.Lock()
	for l.syncing {
		l.swait.wait(0, &l.smu) // revision 0: woken when that fsync ends
	}
	if err := l.failure(); err != nil {
		l.smu.Unlock()
		return err
	}
	l.syncing = true
	durable := l.durable
	l.smu.Unlock()
	defer func() {
		l.smu.Lock()
		l.syncing = false
		l.swait.wakeUpTo(l.durable)
		l.swait.wakeOne()
		l.smu.Unlock()
	}()

	l.mu.Lock()
	// The batch adds nothing unsynced; the records written before it go
	// with it.
	f, retired, oldest := l.claimUnsynced(last)
	l.mu.Unlock()
	// Failed before the lead is given up: nobody fsyncs again.
	return l.fsyncClaimed(f, retired, last, durable, oldest)
}
