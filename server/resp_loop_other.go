//go:build !linux

package server

// The event loop needs epoll; elsewhere every connection gets a goroutine.

const (
	haveEventLoop = false
	defaultRESPIO = "goroutines"
)

type loopState struct{}

type msgKind uint8

const (
	msgShutdown msgKind = iota
	msgCloseAll
	msgKill
)

type loopMsg struct {
	kind msgKind
	c    *respConn
}

type eventLoop struct{}

func (*eventLoop) post(loopMsg) {}

func (s *Server) adoptConn(c *respConn) { panic("server: no event loop on this platform") }
