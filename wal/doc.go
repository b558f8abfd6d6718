// Package wal is kvd's write-ahead log: CRC-framed records stored in
// github.com/tidwall/wal segments, with a commit pipeline that decides when a
// record counts as written and when it counts as durable.
//
// # Records
//
// Every record is one tidwall/wal entry. tidwall/wal stores each entry as a
// uvarint length followed by the entry bytes and keeps no checksum, so the
// entry bytes are our own frame:
//
//	+-----------+--------+-----------+-----------+-----------+--------------+
//	| CRC32C    | type 2 | revision  | watermark | length    | payload      |
//	| 4 bytes   | 1 byte | 8 bytes   | 8 bytes   | 4 bytes   | length bytes |
//	| LE uint32 |        | LE uint64 | LE uint64 | LE uint32 |              |
//	+-----------+--------+-----------+-----------+-----------+--------------+
//
// The CRC (Castagnoli) covers everything after it. The revision equals the
// tidwall/wal index of the entry; both are checked when the log is read.
// The watermark is the highest revision the log knew durable (fsynced) when
// the record was queued: a record that survives proves that every record up
// to its watermark had reached stable storage, which is what lets Open tell
// a crash's leftovers from damage (see Repair). Records of type 1 (format
// 1, written before the watermark existed) have no watermark field and are
// still read. The log directory holds a FORMAT file naming the format
// version; Open upgrades "kvd-wal 1" to "kvd-wal 2" in place and refuses
// any other.
//
// # Commit pipeline
//
// [Log.Enqueue] assigns the next revision (strictly increasing, no gaps) and
// queues the record. [Log.WaitWritten] returns once the record is in the
// segment file (write(2) done): concurrent callers are combined, so that one
// of them writes every queued record with a single write. [Log.WaitDurable]
// returns once an fsync covering the record has completed: one caller (the
// sync leader) fdatasyncs for all the records written so far while the others
// wait, which is group commit. A background flusher fsyncs the records
// whose writers did not wait: when the oldest record that no fsync has
// claimed becomes FlushInterval old, or as soon as FlushBytes are unsynced,
// and at once when an fsync ends after that moment. One fsync runs at a
// time, so with fsyncs taking F a record is durable at most
// max(FlushInterval, F) + F after it was written: FlushInterval plus one
// fsync while fsyncs are shorter than the interval, two fsyncs when they are
// longer. That holds when the process gets the CPU it needs; a process
// starved of CPU, or an fsync that stalls, makes records wait longer.
// [Stats] shows how long they actually wait: OldestUnsynced, the age now of
// the oldest written record not yet durable, and its maximum over the last
// minute and since Open (the age records had when their fsync completed, or
// have now). A record's age counts from its write, and sync records count
// too: for async writes, acknowledged once written, it is an upper bound on
// how old the oldest acknowledged write a power loss would take is.
//
// tidwall/wal is opened with NoSync and its own Sync is never called: it holds
// the log's lock while it fsyncs, which would stop writers during every fsync.
// The Log fdatasyncs the tail segment through a file descriptor of its own
// instead, and fsyncs the directory after tidwall/wal creates a segment file
// (tidwall/wal never does), before any record in that segment is reported
// written.
//
// tidwall/wal (an ordinary, unmodified dependency) keeps the entries of the
// tail segment in memory for its Read, growing that buffer as records are
// appended, and caches the segments it seals. The Log drops the cache each
// time a segment is sealed, so it holds about one segment's worth of memory
// (Options.SegmentSize; bench/RESULTS.md measures the choice of default).
// The Log reads its segments itself: all of them at Open, and one record
// at a time for Log.Read (see Raft log); it never calls tidwall/wal's Read.
//
// # Truncation
//
// [Log.TruncateFront] drops whole segments only. tidwall/wal's TruncateFront
// copies the records of the segment holding the truncation point, from that
// point on, into a new segment file (written and fsynced under the lock that
// writes take) before it deletes the older files; the Log truncates at the
// last record of the last segment it drops, so the copy is one record and
// the log then starts with a one-record segment. tidwall/wal deletes the
// files while holding that lock too, and deleting a full segment frees its
// blocks: a stall of every writer. TruncateFront first gives each dropped
// file a second link in a trash directory, so that the deletion under the
// lock removes a name only; the blocks are freed when the trash is emptied,
// with no lock held. Open empties a trash that a crash left behind.
// BenchmarkWriteStalls measures a writer's waits meanwhile.
//
// # Raft log
//
// What a Raft log store needs (hashicorp/raft's LogStore) is built on the
// same pipeline:
//   - [Log.Read] returns the payload of a written record, checked (CRC,
//     revision), while records are appended, fsynced and flushed. Reads are
//     serialized with each other and with the calls that change the
//     segment files (TruncateFront, TruncateBack, Reset, Close). Read reads
//     the files itself, because tidwall/wal's Read changes its segment
//     cache under a shared lock, and keeps the record offsets of the last
//     four segments it read, never their records. It returns ErrCompacted
//     below [Log.FirstIndex] and ErrNotFound above [Log.WrittenIndex]: a
//     record enqueued but not yet written is not read.
//   - [Log.EnqueueSync] queues a record that asks for an fsync: the batch
//     holding it (one write(2)) is fsynced before any of its records counts
//     as written, and that fsync covers every earlier record. A batch with
//     no such record is written without one, as [Log.Enqueue]'s are.
//   - [Log.TruncateBack] drops the records above a revision, written or
//     queued, and [Log.Reset] empties the log at any revision (after a
//     snapshot is installed). Both are durable when they return; a crash
//     during one leaves the log as it was before or after it, since Open
//     finishes tidwall/wal's .END protocol and a Reset whose RESET file is
//     written (for TruncateBack, on a file system that keeps directory
//     changes in order, as ext4 and xfs do: tidwall/wal fsyncs no directory
//     between its steps). Waiters for the records they drop get
//     ErrTruncated. Each
//     waits for the write and the fsync in progress, and writes, fsyncs and
//     reads wait for it. The log does not know what its caller applied:
//     they drop what they are told to.
//   - [Log.WrittenIndex] and [Log.DurableIndex] are the last revision
//     written and the last durable one; Read finds the records from
//     FirstIndex to WrittenIndex. Open's from must lie between FirstIndex
//     and WrittenIndex+1, so a log that Reset emptied opens from its start.
//
// # Preallocation
//
// The Log keeps the tail segment file zero-filled for up to
// Options.Preallocate bytes (default 1 MiB) ahead of its last record, writing
// the zeros through its own descriptor before tidwall/wal's writes reach
// them. Records then overwrite allocated blocks inside the file's size, so
// the fdatasync of a commit flushes data only: no file size or block map goes
// through the file system's journal (bench/rawsync --overwrite measures the
// difference). The fill never goes past SegmentSize, and tidwall/wal seals a
// segment only once its records reach SegmentSize, so sealed segments end at
// their last record. Close cuts the fill off; after a crash Open does, as a
// zeroed tail.
//
// # Failures
//
// A failed fsync is fatal to the Log (the lesson of PostgreSQL's fsync
// failures): the error (ErrFailed) is sticky, every waiter gets it, nothing
// is reported written or durable after it, and later calls fail with it. An
// fsync is never retried. Reopening the directory recovers what is on disk.
//
// A failed write(2), such as ENOSPC on a full disk, is not fatal: nothing
// acknowledged depends on it. The Log cuts the batch it was writing out of
// the segment files, back to its last record written before the batch,
// fsyncs what is left (which makes durable the records async writers were
// told of), reopens tidwall/wal, and refuses the batch and every record
// queued behind it with ErrWriteRefused: those records are not on disk and
// their revisions go to the next records, so revisions stay gapless. The
// next write tries the disk again, so writes resume by themselves once
// space is freed. writeerr.go details the steps. If the recovery itself
// fails, the Log fails, and the records of the batch get ErrOutcomeUnknown
// unless the cut was already durable.
//
// Which error a waiter gets says what became of its record: nil, written
// (or durable); ErrWriteRefused, not in the log; ErrFailed alone, not in
// the log either (still queued when the log failed); ErrOutcomeUnknown (with
// ErrFailed), perhaps in the log: a record written whose fsync failed, or of
// a batch whose failed write could not be cut durably. A revision refused
// is given to a later record, so a caller that waits only after its record
// was refused waits for that other record: Options.OnWritten, which gets
// the values given to Enqueue, tells whose record was written.
//
// # Platforms
//
// The fsync that makes records durable (fdatasync above) is, per operating
// system:
//
//   - Linux: fdatasync(2), retried when interrupted (EINTR).
//   - macOS: fcntl(F_FULLFSYNC), since fsync(2) there leaves the data in the
//     drive's volatile cache. A file system that does not support it
//     (ENOTSUP or EINVAL, such as an SMB mount) gets fsync(2) instead.
//   - Windows: FlushFileBuffers. Windows cannot fsync a directory, so the
//     directory fsyncs are skipped: NTFS journals directory changes and
//     commits its journal when a file on the volume is flushed.
//   - Other systems (the BSDs, Solaris): fsync(2).
//
// The other fsyncs (the FORMAT file, the segments found by Open, a repaired
// segment) use (*os.File).Sync: fsync(2), F_FULLFSYNC on macOS,
// FlushFileBuffers on Windows. CI builds the package for macOS and Windows
// but runs its tests on Linux only.
//
// # Repair
//
// Open scans every segment before handing the directory to tidwall/wal,
// which refuses a log with a torn tail, and cuts what a crash can leave
// behind, with no operator:
//   - the zero fill after the last record (logged at Info);
//   - a bad last record whose write did not complete: the file ends inside
//     it, or a sector-aligned piece of it is still zero (what the zero-filled
//     tail held before), as etcd's WAL decides;
//   - in the last segment, a bad record followed by valid ones when none of
//     them carries a watermark at or above the bad record's revision: a power
//     loss that kept later unsynced pages and not earlier ones, since an
//     fsync makes every earlier page durable;
//   - damage confined to records below the revision Open starts from (the
//     state already holds them): the log then starts later.
//
// Each such cut is logged at Warn with the segment, offset, bytes and the
// revisions of the valid records it dropped, and reported by
// [Log.Recovery]. Anything else is corruption of data that was on stable
// storage, and Open fails with a [*CorruptError] naming the segment and
// offset and saying why a crash cannot explain it: a bad record in a sealed
// segment (a segment is fsynced whole before the next is started), a hole
// that a later record's watermark proves fsynced, or a last record written
// whole that fails its checksum (a flipped bit).
//
// # Caveats
//
// A bit flip in a last record whose data happens to hold a zeroed sector,
// or in its length so that it seems to run past the end of the file or into
// the zero fill, is taken for a torn write and cut. Records of format 1 carry
// no watermark, so a hole among them is always taken for a crash's.
package wal
