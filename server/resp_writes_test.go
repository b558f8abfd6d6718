package server_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/server"
)

// TestConditionalWrites checks the replies of the writes whose outcome the
// store decides when it applies their batch: SET with NX, XX and GET in
// combination, INCR at the edges of int64, and DEL counting a key named
// twice once, as Redis does.
func TestConditionalWrites(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		tests := []struct {
			name  string
			steps []step
		}{
			{"set nx get", []step{
				{cmd("SET", "a", "1", "NX", "GET"), null},
				{cmd("GET", "a"), bulk("1")},
				{cmd("SET", "a", "2", "NX", "GET"), bulk("1")},
				{cmd("GET", "a"), bulk("1")},
				{cmd("SET", "a", "3", "GET", "NX"), bulk("1")},
			}},
			{"set xx get", []step{
				{cmd("SET", "b", "1", "XX", "GET"), null},
				{cmd("GET", "b"), null},
				{cmd("SET", "b", "1"), ok},
				{cmd("SET", "b", "2", "XX", "GET"), bulk("1")},
				{cmd("GET", "b"), bulk("2")},
				{cmd("SET", "b", "3", "xx"), ok},
				{cmd("SET", "b", "4", "XX", "NX"), "-ERR syntax error\r\n"},
				{cmd("GET", "b"), bulk("3")},
			}},
			{"set get of an empty value", []step{
				{cmd("SET", "e", ""), ok},
				{cmd("SET", "e", "x", "GET"), bulk("")},
				{cmd("SET", "e", "y", "NX"), null},
				{cmd("SET", "e2", "y", "GET"), null},
				{cmd("GET", "e2"), bulk("y")},
			}},
			{"incr edges", []step{
				{cmd("SET", "min", "-9223372036854775808"), ok},
				{cmd("DECR", "min"), "-ERR increment or decrement would overflow\r\n"},
				{cmd("DECRBY", "min", "1"), "-ERR increment or decrement would overflow\r\n"},
				{cmd("GET", "min"), bulk("-9223372036854775808")},
				{cmd("INCRBY", "min", "9223372036854775807"), integer(-1)},
				{cmd("INCRBY", "fresh", "-5"), integer(-5)},
				{cmd("SET", "lead", "01"), ok},
				{cmd("INCR", "lead"), "-ERR value is not an integer or out of range\r\n"},
				{cmd("SET", "empty", ""), ok},
				{cmd("DECR", "empty"), "-ERR value is not an integer or out of range\r\n"},
				{cmd("GET", "lead"), bulk("01")},
			}},
			{"del duplicates", []step{
				{cmd("MSET", "d1", "1", "d2", "2"), ok},
				{cmd("DEL", "d1", "d1"), integer(1)},
				{cmd("DEL", "d1", "d2", "d2", "d1", "ASYNC"), integer(1)},
				{cmd("DEL", "d1", "d1"), integer(0)},
			}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) { run(t, dialRaw(t, ts.respAddr), tt.steps) })
		}
	})
}

// TestPipelinedIncrs pipelines INCRs of one key from several connections at
// once, some sync and some async: each connection's replies rise, and
// together they are 1..n with none twice, because each INCR is evaluated when its batch is applied, in
// revision order, whatever batches the event loop submits together.
func TestPipelinedIncrs(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		const conns, incrs = 4, 300
		got := make([][]int64, conns)
		var wg sync.WaitGroup
		for i := range conns {
			rc := dialRaw(t, ts.respAddr)
			if i%2 == 1 { // sync and async writes in the same passes
				if got := rc.do("CLIENT", "DURABILITY", "async"); got != ok {
					t.Fatalf("CLIENT DURABILITY = %q", got)
				}
			}
			wg.Go(func() {
				var req strings.Builder
				for range incrs {
					req.WriteString(encode("INCR", "n"))
				}
				rc.nc.SetDeadline(time.Now().Add(30 * time.Second))
				if _, err := rc.nc.Write([]byte(req.String())); err != nil {
					t.Errorf("conn %d: write: %v", i, err)
					return
				}
				for j := range incrs {
					s, err := readReply(rc.r)
					var n int64
					if _, perr := fmt.Sscanf(s, ":%d\r\n", &n); err != nil || perr != nil {
						t.Errorf("conn %d reply %d = %q, %v", i, j, s, err)
						return
					}
					got[i] = append(got[i], n)
				}
			})
		}
		wg.Wait()
		seen := make(map[int64]bool)
		for i, ns := range got {
			for j, n := range ns {
				if j > 0 && n <= ns[j-1] {
					t.Fatalf("conn %d: reply %d is %d after %d", i, j, n, ns[j-1])
				}
				if n < 1 || n > conns*incrs || seen[n] {
					t.Fatalf("conn %d: reply %d is %d (out of range, or seen before)", i, j, n)
				}
				seen[n] = true
			}
		}
		if v, err := ts.db.Get([]byte("n")); err != nil || string(v) != fmt.Sprint(conns*incrs) {
			t.Errorf("n = %q, %v; want %d", v, err, conns*incrs)
		}
	})
}

// TestThrottledConditionalWrites: while the store makes writes wait for
// memory, a connection's conditional writes wait on a worker, not on the
// event loop, and are answered in order from their results once there is
// room.
func TestThrottledConditionalWrites(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := &throttledStore{waiting: make(chan struct{}), release: make(chan struct{})}
		srv := startServer(t, serverOpts{io: model, wrap: func(db *engine.DB) server.Store { ts.DB = db; return ts }})
		reader := dialRaw(t, srv.respAddr)
		if got := reader.do("SET", "k", "old"); got != ok {
			t.Fatalf("SET = %q", got)
		}
		ts.throttled.Store(true)
		writer := dialRaw(t, srv.respAddr)
		writer.sendRaw(encode("SET", "k", "new", "GET") + encode("INCR", "n") + encode("DEL", "k", "k") +
			encode("SET", "k", "x", "XX"))
		select {
		case <-ts.waiting:
		case <-time.After(10 * time.Second):
			t.Fatal("the writes never waited for the store")
		}
		if got := reader.do("GET", "k"); got != bulk("old") {
			t.Fatalf("GET on another connection while writes wait = %q", got)
		}
		ts.throttled.Store(false)
		close(ts.release)
		for i, want := range []string{bulk("old"), integer(1), integer(1), null} {
			if got := writer.reply(); got != want {
				t.Fatalf("reply %d of the waiting connection = %q, want %q", i, got, want)
			}
		}
	})
}
