package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/kvtest"
	"github.com/kvdstore/kvd/server"
)

// TestPipelineBatching sends one pipeline of plain SETs mixed with other
// commands: every command gets its own reply in order, reads see the writes
// before them, and runs of SETs are committed as few engine batches.
func TestPipelineBatching(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		c := dialRaw(t, ts.respAddr)
		before := ts.db.Stats().WrittenRevision

		const n = 100
		var req, want strings.Builder
		for i := range n {
			req.WriteString(encode("SET", fmt.Sprintf("p%03d", i), fmt.Sprint(i)))
			want.WriteString(ok)
		}
		c.sendRaw(req.String())
		for i := range n {
			if got := c.reply(); got != ok {
				t.Fatalf("reply %d = %q, want +OK", i, got)
			}
		}
		commits := ts.db.Stats().WrittenRevision - before
		if commits == 0 || commits > 10 {
			t.Errorf("%d pipelined SETs took %d commits, want 1..10 (batched)", n, commits)
		}

		// Mixed: the GET must see the SET before it, the SYNC SET is its own
		// run, a bad SET fails alone.
		c.sendRaw(encode("SET", "m", "1") + encode("GET", "m") + encode("SET", "m", "2", "SYNC") +
			encode("SET", "", "x") + encode("SET", "m", "3") + encode("INCR", "m") + encode("GET", "m"))
		for i, w := range []string{ok, bulk("1"), ok, "-ERR empty key\r\n", ok, integer(4), bulk("4")} {
			if got := c.reply(); got != w {
				t.Fatalf("mixed reply %d = %q, want %q", i, got, w)
			}
		}
		for i := range n {
			v, err := ts.db.Get(fmt.Appendf(nil, "p%03d", i))
			if err != nil || string(v) != fmt.Sprint(i) {
				t.Fatalf("p%03d = %q, %v", i, v, err)
			}
		}
	})
}

// TestOversizedArguments checks that arguments over the limits are refused
// with an error while the connection keeps working, and that absurd
// declared lengths are refused before any payload is read.
func TestOversizedArguments(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		const maxRequest = 100 + 1000 + 1<<20
		ts := startServer(t, serverOpts{io: model, cfg: server.Config{MaxKeySize: 100, MaxValueSize: 1000, MaxRequestSize: maxRequest}})
		big := strings.Repeat("v", 5000)
		tests := []struct {
			name string
			req  string
			want string
		}{
			{"value", encode("SET", "k", big), "-ERR value too large (max 1000 bytes)\r\n"},
			{"key", encode("SET", strings.Repeat("k", 2000), "v"), "-ERR key too large (max 100 bytes)\r\n"},
			{"key of get", encode("GET", strings.Repeat("k", 2000)), "-ERR key too large (max 100 bytes)\r\n"},
			{"mset value", encode("MSET", "a", "1", "b", big), "-ERR value too large (max 1000 bytes)\r\n"},
			{"other argument", encode("ECHO", big), "-ERR argument too large (5000 bytes)\r\n"},
			{"unknown command", encode("NOSUCH", big), "-ERR argument too large (5000 bytes)\r\n"},
			{"request total", encode(append([]string{"MSET"}, repeatPairs(1200, 999)...)...),
				fmt.Sprintf("-ERR request too large (max %d bytes per command)\r\n", maxRequest)},
		}
		c := dialRaw(t, ts.respAddr)
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				c.t = t
				c.sendRaw(tc.req + encode("PING"))
				if got := c.reply(); got != tc.want {
					t.Fatalf("reply = %q, want %q", got, tc.want)
				}
				if got := c.reply(); got != "+PONG\r\n" {
					t.Fatalf("after the error, PING = %q", got)
				}
			})
		}
		if n, _ := ts.db.Count(); n != 0 {
			t.Errorf("refused writes stored %d keys", n)
		}

		t.Run("absurd length", func(t *testing.T) {
			c := dialRaw(t, ts.respAddr)
			// Declares 2 GB and sends nothing more: the reply must come at
			// once, not after 2 GB.
			c.sendRaw("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000000\r\n")
			if got := c.expectClosed(); got != "-ERR Protocol error: invalid bulk length\r\n" {
				t.Fatalf("got %q", got)
			}
		})
	})
}

