// Package jobs runs a store's long work as jobs with IDs: backup, restore,
// verify, import, compact and defrag. A job is submitted, answered at once with its
// record (ID, type, parameters, state), and run in the background by a
// [Manager], one at a time in submission order; its record tells its
// progress (bytes and keys done of total, rate, ETA) and ends with a result
// or an error with a code.
//
// Records are kept as DIR/ID.json, each written to a temporary file,
// fsynced, renamed and the directory fsynced, at every change of state and
// at most every second of progress; DIR/SEQ keeps the last ID given, so that
// IDs (J000001, J000002, ...) are never reused. After a restart a job left
// running is run again if its type allows it (backup, verify and compact
// from the start; import from its last committed batch), else failed with
// the code "interrupted". Finished records are pruned by age and count.
//
// Rules: one backup at a time (a second request gets the queued or
// running one's record); a restore or a defrag runs alone (submitting one
// while other jobs are queued or running, or anything while one is, gives
// ErrBusy), and waits for snapshots being streamed (Manager.Snapshot).
//
// Files: a backup is written to NAME.part in the backup directory,
// checksummed (sha256), fsynced and renamed to NAME, so that no file under
// a final name is incomplete; restore and import read a NAME in the same
// directory. A job names files by plain name only, never by a path.
//
// Caveats: a snapshot holds a read transaction on the state file while it
// is written, which makes a checkpoint that must grow the file's memory
// map wait (writes go on into the memtable, up to its bound). Compact drops
// the log's records and the change history watches read below a revision:
// a watch from below it then gets a compacted error naming the new oldest
// revision (engine.DB.CompactHistory).
package jobs
