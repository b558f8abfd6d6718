package wal

import (
	"fmt"
	"os"
	"path/filepath"
)

// SyncDir fsyncs a directory so that entries created, renamed or removed in
// it survive a power loss. Where a directory cannot be fsynced (Windows, see
// dirSyncable) it does nothing.
func SyncDir(dir string) error {
	if !dirSyncable {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("wal: sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("wal: sync dir %s: %w", dir, err)
	}
	return nil
}

// WriteFileDurably replaces the file at path with data, atomically and
// durably: it writes path+".tmp", fsyncs it (the platform's durability
// call, see syncFile), renames it into place and fsyncs the directory. A
// crash leaves the old file or the new one, and perhaps the temporary file.
func WriteFileDurably(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return fmt.Errorf("wal: write %s: %w", path, err)
	}
	if err := syncFile(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("wal: write %s: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// syncFile fsyncs the file at path with (*os.File).Sync: fsync(2) on Linux,
// F_FULLFSYNC on macOS, FlushFileBuffers on Windows.
func syncFile(path string) error {
	f, err := os.OpenFile(path, syncOpenFlag, 0)
	if err != nil {
		return fmt.Errorf("wal: sync: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("wal: sync %s: %w", filepath.Base(path), err)
	}
	return nil
}

// DataSync flushes f's data, and the metadata needed to read it back, to
// stable storage with the platform's durability call: fdatasync(2) on
// Linux, F_FULLFSYNC on macOS, FlushFileBuffers on Windows (f must be open
// for writing there).
func DataSync(f *os.File) error {
	if err := fdatasync(f); err != nil {
		return fmt.Errorf("wal: sync %s: %w", filepath.Base(f.Name()), err)
	}
	return nil
}