func repeatPairs(n, size int) []string {
	out := make([]string, 0, 2*n)
	for i := range n {
		out = append(out, fmt.Sprint("key", i), strings.Repeat("x", size))
	}
	return out
}

// TestMalformedInput sends broken frames: each gets a protocol error reply
// and a closed connection (as Redis does), commands before the bad frame
// are executed, and the server keeps serving other connections.
func TestMalformedInput(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		tests := []struct {
			name string
			req  string
			want string
		}{
			{"bad multibulk count", "*x\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
			{"negative count", "*-1\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
			{"huge count", "*99999999\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
			{"missing dollar", "*1\r\n+PING\r\n", "-ERR Protocol error: expected '$', got '+'\r\n"},
			{"bad bulk length", "*1\r\n$x\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
			{"negative bulk length", "*1\r\n$-3\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
			{"endless header", "*1\r\n$" + strings.Repeat("1", 100), "-ERR Protocol error: invalid bulk length\r\n"},
			{"bad terminator", "*1\r\n$4\r\nPINGxx", "-ERR Protocol error: invalid bulk length\r\n"},
			{"unbalanced quotes", "SET \"k v\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n"},
			{"endless inline", strings.Repeat("a", 70000), "-ERR Protocol error: too big inline request\r\n"},
			{"commands before the error run", encode("SET", "before", "1") + "*z\r\n",
				ok + "-ERR Protocol error: invalid multibulk length\r\n"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				c := dialRaw(t, ts.respAddr)
				c.sendRaw(tc.req)
				if got := c.expectClosed(); got != tc.want {
					t.Fatalf("got %q, want %q", got, tc.want)
				}
				if got := dialRaw(t, ts.respAddr).do("PING"); got != "+PONG\r\n" {
					t.Fatalf("server not serving after bad input: %q", got)
				}
			})
		}
		if v, err := ts.db.Get([]byte("before")); err != nil || string(v) != "1" {
			t.Errorf("command before the malformed frame: %q, %v", v, err)
		}
	})
}

// TestInlineCommands checks the telnet-style protocol redis-cli and nc use.
func TestInlineCommands(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		c := dialRaw(t, ts.respAddr)
		c.sendRaw("SET greeting \"hello world\"\r\n\r\n   \r\nGET greeting\nPING\r\n")
		for i, want := range []string{ok, bulk("hello world"), "+PONG\r\n"} {
			if got := c.reply(); got != want {
				t.Fatalf("reply %d = %q, want %q", i, got, want)
			}
		}
	})
}

// TestMaxClients opens more connections than allowed: the extra ones get
// Redis's error and are closed, and room frees up when clients leave.
func TestMaxClients(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		const limit = 5
		ts := startServer(t, serverOpts{io: model, cfg: server.Config{MaxClients: limit}})
		var conns []*rawConn
		for range limit {
			c := dialRaw(t, ts.respAddr)
			if got := c.do("PING"); got != "+PONG\r\n" {
				t.Fatalf("PING = %q", got)
			}
			conns = append(conns, c)
		}
		for range 3 {
			extra := dialRaw(t, ts.respAddr)
			if got := extra.expectClosed(); got != "-ERR max number of clients reached\r\n" {
				t.Fatalf("connection over the limit got %q", got)
			}
		}
		conns[0].nc.Close()
		kvtest.Eventually(t, 10*time.Second, "a client slot to free up", func() bool { return ts.srv.Clients() < limit })
		if got := dialRaw(t, ts.respAddr).do("PING"); got != "+PONG\r\n" {
			t.Fatalf("after a client left, PING = %q", got)
		}
	})
}

