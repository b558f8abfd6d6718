package wal

import "os"

const (
	// dirSyncable: Windows has no fsync of a directory. FlushFileBuffers
	// needs a handle with write access, and a directory cannot be opened
	// for writing through os; NTFS records directory changes (create,
	// rename, delete) in its metadata journal, which it commits, in order,
	// when a file on the volume is flushed. So syncDir does nothing here: a
	// segment file's creation is durable once the first FlushFileBuffers of
	// a record in it returns.
	dirSyncable = false
	// syncOpenFlag: FlushFileBuffers needs a handle with write access.
	syncOpenFlag = os.O_RDWR
)

// fdatasync flushes f to stable storage. (*os.File).Sync is FlushFileBuffers
// on Windows: it writes the file's data and metadata and asks the drive to
// flush its cache. Windows has no data-only variant.
func fdatasync(f *os.File) error {
	return f.Sync()
}
