//go:build unix

package replication

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// connClosed reports whether c has bytes or its end waiting to be read,
// without reading them or waiting: a peek that does not block.
func connClosed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	closed := false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		// Without an error: the end (0 bytes) or bytes nobody asked
		// for; EAGAIN: nothing, open; another error: broken.
		_, _, rerr := unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		closed = rerr != unix.EAGAIN && rerr != unix.EINTR
		return true
	})
	return closed || err != nil
}