// TestDisconnectMidPipeline: a client that sends a pipeline and vanishes
// before reading the replies loses nothing it was told was written, and the
// server keeps serving.
func TestDisconnectMidPipeline(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		c := dialRaw(t, ts.respAddr)
		var req strings.Builder
		for i := range 2000 {
			req.WriteString(encode("SET", fmt.Sprint("dm", i), strings.Repeat("v", 100)))
		}
		req.WriteString("*3\r\n$3\r\nSET\r\n$4\r\nhalf") // cut mid-command
		c.sendRaw(req.String())
		acked := 0
		for range 500 {
			if got := c.reply(); got != ok {
				t.Fatalf("reply = %q", got)
			}
			acked++
		}
		c.nc.(*net.TCPConn).SetLinger(0) // reset, not a clean close
		c.nc.Close()
		kvtest.Eventually(t, 10*time.Second, "the connection to go away", func() bool { return ts.srv.Clients() == 0 })
		for i := range acked {
			if _, err := ts.db.Get(fmt.Append(nil, "dm", i)); err != nil {
				t.Fatalf("acknowledged key dm%d: %v", i, err)
			}
		}
		if got := dialRaw(t, ts.respAddr).do("PING"); got != "+PONG\r\n" {
			t.Fatalf("PING after the disconnect = %q", got)
		}
	})
}

// blockingStore makes a request stay in flight: it refuses TrySubmit as a
// store over its memory bound does, so that "SET k v NX" is committed with
// WriteContext (on a worker goroutine in the event loop, on the
// connection's own in the goroutine model), and holds WriteContext calls
// until released.
type blockingStore struct {
	*engine.DB
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (b *blockingStore) TrySubmit(*engine.Batch, engine.WriteOptions) (engine.Commit, error) {
	return engine.Commit{}, engine.ErrThrottled
}

func (b *blockingStore) WriteContext(ctx context.Context, batch *engine.Batch, wo engine.WriteOptions) (engine.Commit, error) {
	b.once.Do(func() { close(b.entered) })
	<-b.release
	return b.DB.WriteContext(ctx, batch, wo)
}

// newBlockingServer returns a server with I/O model model over a
// blockingStore on a fresh engine.
func newBlockingServer(t *testing.T, model string) (*blockingStore, *engine.DB, *server.Server) {
	t.Helper()
	bs := &blockingStore{entered: make(chan struct{}), release: make(chan struct{})}
	db, err := engine.Open(t.TempDir(), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	bs.DB = db
	srv, err := server.New(bs, server.Config{RESPIO: model})
	if err != nil {
		t.Fatal(err)
	}
	return bs, db, srv
}

// TestShutdownDrains: Shutdown closes idle connections and the listener at
// once, lets an in-flight request finish and reply, then returns.
func TestShutdownDrains(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		bs, db, srv := newBlockingServer(t, model)
		ln := kvtest.Listen(t)
		served := make(chan error, 1)
		go func() { served <- srv.ServeRESP(ln) }()

		idle := dialRaw(t, ln.Addr().String())
		if got := idle.do("PING"); got != "+PONG\r\n" {
			t.Fatalf("PING = %q", got)
		}
		busy := dialRaw(t, ln.Addr().String())
		busy.send("SET", "k", "v", "NX")
		<-bs.entered

		shut := make(chan error, 1)
		go func() { shut <- srv.Shutdown(t.Context()) }()
		if got := idle.expectClosed(); got != "" {
			t.Errorf("idle connection got %q", got)
		}
		kvtest.Eventually(t, 10*time.Second, "the listener to close", func() bool {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err == nil {
				c.Close()
			}
			return err != nil
		})
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned %v with a request in flight", err)
		default:
		}
		close(bs.release)
		if got := busy.reply(); got != ok {
			t.Errorf("in-flight SET = %q, want +OK", got)
		}
		if got := busy.expectClosed(); got != "" {
			t.Errorf("after shutdown the busy connection got %q", got)
		}
		if err := <-shut; err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, server.ErrServerClosed) {
			t.Errorf("ServeRESP = %v, want ErrServerClosed", err)
		}
		if v, err := db.Get([]byte("k")); err != nil || string(v) != "v" {
			t.Errorf("in-flight write: %q, %v", v, err)
		}
		if err := srv.ServeRESP(kvtest.Listen(t)); !errors.Is(err, server.ErrServerClosed) {
			t.Errorf("ServeRESP after Shutdown = %v", err)
		}
	})
}

