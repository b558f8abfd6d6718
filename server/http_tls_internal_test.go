package server

import (
	"crypto/tls"
	"net"
	"net/http/httptest"
	"testing"
)

// TestRequestScheme: a request on a TLS connection, which reaches net/http
// inside the connection limit's wrapper, is known to be HTTPS (a
// follower's redirect names the scheme).
func TestRequestScheme(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	for _, tc := range []struct {
		name string
		c    net.Conn
		want string
	}{
		{"plain", &limitConn{Conn: a}, "http"},
		{"tls", &limitConn{Conn: tls.Server(a, &tls.Config{})}, "https"},
		{"tls unwrapped", tls.Server(a, &tls.Config{}), "https"},
	} {
		r := httptest.NewRequest("GET", "/v1/kv/k", nil)
		r = r.WithContext(markTLSConn(r.Context(), tc.c))
		if got := requestScheme(r); got != tc.want {
			t.Errorf("%s: scheme %q, want %q", tc.name, got, tc.want)
		}
	}
}
