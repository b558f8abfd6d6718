// Package engine is kvd's embedded key-value store: a write-ahead log (package
// wal) for durability, an in-memory table for writes not yet checkpointed,
// and a bbolt file holding the checkpointed state.
//
// # Commit modes
//
// Every committed write batch gets a revision: strictly increasing, with no
// gaps. When a write returns depends on its commit mode:
//
//   - CommitSync (the default): after the batch's log record, and every record
//     before it, is fsynced. Concurrent writers share fsyncs (group commit).
//   - CommitAsync: after the record is written to the log file (write(2)).
//     A background flusher fsyncs every FlushInterval (10ms by default), or
//     sooner once FlushBytes are pending. A process crash loses nothing; a
//     power loss loses at most the writes acknowledged in the last flush
//     interval plus one fsync.
//
// WriteOptions.Durability overrides the mode for one write, and DB.Sync is a
// barrier that returns once every write acknowledged before it is durable.
// Reads see every acknowledged write, durable or not.
//
// Write and WriteContext wait for the acknowledgement. A caller that
// commits the writes of many clients, such as a server's event loop, uses
// Submit or TrySubmit instead: each returns a Commit, the handle of a
// queued batch, with its revision, whether it is acknowledged once durable
// or once written (decided then, from the write's durability and the DB's
// mode, and nowhere else) and its waits. Waiting on the newest of several
// Commits writes, or fsyncs, all of them together.
//
// # Batches are data
//
// A Batch encodes to bytes (Batch.Bytes, DecodeBatch; the format is drawn
// in Batch's documentation) and is its log record's payload. Besides Put
// and Delete it holds conditional operations, evaluated when the batch is
// applied in revision order against the state left by every earlier
// revision: PutIf (SET NX, XX, GET), IncrBy (INCR, DECR and their BY
// forms), and CompareAndPut and CompareAndDelete, which write only if the
// key's mod revision (see Revisions of keys) is the one given, 0 meaning
// that the key holds no value; a Delete reports whether the key held a
// value. Append (APPEND), IncrByFloat (INCRBYFLOAT), GetDelete (GETDEL)
// and DeleteAll (FLUSHDB: every key live at that point) depend on the
// current value the same way. Each operation
// has a Result, read with Batch.Results once the write returns (or the
// Commit's WaitWritten does, after Submit). An IncrBy on a value that is not an
// integer, or that would overflow (likewise an IncrByFloat, or an Append past
// MaxValueSize), fails alone: its Result.Err says why,
// and the rest of the batch applies. A Get reads a key inside the batch,
// after its earlier operations (MULTI/EXEC's reads), and a Require is a
// precondition on the whole batch (WATCH): if a key's mod revision is not
// the one given, the batch applies nothing, though it keeps its revision
// (Batch.Aborted). Replay after a restart evaluates the
// same operations against the same state, so it rebuilds the same state.
//
// DB.Apply applies an encoded batch at a given revision, the next one,
// through the same log, memtable and checkpoints as a local write: what a
// replica's state machine calls. A revision the DB already has is skipped
// with ErrAlreadyApplied. Applying the same batches in the same order gives
// the same state and the same results on any node.
//
// # Expiry
//
// A key may carry an absolute expiry time in Unix milliseconds
// (Batch.PutExpiresAt, Batch.Expire, Batch.Persist; Entry.ExpiresAt). It is
// stored with the key, in the memtable and in the key's value record, and
// so survives restarts and crashes as the value does. Any put clears it
// except PutExpiresAt with KeepExpiry; IncrBy keeps it, as Redis's INCR
// does.
//
// Every batch carries a timestamp, that of the node that submitted it
// (Submit, Write and Update stamp it with the local clock unless
// Batch.SetTimestamp gave it one). Every decision that expiry takes when a
// batch is applied (whether a key is live for PutIf, IncrBy, the compares,
// Expire's conditions, a Delete's result) is taken at that timestamp,
// never by the clock of the node applying it: replay and replicas decide
// alike. Batches of older builds carry no timestamp, and for them no key
// has expired.
//
// Reads (Get, AppendGet, GetEntry, GetEach, Scan, Count, Txn.Get) use the
// local clock: a key is invisible from its expiry time on, whether or not
// it has been removed. Removal is an ordinary write, decided by the node
// that runs the expirer and logged like any other: a batch of
// CompareAndDelete on the mod revision the expired key had, so that a key
// written again meanwhile stays (a CompareAndDelete removes a key that has
// expired, unlike any other operation, which sees it as absent). A read
// that finds an expired key queues its removal; a sweep every 100ms takes
// at most 256 due keys from the expiry indexes (one per memtable, in
// memory, and the state file's bucket "expiry"). Stats.ExpiredRemoved
// counts the removals. A replica whose writes all come through Apply sets
// Options.NoExpiryRemoval and gets the removals from the leader's log;
// until one arrives its reads hide the key by its own clock.
//
// Why the expiry lives in the value record (state format 3) and not in a
// bucket beside it: a read of a key then costs one lookup and one checksum,
// as before, and the expiry is covered by the record's checksum and
// written in the same put as the value, so they can never disagree. The
// sweep needs keys in expiry order, which the records cannot give: bucket
// "expiry" is that index, written by the checkpoint in the same
// transaction as the records, and checked by the sweep against them.
//
// # Recovery
//
// After any crash the store recovers exactly the batches 1..k for some k at
// least the last durable revision: never a hole, never a half batch. Open
// reads the checkpointed revision from the state file and replays the newer log
// records. A torn record at the tail of the last log segment is truncated
// (and logged); any other bad record stops Open with an error naming the
// segment and offset (see wal.CorruptError).
//
// # State and checkpoints
//
// Written batches go into the memtable at once. Every CheckpointInterval, or
// sooner once the memtable holds CheckpointBytes or the log records written
// since the last checkpoint reach CheckpointLogBytes, the checkpointer waits
// until the memtable's last revision is durable, writes it to bbolt together
// with that revision in one fsynced transaction, and then drops log segments
// that are wholly checkpointed. bbolt therefore always holds a durable prefix
// of the log. Writers wait when the memtable reaches MaxMemtableBytes.
//
// # Revisions of keys
//
// Every key records the revision that created it and the one that last
// wrote it (Entry, DB.GetEntry, and KV in Scan results). A key deleted and
// set again is created anew. Keys replayed from the log get the revisions
// of the records that wrote them.
//
// # Change history
//
// For change feeds, the DB keeps what each revision changed: for each key a
// batch changed, its new value and expiry, or its deletion (a ChangeSet;
// the effects, not the operations: an IncrBy gives the resulting value, a
// DeleteAll a deletion of every key it removed). DB.Changes reads them from
// a revision on, with a key filter, whole revisions at a time; revisions
// that changed nothing have none. They are computed as batches are applied,
// in revision order, so every node that applies the same batches (Apply)
// has the same history. Those of revisions not yet checkpointed are held in
// memory (bounded, as the memtable is, by the checkpoint thresholds); a
// checkpoint appends them to the history's log (DIR/history, segment files
// of 4 MiB) and fsyncs it before its transaction commits, then drops the
// log's oldest segments: the oldest revisions go while the history is over
// Options.HistoryBytes (default 512 MiB; the log may exceed it by up to a
// segment), or while they are both more than Options.HistoryRevisions
// revisions (default 100,000) and Options.HistoryAge (default 5 minutes)
// old; DB.CompactHistory drops the history below a revision on demand.
// Older revisions give a CompactedError naming DB.OldestRevision. After a
// crash, Open cuts what the log holds past the state file's checkpoint,
// and replay computes it again. A log that lost records the state file
// counts on (Open checks its last record against the checkpoint's) is
// moved aside to DIR/history.damaged, logged at Error, and the history
// starts after the checkpoint: watchers get a CompactedError, never a gap.
// A store created before the history had a log of its own (its state file
// held it) has it from the first revision after its checkpoint.
//
// Changes delivers revisions up to the bound its caller gives. A watcher
// that must never see a revision that a power loss could take back (in
// async mode, one written but not yet fsynced) passes DurableRevision; one
// that wants changes sooner passes WrittenRevision and accepts that
// risk. DB.ChangesNotify returns a channel closed when either advances.
//
// # On disk
//
// The state file (DIR/state.db) is a bbolt file with a bucket "meta"
// (format, applied-revision, state-data: the revision, the keys of
// bucket "kv" and their keys' and values' bytes, which DB.StateFile
// reports, and history-oldest and history-last, the change history's
// bounds), a bucket "kv" mapping each live key to a
// value record, and a bucket "expiry" indexing the keys that have an expiry
// by time (keys of expiry uint64 BE followed by the key, empty values):
//
//	+-----------+-------------+-------------+---------------+-----------------+
//	| crc32c    | create rev  | mod rev     | expires at    | value           |
//	| uint32 BE | uint64 BE   | uint64 BE   | int64 BE (ms) | (rest, 0+ bytes)|
//	+-----------+-------------+-------------+---------------+-----------------+
//	0           4             12            20              28
//
// The checksum is CRC-32C over the key followed by the record from offset
// 4, checked on every read of the record: a read of a record that does not
// check fails with ErrCorruptValue (and logs the key's length and first
// bytes), never returns data; a write that needs the record fails the DB
// (see ErrCorruptValue). bbolt reads the file through a memory map and
// trusts its page headers: a read that a damaged page makes fault or panic
// fails with ErrCorruptState instead of crashing (fault.go). Both are
// counted in Stats.Corruptions, and Check examines a closed store's file
// page by page. This is state format 3; "expires at" is 0 for a key
// without expiry.
//
// Format 2 had the same record without "expires at" and no bucket
// "expiry": Open migrates such a file in one transaction, keeping each
// key's revisions, with no expiry. Format 1 stored bare values, without
// revisions: Open migrates it too, and gives each of its keys create = mod
// = the revision the file was checkpointed at (logged at Info, "engine:
// migrated state file"). That is the newest revision that can have written
// them: never older than their true revisions, and older than every later
// write. Log records newer than the file then replay with their own
// revisions. Other formats fail Open with ErrFormat. A migrated file cannot
// be opened by a build of an older format.
//
// # Failures
//
// A failed fsync of the log or of the state file is fatal to writing: the
// writes waiting for it fail, later writes fail with ErrLogFailed (wrapping
// the cause), fsyncs are never retried, and reads keep working. Reopening
// the directory recovers what is on disk.
//
// A failed write of the log, such as ENOSPC on a full disk, is not: the log
// cuts the batch it was writing back out of its file, fsyncs the cut, and
// the writes of that batch (and those queued behind it) fail with
// ErrWriteRefused: not executed, safe to retry. Writes succeed again as soon
// as the log can write, with no restart. A checkpoint whose commit fails in
// a write of the state file is rolled back and tried again later; writes go
// on meanwhile, held back only by MaxMemtableBytes. Stats counts both.
//
// A write that may or may not have been executed, because the log failed
// after the write may have reached its file, fails with ErrOutcomeUnknown
// (and ErrLogFailed): read before retrying it. Every other error of a write
// means it was not executed.
//
// # Caveats
//
//   - Keys are limited to 32 KiB (bbolt's limit) and values to 16 MiB by
//     default (Options.MaxValueSize).
//   - Applying a batch with conditional operations or deletes reads the
//     keys they name while new writes wait: keep such batches small.
//   - Scans and Update hold back the application of new writes while they
//     run: keep scans bounded with ScanOptions.Limit and Update functions
//     short.
//   - Expiry has the precision of the clocks: a key expires by each
//     node's clock for its reads, and by the submitter's clock for the
//     decisions of writes. Clocks that disagree make reads disagree by as
//     much, never the state.
//   - One process at a time: Open takes an flock (LockFileEx on Windows) on
//     DIR/LOCK and fails with ErrLocked otherwise.
package engine
