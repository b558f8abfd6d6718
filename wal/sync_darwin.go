package wal

import (
	"os"

	"golang.org/x/sys/unix"
)

const (
	// dirSyncable: a directory opened read-only can be fsynced
	// ((*os.File).Sync issues F_FULLFSYNC).
	dirSyncable = true
	// syncOpenFlag: fsync needs no write access.
	syncOpenFlag = os.O_RDONLY
)

// fdatasync flushes f to stable storage with fcntl(F_FULLFSYNC). On macOS
// fsync(2) only hands the data to the drive, which may keep it in its
// volatile cache; F_FULLFSYNC also makes the drive flush that cache. Some
// file systems (SMB and other network mounts, some FUSE ones) do not
// support it and fail with ENOTSUP or EINVAL: f is then fsynced instead,
// which is as durable as that file system allows. Any other error is
// returned. Interrupted calls are retried.
func fdatasync(f *os.File) error {
	fd := f.Fd()
	for {
		_, err := unix.FcntlInt(fd, unix.F_FULLFSYNC, 0)
		switch err {
		case unix.EINTR:
			continue
		case unix.ENOTSUP, unix.EINVAL:
			return fsync(int(fd))
		}
		return err
	}
}

func fsync(fd int) error {
	for {
		err := unix.Fsync(fd)
		if err != unix.EINTR {
			return err
		}
	}
}