// TestShutdownTimeout: when ctx ends first, Shutdown closes the stuck
// connections and returns ctx's error.
func TestShutdownTimeout(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		bs, _, srv := newBlockingServer(t, model)
		ln := kvtest.Listen(t)
		go srv.ServeRESP(ln)
		busy := dialRaw(t, ln.Addr().String())
		busy.send("SET", "k", "v", "NX")
		<-bs.entered
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := srv.Shutdown(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Shutdown = %v, want context.Canceled", err)
		}
		busy.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(busy.r); err != nil {
			t.Errorf("stuck connection not closed: %v", err)
		}
		close(bs.release)
	})
}

func TestNewValidates(t *testing.T) {
	db, err := engine.Open(t.TempDir(), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, err = server.New(db, server.Config{MaxKeySize: -1, MaxClients: -2, HTTPIdleTimeout: -time.Second})
	for _, field := range []string{"MaxKeySize", "MaxClients", "HTTPIdleTimeout must not be negative (got -1s)"} {
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("New with three bad fields = %v, want %q reported", err, field)
		}
	}
	if _, err := server.New(nil, server.Config{}); err == nil {
		t.Errorf("New(nil store) succeeded")
	}
}

// panicStore panics on reading one key: a stand-in for a bug.
type panicStore struct{ *engine.DB }

func (p panicStore) Get(key []byte) ([]byte, error) {
	if string(key) == "boom" {
		panic("bug")
	}
	return p.DB.Get(key)
}

func (p panicStore) GetEach(keys [][]byte, fn func(int, []byte, bool)) error {
	for _, k := range keys {
		if string(k) == "boom" {
			panic("bug")
		}
	}
	return p.DB.GetEach(keys, fn)
}

// TestPanicRecovered: a panic while serving one connection closes that
// connection only; the process and the other connections carry on.
func TestPanicRecovered(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model, wrap: func(db *engine.DB) server.Store { return panicStore{db} }})
		other := dialRaw(t, ts.respAddr)
		if got := other.do("SET", "a", "1"); got != ok {
			t.Fatalf("SET = %q", got)
		}
		victim := dialRaw(t, ts.respAddr)
		victim.send("GET", "boom")
		if got := victim.expectClosed(); got != "" {
			t.Errorf("panicking connection got %q", got)
		}
		if got := other.do("GET", "a"); got != bulk("1") {
			t.Errorf("other connection after the panic: %q", got)
		}
	})
}

// throttledStore is over its memory bound while throttled is set: TrySubmit
// refuses and WriteContext waits until released, as the engine's do while a
// checkpoint frees memory.
type throttledStore struct {
	*engine.DB
	throttled atomic.Bool
	waiting   chan struct{} // closed once a write waits
	release   chan struct{}
	once      sync.Once
}

func (s *throttledStore) TrySubmit(b *engine.Batch, wo engine.WriteOptions) (engine.Commit, error) {
	if s.throttled.Load() {
		return engine.Commit{}, engine.ErrThrottled
	}
	return s.DB.TrySubmit(b, wo)
}

func (s *throttledStore) wait() {
	if s.throttled.Load() {
		s.once.Do(func() { close(s.waiting) })
		<-s.release
	}
}

func (s *throttledStore) WriteContext(ctx context.Context, b *engine.Batch, wo engine.WriteOptions) (engine.Commit, error) {
	s.wait()
	return s.DB.WriteContext(ctx, b, wo)
}

