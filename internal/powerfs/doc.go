// Package powerfs is a FUSE file system that simulates power loss, for
// kvd's crash tests.
//
// A backing directory holds the durable state. The mount shows the current
// state: the durable state plus the changes made since, which powerfs keeps
// in memory. Crash drops those changes and leaves the backing directory
// holding exactly the durable state, as a machine that lost power would
// find its disk; mounting the backing directory again shows that state.
//
// A crash test typically goes:
//
//	f, err := powerfs.Mount(mnt, backing, powerfs.Options{})
//	// start kvd with --data-dir inside mnt, write, then kill -9 it
//	err = f.Crash(powerfs.CrashOptions{})
//	f, err = powerfs.Mount(mnt, backing, powerfs.Options{})
//	// restart kvd on the same data dir and check what it recovers
//
// # Model
//
// File content: write(2), pwrite(2), truncation (truncate, ftruncate,
// O_TRUNC) and fallocate(2) (mode 0, KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE)
// change the current state only. fsync(2) or fdatasync(2) on a file, or a
// write through a descriptor opened with O_SYNC or O_DSYNC, makes its
// whole current content and size durable. Reads, through any handle or a
// shared mapping, return the current content. All handles of a file share
// its state. The kernel's page cache stays on: powerfs asks for no
// writeback caching, so each write(2) reaches powerfs as it updates the
// cached pages, and the cache always holds the current content. Nor does
// it let the kernel invalidate the cache when a file's mtime changes: that
// raced with writes and could leave written pages cached with older bytes.
//
// Directory entries: creating, linking, renaming and removing files and
// directories change the current entries of a directory at once. A
// directory's durable entries change only when the directory itself is
// fsynced (fsync on a descriptor opened on it): they then become its
// current entries. Hence a file created and fsynced in a directory that is
// not fsynced afterwards vanishes at a crash, data and all; a file removed
// without a directory fsync comes back with its durable content; a new
// directory needs its parent fsynced to survive and itself fsynced for its
// entries to survive; a rename is durable once both directories are
// fsynced. An entry made durable before the file's first fsync names an
// empty file.
//
// Everything found in the backing directory at Mount is durable.
//
// Torn writes: CrashOptions.Torn keeps, instead of nothing, part of each
// file's unsynced content, as a disk that writes its queue in order and
// loses power midway does: the changes in file order up to a random
// 512-byte sector boundary (file offsets), none after. A sector is
// persisted whole or not at all, as disks do (a disk with 4 KiB sectors
// tears at 4 KiB boundaries only, which are 512-byte boundaries too). A file that grew ends at the
// cut, or is followed by zeros up to a later sector boundary or its size
// before the crash: its size reached the disk, the data of those sectors
// did not, and an unwritten sector reads as zeros. Appends and overwrites
// of durable bytes (a log writing into space it zero-filled and fsynced
// earlier) are torn alike. File order is write order for a file written
// front to back, as a log is; for other files the result is one that a
// disk persisting any subset of its cached sectors could leave. The same
// seed gives the same result for the same operations.
//
// Reordered writes: CrashOptions.Reorder keeps, instead of nothing, a random
// subset of each file's unsynced 4 KiB pages, each whole and in place, as a
// disk whose volatile cache persisted some writes and not others can: a
// later page without an earlier one, an overwrite without the append
// before it.
//
// Locks: flock(2) and fcntl(2) locks work between all processes using the
// mount; the kernel keeps them, since powerfs does not implement locking.
// Nothing of them survives a crash, as with real power loss.
//
// # Caveats
//
// What a real power loss can do that powerfs does not simulate:
//
//   - Reordering below a page: reorder mode keeps or drops whole 4 KiB
//     pages; a disk may also persist part of a page (its 512-byte
//     sectors). Torn mode cuts at any sector, but keeps what lies before
//     the cut.
//   - Garbage: a sector is persisted with its new content or keeps its
//     old one (zeros past the old end of the file). A disk that writes
//     garbage into a sector when the power fails, or a sector that
//     holds part old and part new bytes, is not simulated: to a program
//     that checksums its records (kvd) that is damage, not a crash, and
//     kvd refuses to start on it by design.
//   - Writeback: a real kernel writes dirty pages back on its own, so
//     unsynced data may survive a real power loss, in part and in any
//     order; powerfs keeps unsynced data only at the crash, as torn or
//     reorder mode asks, and never while the file system runs.
//   - Journaling: real file systems (ext4, xfs) commit a rename as one
//     transaction, and often make a new file's entry durable when the file
//     is fsynced. powerfs takes the strict POSIX reading instead, to catch
//     missing directory fsyncs. With the directories of a rename fsynced
//     separately, a file can survive under both names (as hard links) or
//     under neither; a directory durably named twice is kept under the
//     first name in lexical order (Stats.SkippedDirs counts the others).
//   - Metadata: mode and owner are not journaled: the crash keeps their
//     values at the time of the crash. Times are not kept at all.
//     Extended attributes, device files, FIFOs, sockets and O_TMPFILE are
//     not supported.
//   - sync(2) and syncfs(2) do not reach FUSE and make nothing durable;
//     fsync each file and directory.
//   - I/O errors, a full disk and failing fsyncs are not simulated.
//
// Limits of the simulation itself:
//
//   - Unsynced data is kept in memory in 4 KiB pages; every inode of a
//     mount is kept until Crash or Unmount.
//   - The content of files created since the mount lives in a stage
//     directory, ".powerfs-stage" at the root of the backing directory; the
//     name is reserved at the root of the mount. Durable namespace changes
//     reach the backing directory only at Crash or Unmount: if the process
//     serving the mount dies, the backing directory holds the state found
//     at mount plus the content later fsynced into files that existed then.
//     Crash rewrites the backing directory and is not crash-safe itself.
//   - The process serving the mount should not fault in pages of a mapping
//     of the mount on a goroutine (the Go runtime does not know such a
//     thread is blocked); map the mount from another process, or fault the
//     pages in with a system call such as mlock(2).
//   - Directory listings hold no "." and ".." entries.
//   - Mount needs root and /dev/fuse; it mounts directly, without
//     fusermount.
package powerfs
