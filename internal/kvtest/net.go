package kvtest

import (
	"net"
	"testing"
)

// Listen returns a TCP listener on a free port of 127.0.0.1, for a server
// the test runs in its own process; its Addr says the port. The listener is
// closed when the test ends, if the server has not closed it already.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}
