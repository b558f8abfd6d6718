//go:build !unix

package replication

import "net"

// connClosed reports whether c has bytes or its end waiting to be read.
// Without a peek that does not block, it reports false: a closed kept
// connection is then found by the call itself.
func connClosed(net.Conn) bool { return false }
