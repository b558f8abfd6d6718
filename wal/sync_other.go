//go:build !linux && !darwin && !windows

package wal

import "os"

const (
	// dirSyncable: a directory opened read-only can be fsynced.
	dirSyncable = true
	// syncOpenFlag: fsync needs no write access.
	syncOpenFlag = os.O_RDONLY
)

// fdatasync flushes f to stable storage. On the BSDs, Solaris and other
// systems without a Linux-style fdatasync in golang.org/x/sys/unix it is
// fsync(2), through (*os.File).Sync, which also retries interrupted calls.
func fdatasync(f *os.File) error {
	return f.Sync()
}
