package wal

import (
	"os"

	"golang.org/x/sys/unix"
)

const (
	// dirSyncable: a directory opened read-only can be fsynced.
	dirSyncable = true
	// syncOpenFlag: fsync needs no write access.
	syncOpenFlag = os.O_RDONLY
)

// fdatasync flushes f's data, and the metadata needed to read it back, to
// stable storage: fdatasync(2), retried when a signal interrupts it.
func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}
