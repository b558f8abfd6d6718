package powerfs

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// busyPoll is the pause between unmount attempts while files are open.
const busyPoll = 5 * time.Millisecond

// unmount removes the mount and waits for the FUSE server to stop. While
// files are open on the mount, umount(2) fails with EBUSY; a process killed
// with SIGKILL closes its files while it exits, so unmount retries until
// Options.BusyTimeout. After that it aborts the connection: for FUSE,
// MNT_FORCE does that, and every handle still open then fails with
// ENOTCONN. If the abort leaves the mount busy, it is detached (MNT_DETACH)
// so that the mountpoint can be used again at once.
func (f *FS) unmount() error {
	deadline := time.Now().Add(f.opts.BusyTimeout)
	for {
		err := unix.Unmount(f.mountpoint, 0)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("powerfs: unmount %s: %w", f.mountpoint, err)
		}
		if time.Now().After(deadline) {
			f.log.Warn("mount still busy, aborting the connection", "timeout", f.opts.BusyTimeout)
			if err := unix.Unmount(f.mountpoint, unix.MNT_FORCE); err == nil {
				break
			}
			if err := unix.Unmount(f.mountpoint, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("powerfs: detach %s: %w", f.mountpoint, err)
			}
			break
		}
		time.Sleep(busyPoll)
	}

	// The serve loop ends when the kernel tears the connection down.
	done := make(chan struct{})
	go func() {
		f.server.Wait()
		close(done)
	}()
	timer := time.NewTimer(f.opts.BusyTimeout)
	defer timer.Stop()
	select {
	case <-done:
		return nil
	case <-timer.C:
		return fmt.Errorf("powerfs: unmount %s: FUSE server still running after %v", f.mountpoint, f.opts.BusyTimeout)
	}
}
