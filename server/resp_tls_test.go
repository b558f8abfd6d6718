package server_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/kvtest"
	"github.com/kvdstore/kvd/server"
)

// TestRESPOverTLS: RESP served on a TLS listener (by goroutines): requests
// work, a client past MaxClients gets the refusal over TLS, and a protocol
// error's reply reaches the client before the connection closes, though
// the client goes on sending.
func TestRESPOverTLS(t *testing.T) {
	db, err := engine.Open(t.TempDir(), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	srv, err := server.New(db, server.Config{RESPIO: "goroutines", MaxClients: 1})
	if err != nil {
		t.Fatal(err)
	}
	ca := kvtest.NewCA(t, "test")
	is := ca.Issue(t, "server", kvtest.CertOptions{})
	kp, err := tls.LoadX509KeyPair(is.CertFile, is.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln := tls.NewListener(kvtest.Listen(t), &tls.Config{Certificates: []tls.Certificate{kp}})
	done := make(chan error, 1)
	go func() { done <- srv.ServeRESP(ln) }()
	defer func() {
		srv.Close()
		if err := <-done; !errors.Is(err, server.ErrServerClosed) {
			t.Errorf("ServeRESP: %v", err)
		}
	}()
	dial := func() (*tls.Conn, *bufio.Reader) {
		t.Helper()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 30 * time.Second}, "tcp", ln.Addr().String(), ca.ClientTLS(t, nil))
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		return c, bufio.NewReader(c)
	}
	line := func(r *bufio.Reader) string {
		t.Helper()
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read: %v (so far %q)", err, l)
		}
		return l
	}

	c1, r1 := dial()
	c1.Write([]byte("SET k v\r\nGET k\r\n"))
	if a, b := line(r1), line(r1)+line(r1); a != "+OK\r\n" || b != "$1\r\nv\r\n" {
		t.Fatalf("SET, GET over TLS: %q %q", a, b)
	}
	c2, r2 := dial()
	if got := line(r2); got != "-ERR max number of clients reached\r\n" {
		t.Fatalf("second client: %q", got)
	}
	c2.Close()

	// A protocol error, with more input behind it: the reply still
	// arrives, then the end of the stream.
	c1.Write([]byte("*1\r\n$abc\r\n"))
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		c1.Write(make([]byte, 512<<10)) // fails once the server is gone
	}()
	if got := line(r1); got != "-ERR Protocol error: invalid bulk length\r\n" {
		t.Fatalf("protocol error over TLS: %q", got)
	}
	if rest, err := io.ReadAll(r1); len(rest) != 0 || err != nil {
		t.Fatalf("after the error: %q, %v; want the end of the stream", rest, err)
	}
	c1.Close()
	<-wrote
}
