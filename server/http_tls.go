package server

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
)

// An HTTP listener given to ServeHTTPAPI may be a TLS listener
// (tls.NewListener). Its connections reach net/http wrapped in the
// connection limit's limitConn, so net/http does not see a *tls.Conn
// and leaves Request.TLS nil; the connection's context says TLS instead.

// tlsConnKey marks the context of a TLS connection's requests.
type tlsConnKey struct{}

// markTLSConn is the HTTP server's ConnContext: it marks the requests of
// a TLS connection.
func markTLSConn(ctx context.Context, c net.Conn) context.Context {
	if lc, ok := c.(*limitConn); ok {
		c = lc.Conn
	}
	if _, ok := c.(*tls.Conn); ok {
		return context.WithValue(ctx, tlsConnKey{}, true)
	}
	return ctx
}

// requestScheme is "https" for a request that came over TLS, else "http".
func requestScheme(r *http.Request) string {
	if r.TLS != nil || r.Context().Value(tlsConnKey{}) != nil {
		return "https"
	}
	return "http"
}
