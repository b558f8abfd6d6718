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
//	+-----------+--------+-------------+-------------+-------------------+
//	| CRC32C    | type   | revision    | length      | payload           |
//	| 4 bytes   | 1 byte | 8 bytes     | 4 bytes     | length bytes      |
//	| LE uint32 |        | LE uint64   | LE uint32   |                   |
//	+-----------+--------+-------------+-------------+-------------------+
//
// The CRC (Castagnoli) covers type, revision, length and payload. The
// revision equals the tidwall/wal index of the entry; both are checked when
// the log is read. The log directory holds a FORMAT file naming the frame
// version; Open refuses a directory of another version.
//
// # Commit pipeline
//
// [Log.Enqueue] assigns the next revision (strictly increasing, no gaps) and
// queues the record. [Log.WaitWritten] returns once the record is in the
// segment file (write(2) done): concurrent callers are combined, so that one
// of them writes every queued record with a single write. [Log.WaitDurable]
// returns once an fsync covering the record has completed: one caller (the
// sync leader) fdatasyncs for all the records written so far while the others
// wait, which is group commit. A background flusher fsyncs every
// FlushInterval, or sooner when FlushBytes are unsynced, for records whose
// writers did not wait.
//
// tidwall/wal is opened with NoSync and its own Sync is never called: it holds
// the log's lock while it fsyncs, which would stop writers during every fsync.
// The Log fdatasyncs the tail segment through a file descriptor of its own
// instead, and fsyncs the directory after tidwall/wal creates a segment file
// (tidwall/wal never does), before any record in that segment is reported
// written.
//
// kvd builds against a patched copy of tidwall/wal v1.2.1
// (third_party/tidwall-wal, see its PATCHES.md). Upstream keeps a copy of
// the tail segment in memory, and of up to two sealed ones, for its Read;
// the Log opens it WriteOnly, so that it encodes each batch into a reused
// buffer, writes it and keeps nothing (the Log reads its segments itself, at
// Open). Truncating at a segment's first record rewrites nothing (see
// Truncation). The patch's earlier parts, for a log that keeps its tail in
// memory, reserve that copy for a whole segment instead of growing it by
// append, and let a new segment reuse a dropped segment's buffer.
//
// # Truncation
//
// [Log.TruncateFront] drops whole segments only: it truncates tidwall/wal at
// the first record of a segment, where the patched tidwall/wal deletes the
// older segment files and rewrites nothing (upstream writes and fsyncs a
// copy of the segment from that record on, under its lock). tidwall/wal
// deletes the files while holding the lock that writes take, and deleting a
// full segment frees its blocks: a stall of every writer. TruncateFront
// first gives each dropped file a second link in a trash directory, so that
// the deletion under the lock removes a name only; the blocks are freed when
// the trash is emptied, with no lock held. Open empties a trash that a crash
// left behind. BenchmarkWriteStalls measures a writer's waits meanwhile.
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
// A failed write or fsync is fatal to the Log (the lesson of PostgreSQL's
// fsync failures): the error is sticky, every waiter gets it, nothing is
// reported written or durable after it, and later calls fail with it. An fsync
// is never retried. Reopening the directory recovers what is on disk.
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
// Open scans every segment before handing the directory to tidwall/wal, which
// refuses a log with a torn tail. In the last segment, a bad record (short,
// zero-filled, or failing its CRC) with no valid record anywhere after it is
// the trace of a crash in the middle of a write, or the zero fill after the
// last record: the segment is truncated there, fsynced, and the repair is
// logged (at Info level when only zeros are cut, Warn otherwise). Any other bad record is
// corruption: Open fails with a [*CorruptError] naming the segment and offset.
//
// # Caveats
//
// Power loss can, on real disks, persist the pages of an unsynced write out of
// order, leaving a bad record followed by a valid one in the last segment.
// Open reports that as corruption rather than guessing: it never silently
// drops a valid record.
package wal
