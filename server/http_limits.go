package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

// Limits of the HTTP listener. What they bound, with their defaults, is in
// Config; these are the ones without a knob.
const (
	// maxHeaderBytes bounds a request's line and headers: a key of
	// MaxKeySize (32 KiB), percent-encoded, takes up to 96 KiB of path.
	maxHeaderBytes = 128 << 10
	// maxRejectedWrite is the most of a net/http plain-text error reply
	// that rewriteErrorReply looks at.
	maxRejectedWrite = 1024
)

// limitListener accepts at most n connections at once: past that, Accept
// waits for one to close, leaving new connections in the kernel's backlog
// (the semantics of golang.org/x/net/netutil.LimitListener). Its
// connections also turn net/http's plain-text error replies into JSON
// (see rewriteErrorReply).
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	closeOnce sync.Once
	release   func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(c.release)
	return err
}

func (c *limitConn) Write(p []byte) (int, error) {
	if reply := rewriteErrorReply(p); reply != nil {
		if _, err := c.Conn.Write(reply); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// plainErrorHeaders are the headers of the replies net/http's server
// writes itself, straight to the connection, to a request it could not
// read: a malformed request line or path (a bad percent-encoding),
// headers over MaxHeaderBytes (431), an unsupported transfer encoding
// (501), a bad Host header, an unsupported HTTP version. No handler
// reply carries them in this order (net/http sorts a handler's headers:
// Connection before Content-Type).
const plainErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// rewriteErrorReply returns the JSON form of p if p is one of net/http's
// plain-text error replies (see plainErrorHeaders), else nil. The body
// becomes {"error":{"code":...,"message":...}} as for every other error,
// the code from the status.
func rewriteErrorReply(p []byte) []byte {
	if len(p) > maxRejectedWrite || !bytes.HasPrefix(p, []byte("HTTP/1.1 ")) {
		return nil
	}
	i := bytes.Index(p, []byte(plainErrorHeaders))
	if i < 0 {
		return nil
	}
	statusLine := p[:i]
	f := bytes.Fields(statusLine)
	if len(f) < 2 {
		return nil
	}
	status, err := strconv.Atoi(string(f[1]))
	if err != nil || status < 400 {
		return nil
	}
	code := codeBadRequest
	switch status {
	case http.StatusRequestHeaderFieldsTooLarge:
		code = codeHeaderTooLarge
	case http.StatusNotImplemented:
		code = codeNotImplemented
	case http.StatusHTTPVersionNotSupported:
		code = codeVersionNotSupported
	}
	body, _ := json.Marshal(map[string]errorBody{"error": {Code: code, Message: string(p[i+len(plainErrorHeaders):])}})
	body = append(body, '\n')
	out := append([]byte(nil), statusLine...)
	out = append(out, "\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(body)), 10)
	out = append(out, "\r\n\r\n"...)
	return append(out, body...)
}

// errBodyTooSlow is returned by a minRateReader whose source fell behind.
var errBodyTooSlow = errors.New("request body too slow")

// minRateReader reads a request body that must come at no less than rate
// bytes per second, measured over each window: a client that sends less
// than rate*window bytes in a window is cut off (the read fails with
// errBodyTooSlow), so that slow clients cannot hold connections and
// buffers for ever. rate 0 disables the check.
type minRateReader struct {
	r      io.Reader
	rc     *http.ResponseController
	need   int64 // bytes per window
	window time.Duration
	got    int64 // bytes in the current window
	armed  bool
}

func newMinRateReader(w http.ResponseWriter, r io.Reader, rate int64, window time.Duration) *minRateReader {
	return &minRateReader{r: r, rc: http.NewResponseController(w), need: bytesPerWindow(rate, window), window: window}
}

func (m *minRateReader) Read(p []byte) (int, error) {
	if m.need <= 0 {
		return m.r.Read(p)
	}
	if !m.armed {
		m.armed = true
		m.rc.SetReadDeadline(time.Now().Add(m.window))
	}
	n, err := m.r.Read(p)
	m.got += int64(n)
	if m.got >= m.need {
		m.got = 0
		m.rc.SetReadDeadline(time.Now().Add(m.window))
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		err = errBodyTooSlow
	}
	return n, err
}

// done lifts the deadline once the body is read.
func (m *minRateReader) done() {
	if m.armed {
		m.rc.SetReadDeadline(time.Time{})
	}
}

// minRateWriter writes a response that the client must read at no less
// than rate bytes per second, like minRateReader: each rate*window bytes
// must be written within a window, else the write fails and the handler
// stops. rate 0 disables the check.
type minRateWriter struct {
	w      io.Writer
	rc     *http.ResponseController
	need   int64
	window time.Duration
}

func newMinRateWriter(w http.ResponseWriter, rate int64, window time.Duration) *minRateWriter {
	return &minRateWriter{w: w, rc: http.NewResponseController(w), need: bytesPerWindow(rate, window), window: window}
}

func (m *minRateWriter) Write(p []byte) (int, error) {
	if m.need <= 0 {
		return m.w.Write(p)
	}
	written := 0
	for len(p) > 0 {
		chunk := p[:min(int64(len(p)), m.need)]
		m.rc.SetWriteDeadline(time.Now().Add(m.window))
		n, err := m.w.Write(chunk)
		written += n
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

func bytesPerWindow(rate int64, window time.Duration) int64 {
	if rate <= 0 {
		return 0
	}
	return max(1, int64(float64(rate)*window.Seconds()))
}