// TestThrottledWritesDoNotStallReads: while the store makes writes wait for
// memory, a connection whose SETs wait does not hold up other clients'
// reads, and its SETs are committed and answered, in order, once the store
// has room.
func TestThrottledWritesDoNotStallReads(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := &throttledStore{waiting: make(chan struct{}), release: make(chan struct{})}
		srv := startServer(t, serverOpts{io: model, wrap: func(db *engine.DB) server.Store { ts.DB = db; return ts }})
		reader := dialRaw(t, srv.respAddr)
		if got := reader.do("SET", "r", "1"); got != ok {
			t.Fatalf("SET = %q", got)
		}
		ts.throttled.Store(true)
		writer := dialRaw(t, srv.respAddr)
		writer.sendRaw(encode("SET", "k", "1") + encode("SET", "k", "2") + encode("GET", "k"))
		select {
		case <-ts.waiting:
		case <-time.After(10 * time.Second):
			t.Fatal("the SETs never waited for the store")
		}
		if got := reader.do("GET", "r"); got != "$1\r\n1\r\n" {
			t.Fatalf("GET on another connection while writes wait = %q", got)
		}
		if got := reader.do("PING"); got != "+PONG\r\n" {
			t.Fatalf("PING while writes wait = %q", got)
		}
		ts.throttled.Store(false)
		close(ts.release)
		for i, want := range []string{ok, ok, "$1\r\n2\r\n"} {
			if got := writer.reply(); got != want {
				t.Fatalf("reply %d of the waiting connection = %q, want %q", i, got, want)
			}
		}
	})
}

// TestWritesUnderMemoryBound pipelines SETs from several connections into
// an engine whose memory bound is far below what they write, so that writes
// keep waiting for checkpoints: every SET is answered +OK in order, reads
// on the way see the connection's own last write, and everything is there
// at the end.
func TestWritesUnderMemoryBound(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		srv := startServer(t, serverOpts{io: model, engine: engine.Options{CheckpointBytes: 32 << 10, MaxMemtableBytes: 64 << 10}})
		const conns, sets = 4, 150
		val := strings.Repeat("v", 4<<10)
		var wg sync.WaitGroup
		for c := range conns {
			rc := dialRaw(t, srv.respAddr)
			wg.Go(func() {
				var req strings.Builder
				for i := range sets {
					req.WriteString(encode("SET", fmt.Sprintf("c%d/%d", c, i), fmt.Sprint(i, val)))
					if i%50 == 49 {
						req.WriteString(encode("GET", fmt.Sprintf("c%d/%d", c, i)))
					}
				}
				rc.nc.SetDeadline(time.Now().Add(30 * time.Second))
				if _, err := io.WriteString(rc.nc, req.String()); err != nil {
					t.Errorf("conn %d: write: %v", c, err)
					return
				}
				for i := range sets {
					if got, err := readReply(rc.r); got != ok {
						t.Errorf("conn %d SET %d = %q, %v", c, i, got, err)
						return
					}
					if i%50 == 49 {
						want := fmt.Sprint(i, val)
						if got, err := readReply(rc.r); got != fmt.Sprintf("$%d\r\n%s\r\n", len(want), want) {
							t.Errorf("conn %d GET after SET %d = %.40q, %v", c, i, got, err)
							return
						}
					}
				}
			})
		}
		wg.Wait()
		for c := range conns {
			for i := range sets {
				v, err := srv.db.Get([]byte(fmt.Sprintf("c%d/%d", c, i)))
				if err != nil || string(v) != fmt.Sprint(i, val) {
					t.Fatalf("c%d/%d after the load: %.20q, %v", c, i, v, err)
				}
			}
		}
		if st := srv.db.Stats(); st.Checkpoints < 5 {
			t.Errorf("%d checkpoints for %d KiB written under a 64 KiB bound", st.Checkpoints, conns*sets*4)
		}
	})
}
