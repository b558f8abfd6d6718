package server_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/faults"
	"github.com/kvdstore/kvd/internal/kvtest"
	"github.com/kvdstore/kvd/server"
)

// testServer is a Server over a real engine in a temporary directory,
// serving RESP and HTTP on 127.0.0.1 ports of its own.
type testServer struct {
	db       *engine.DB
	srv      *server.Server
	respAddr string
	httpAddr string
}

type serverOpts struct {
	cfg    server.Config
	engine engine.Options
	// wrap, if set, wraps the engine in the Store the server uses.
	wrap func(*engine.DB) server.Store
	// logFails: the test makes the log fail, so Close reports it.
	logFails bool
	// dir, if set, is the data directory to open instead of a new one.
	dir string
	// io is the RESP I/O model (Config.RESPIO); "" means the default.
	io string
	// syncFile, if set, replaces the fsync of the log's segments (an
	// internal/faults hook).
	syncFile func(f *os.File) error
}

// respIOs are the RESP I/O models this platform has.
var respIOs = map[bool][]string{true: {"loop", "goroutines"}, false: {"goroutines"}}[runtime.GOOS == "linux"]

// forEachIO runs f as one subtest per RESP I/O model, named after it, so
// that one go test run tests the protocol path under both ("go test -run
// /goroutines" picks one).
func forEachIO(t *testing.T, f func(t *testing.T, model string)) {
	t.Helper()
	for _, model := range respIOs {
		t.Run(model, func(t *testing.T) { f(t, model) })
	}
}

func startServer(t testing.TB, o serverOpts) *testServer {
	t.Helper()
	if o.io != "" {
		o.cfg.RESPIO = o.io
	}
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	if o.syncFile != nil {
		t.Cleanup(faults.Set(o.dir, faults.Hooks{SyncFile: o.syncFile}))
	}
	db, err := engine.Open(o.dir, o.engine)
	if err != nil {
		t.Fatalf("engine.Open: %v", err)
	}
	var store server.Store = db
	if o.wrap != nil {
		store = o.wrap(db)
	}
	srv, err := server.New(store, o.cfg)
	if err != nil {
		db.Close()
		t.Fatalf("server.New: %v", err)
	}
	respLn := kvtest.Listen(t)
	httpLn := kvtest.Listen(t)
	errc := make(chan error, 2)
	go func() { errc <- srv.ServeRESP(respLn) }()
	go func() { errc <- srv.ServeHTTPAPI(httpLn) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		for range 2 {
			if err := <-errc; !errors.Is(err, server.ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		}
		err := db.Close()
		if o.logFails && !errors.Is(err, engine.ErrLogFailed) {
			t.Errorf("engine Close = %v, want ErrLogFailed", err)
		} else if !o.logFails && err != nil {
			t.Errorf("engine Close: %v", err)
		}
	})
	return &testServer{db: db, srv: srv, respAddr: respLn.Addr().String(), httpAddr: httpLn.Addr().String()}
}

// rawConn speaks RESP byte by byte, to check replies exactly.
type rawConn struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc, r: bufio.NewReader(nc)}
}

// encode returns args as a RESP multibulk command.
func encode(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

func (c *rawConn) sendRaw(s string) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawConn) send(args ...string) { c.t.Helper(); c.sendRaw(encode(args...)) }

// do sends a command and returns its whole reply, raw.
func (c *rawConn) do(args ...string) string {
	c.t.Helper()
	c.send(args...)
	return c.reply()
}

// reply reads one complete RESP2/RESP3 reply and returns it raw.
func (c *rawConn) reply() string {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	s, err := readReply(c.r)
	if err != nil {
		c.t.Fatalf("reading reply: %v (got %q)", err, s)
	}
	return s
}

func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return line, err
	}
	if len(line) < 3 || !strings.HasSuffix(line, "\r\n") {
		return line, fmt.Errorf("bad reply line %q", line)
	}
	n, _ := strconv.Atoi(line[1 : len(line)-2])
	switch line[0] {
	case '+', '-', ':', '_', ',', '#':
		return line, nil
	case '$', '=':
		if n < 0 {
			return line, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return line, err
		}
		return line + string(buf), nil
	case '*', '%', '~', '>':
		if line[0] == '%' {
			n *= 2
		}
		out := line
		for range max(n, 0) {
			s, err := readReply(r)
			out += s
			if err != nil {
				return out, err
			}
		}
		return out, nil
	}
	return line, fmt.Errorf("unknown reply type in %q", line)
}

// expectClosed checks that the server closes the connection (after any
// replies still to come, which are returned).
func (c *rawConn) expectClosed() string {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	rest, err := io.ReadAll(c.r)
	if err != nil {
		c.t.Fatalf("connection not closed by the server: %v (read %q)", err, rest)
	}
	return string(rest)
}

// Reply builders.
func bulk(s string) string   { return fmt.Sprintf("$%d\r\n%s\r\n", len(s), s) }
func integer(n int64) string { return fmt.Sprintf(":%d\r\n", n) }
func array(items ...string) string {
	return fmt.Sprintf("*%d\r\n", len(items)) + strings.Join(items, "")
}

const (
	ok   = "+OK\r\n"
	null = "$-1\r\n"
)
