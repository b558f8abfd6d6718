package server_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kvdstore/kvd/server"
)

// rawHTTP sends req on a new connection and returns the response.
func rawHTTP(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(nc, req); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatalf("reading the response to %.40q: %v", req, err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(b)
}

// TestHTTPErrorsAreJSON checks that the requests net/http refuses before
// any handler runs get the JSON error body too.
func TestHTTPErrorsAreJSON(t *testing.T) {
	ts := startServer(t, serverOpts{})
	for _, tc := range []struct {
		name, req string
		status    int
		code      string
	}{
		{"bad escape", "GET /v1/kv/%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"},
		{"bad request line", "GET\r\n\r\n", 400, "bad_request"},
		{"no host", "GET /healthz HTTP/1.1\r\n\r\n", 400, "bad_request"},
		{"huge headers", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 200<<10) + "\r\n\r\n",
			431, "header_too_large"},
		{"http version", "GET /healthz HTTP/3.0\r\nHost: x\r\n\r\n", 505, "http_version_not_supported"},
		{"unsupported encoding", "PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "not_implemented"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, body := rawHTTP(t, ts.httpAddr, tc.req)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (body %q)", res.StatusCode, tc.status, body)
			}
			if ct := res.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if code := errorCode(t, body); code != tc.code {
				t.Errorf("code %q, want %q", code, tc.code)
			}
		})
	}
}

// TestHTTPSlowBody checks that a body that comes slower than the minimum
// rate is cut off with 408 body_too_slow, and that a body at the rate is not.
func TestHTTPSlowBody(t *testing.T) {
	ts := startServer(t, serverOpts{cfg: server.Config{HTTPMinRate: 100, HTTPRateWindow: time.Second}})
	nc, err := net.Dial("tcp", ts.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	start := time.Now()
	io.WriteString(nc, "PUT /v1/kv/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatalf("no response to a stalled body: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusRequestTimeout || errorCode(t, string(b)) != "body_too_slow" {
		t.Fatalf("stalled body: %d %s", res.StatusCode, b)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cut after %v, want about 1s", d)
	}

	// 150 bytes/s for 3s passes.
	pr, pw := io.Pipe()
	go func() {
		for range 9 {
			pw.Write([]byte(strings.Repeat("x", 50)))
			time.Sleep(time.Second / 3)
		}
		pw.Close()
	}()
	req, _ := http.NewRequestWithContext(t.Context(), "PUT", "http://"+ts.httpAddr+"/v1/kv/steady", pr)
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != 200 {
		t.Errorf("steady body: %d", r2.StatusCode)
	}
}

// TestHTTPMaxConns checks that connections past HTTPMaxConns wait until
// one closes.
func TestHTTPMaxConns(t *testing.T) {
	ts := startServer(t, serverOpts{cfg: server.Config{HTTPMaxConns: 2}})
	var held []net.Conn
	for range 2 {
		nc, err := net.Dial("tcp", ts.httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		held = append(held, nc)
		// A request served, then the connection kept alive.
		io.WriteString(nc, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		if _, err := http.ReadResponse(bufio.NewReader(nc), nil); err != nil {
			t.Fatal(err)
		}
	}
	third, err := net.Dial("tcp", ts.httpAddr) // completes in the kernel's backlog
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	io.WriteString(third, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(third)
	third.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := br.Peek(1); err == nil {
		t.Fatal("a third connection was served while two were open")
	}
	held[0].Close()
	third.SetReadDeadline(time.Now().Add(10 * time.Second))
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("third connection after one closed: %v", err)
	}
}

// TestHTTPSlowReader checks that a client reading a response slower than
// the minimum rate is cut off rather than holding the handler for ever.
func TestHTTPSlowReader(t *testing.T) {
	ts := startServer(t, serverOpts{cfg: server.Config{HTTPMinRate: 1000, HTTPRateWindow: time.Second}})
	const size = 16 << 20
	if res := doHTTP(t, "PUT", "http://"+ts.httpAddr+"/v1/kv/big", strings.NewReader(strings.Repeat("b", size)), nil); res.status != 200 {
		t.Fatalf("PUT: %d %s", res.status, res.body)
	}
	nc, err := net.Dial("tcp", ts.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, "GET /v1/kv/big HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(3 * time.Second) // a client that reads nothing for 3s: the server gives up after 1s
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, nc)
	if n >= size {
		t.Errorf("read %d bytes (err %v): the whole value reached a client that read nothing for 3s", n, err)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("after %d bytes the connection is still open: %v", n, err)
	}
}
