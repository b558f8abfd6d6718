package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/internal/kvtest"
)

// TestBadInput sends what a broken or hostile client might: each gets a
// clear error, nothing acknowledged is lost, and kvd keeps serving others.
func TestBadInput(t *testing.T) {
	p := startKVD(t, "", "--max-value-size", "64KiB")
	ctx := t.Context()
	c, err := client.Dial(ctx, p.RESPAddr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Put(ctx, "keep", []byte("me")); err != nil {
		t.Fatal(err)
	}

	t.Run("oversized value", func(t *testing.T) {
		if err := c.Put(ctx, "big", make([]byte, 100<<10)); !errors.Is(err, client.ErrValueTooLarge) {
			t.Errorf("Put of 100 KiB: %v, want ErrValueTooLarge", err)
		}
		if err := c.Put(ctx, "fits", make([]byte, 64<<10)); err != nil {
			t.Errorf("Put of 64 KiB: %v", err)
		}
	})
	t.Run("oversized key", func(t *testing.T) {
		if err := c.Put(ctx, strings.Repeat("k", 40<<10), []byte("v")); !errors.Is(err, client.ErrKeyTooLarge) {
			t.Errorf("Put with a 40 KiB key: %v, want ErrKeyTooLarge", err)
		}
	})
	t.Run("binary keys", func(t *testing.T) {
		key := "\x00\xff\r\n*3\r\n$"
		if err := c.Put(ctx, key, []byte("\r\n")); err != nil {
			t.Fatal(err)
		}
		if v, err := c.Get(ctx, key); err != nil || string(v) != "\r\n" {
			t.Errorf("binary key: %q, %v", v, err)
		}
	})
	t.Run("malformed and wrong arity", func(t *testing.T) {
		conn := rawDial(t, p.RESPAddr)
		fmt.Fprint(conn, "*1\r\n$3\r\nGET\r\n*2\r\n$3\r\nGET\r\n$4\r\nkeep\r\n*1\r\n$x\r\n")
		got := readAll(t, conn)
		want := "-ERR wrong number of arguments for 'get' command\r\n$2\r\nme\r\n-ERR Protocol error: invalid bulk length\r\n"
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})
	t.Run("disconnect mid-pipeline", func(t *testing.T) {
		conn := rawDial(t, p.RESPAddr)
		var b strings.Builder
		for i := range 1000 {
			fmt.Fprintf(&b, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\nv\r\n", len(fmt.Sprint("mid", i)), fmt.Sprint("mid", i))
		}
		b.WriteString("*3\r\n$3\r\nSET\r\n$3\r\nmid") // cut off
		go io.WriteString(conn, b.String())
		r := bufio.NewReader(conn)
		conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		acked := 0
		for ; acked < 300; acked++ {
			line, err := r.ReadString('\n')
			if err != nil || line != "+OK\r\n" {
				t.Fatalf("reply %d: %q, %v", acked, line, err)
			}
		}
		conn.(*net.TCPConn).SetLinger(0)
		conn.Close()
		for i := range acked {
			if _, err := c.Get(ctx, fmt.Sprint("mid", i)); err != nil {
				t.Fatalf("acknowledged mid%d: %v", i, err)
			}
		}
	})
	if v, err := c.Get(ctx, "keep"); err != nil || string(v) != "me" {
		t.Errorf("after bad input: keep = %q, %v", v, err)
	}
}

// TestMaxClients opens hundreds of idle connections against
// --max-clients 100: the first 100 are served, every other one gets
// "-ERR max number of clients reached" and is closed, and the server
// serves new clients once some leave.
func TestMaxClients(t *testing.T) {
	const limit, extra = 100, 400
	p := startKVD(t, "", "--max-clients", fmt.Sprint(limit))
	var conns []net.Conn
	for i := range limit {
		conn := rawDial(t, p.RESPAddr)
		fmt.Fprint(conn, "*1\r\n$4\r\nPING\r\n")
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil || line != "+PONG\r\n" {
			t.Fatalf("connection %d: %q, %v", i, line, err)
		}
		conns = append(conns, conn)
	}
	for i := range extra {
		conn := rawDial(t, p.RESPAddr)
		if got := readAll(t, conn); got != "-ERR max number of clients reached\r\n" {
			t.Fatalf("connection %d over the limit got %q", limit+i, got)
		}
	}
	for _, conn := range conns[:10] {
		conn.Close()
	}
	// Freed slots are reused: poll until a client gets in.
	var err error
	admitted := kvtest.WaitFor(10*time.Second, 10*time.Millisecond, func() bool {
		var c *client.Client
		if c, err = client.Dial(t.Context(), p.RESPAddr, client.Options{PoolSize: 1}); err != nil {
			return false
		}
		if err := c.Put(t.Context(), "in", []byte("yes")); err != nil {
			t.Fatalf("Put after slots freed: %v", err)
		}
		c.Close()
		return true
	})
	if !admitted {
		t.Fatalf("no client admitted after 10 connections closed: %v", err)
	}
}

// TestFlags checks the command line and environment handling of kvd.
func TestFlags(t *testing.T) {
	out, _, code := runTool(t, "", nil, kvdBin, "--help")
	for _, flag := range []string{"--data-dir", "--listen", "--http-listen", "--commit-mode", "--flush-interval",
		"--flush-bytes", "--max-value-size", "--max-clients", "--log-level", "--log-format",
		"--group-commit-delay", "--checkpoint-interval", "--wal-retain", "--pprof", "--segment-size",
		"--checkpoint-bytes", "--max-memory", "KVD_DATA_DIR"} {
		if !strings.Contains(out, flag) {
			t.Errorf("--help lacks %s", flag)
		}
	}
	if code != 0 {
		t.Errorf("--help exit %d", code)
	}
	for _, tc := range []struct {
		args    []string
		env     []string
		wantErr string
	}{
		{[]string{"--bogus"}, nil, "unknown flag: --bogus"},
		{[]string{"--commit-mode", "maybe"}, nil, "--commit-mode must be sync or async"},
		{nil, []string{"KVD_COMMIT_MODE=maybe"}, "--commit-mode must be sync or async"},
		{[]string{"--max-value-size", "12XB"}, nil, "unknown unit"},
		{[]string{"--log-format", "xml", "--max-clients", "0"}, nil, "--max-clients must be at least 1"},
		{[]string{"extra"}, nil, `unexpected argument "extra"`},
		{[]string{"--max-memory", "8MiB"}, nil, "--max-memory must be at least 16MiB"},
		{[]string{"--max-memory", "64MiB"}, []string{"KVD_CHECKPOINT_BYTES=32MiB"},
			"--checkpoint-bytes 32MiB is over the memtables' share of --max-memory (16MiB"},
	} {
		_, errOut, code := runTool(t, "", tc.env, kvdBin, append([]string{"--data-dir", t.TempDir()}, tc.args...)...)
		if code != 2 || !strings.Contains(errOut, tc.wantErr) {
			t.Errorf("kvd %q %q: exit %d, stderr %q, want 2 and %q", tc.args, tc.env, code, errOut, tc.wantErr)
		}
	}

	// Environment variables configure kvd; flags win over them.
	t.Setenv("KVD_COMMIT_MODE", "async")
	t.Setenv("KVD_FLUSH_INTERVAL", "7ms")
	p := startKVD(t, "", "--flush-interval", "9ms", "--log-format", "json")
	c, err := client.Dial(t.Context(), p.RESPAddr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Status(t.Context())
	if err != nil || st.CommitMode != "async" || st.FlushInterval != 9*time.Millisecond {
		t.Errorf("status with KVD_COMMIT_MODE=async --flush-interval 9ms: %+v, %v", st, err)
	}
}

// TestDataDirLocked: a second kvd on the same data directory fails with a
// clear error and exit status 1, and the first keeps running.
func TestDataDirLocked(t *testing.T) {
	p := startKVD(t, "")
	_, errOut, code := runTool(t, "", nil, kvdBin, "--data-dir", p.DataDir, "--listen", "127.0.0.1:0", "--http-listen", "")
	if code != 1 || !strings.Contains(errOut, p.DataDir) {
		t.Errorf("second kvd on the same dir: exit %d, stderr %q", code, errOut)
	}
	if code := stop(t, p, syscall.SIGINT); code != 0 {
		t.Errorf("kvd exited %d on SIGINT", code)
	}
	if !strings.Contains(p.Log(), "kvd stopped") {
		t.Errorf("no clean stop logged:\n%s", p.Log())
	}
}

func rawDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// readAll reads until the server closes the connection.
func readAll(t *testing.T, conn net.Conn) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("server did not close the connection: %v (read %q)", err, b)
	}
	return string(b)
}
