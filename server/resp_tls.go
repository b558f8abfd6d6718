package server

import (
	"crypto/tls"
	"net"
	"time"
)

// A RESP listener given to ServeRESP may be a TLS listener
// (tls.NewListener) when connections are served by goroutines: each
// connection's handshake then happens in its first read, on its own
// goroutine, bounded by the idle timeout if one is set.

// refuse sends a connection the server does not take its error reply,
// then closes it, within a second. On TLS the reply needs the handshake
// first: that runs on a goroutine of its own, so that a client slow to
// handshake does not hold up the accept loop.
func refuse(nc net.Conn, reason string) {
	send := func() {
		nc.SetDeadline(time.Now().Add(time.Second))
		nc.Write(appendLine(nil, '-', reason))
		nc.Close()
	}
	if _, ok := nc.(*tls.Conn); ok {
		go send()
		return
	}
	send()
}

// closeWriter is a connection that can end its sending half while it
// still reads: *net.TCPConn, and *tls.Conn once its handshake is done.
type closeWriter interface {
	net.Conn
	CloseWrite() error
}
