package server_test

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/kvdstore/kvd/server"
)

const execAbort = "-EXECABORT Transaction discarded because of previous errors.\r\n"

const queued = "+QUEUED\r\n"

// TestRESPMulti checks MULTI, EXEC, DISCARD, WATCH and MSETNX replies step
// by step, as Redis gives them.
func TestRESPMulti(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model, cfg: server.Config{MaxKeySize: 64, MaxValueSize: 1024}})
		tests := []struct {
			name  string
			steps []step
		}{
			{"shapes", []step{
				{cmd("SET", "s:a", "old"), ok},
				{cmd("SET", "s:t", "text"), ok},
				{cmd("MULTI"), ok},
				{cmd("SET", "s:a", "1", "NX"), queued},
				{cmd("SET", "s:b", "2", "NX"), queued},
				{cmd("GET", "s:b"), queued},
				{cmd("SET", "s:a", "new", "GET"), queued},
				{cmd("INCR", "s:n"), queued},
				{cmd("INCRBY", "s:n", "10"), queued},
				{cmd("INCR", "s:t"), queued},
				{cmd("MGET", "s:a", "s:none", "s:n"), queued},
				{cmd("EXISTS", "s:a", "s:none", "s:a"), queued},
				{cmd("DEL", "s:a", "s:none"), queued},
				{cmd("GET", "s:a"), queued},
				{cmd("MSET", "s:x", "1", "s:y", "2"), queued},
				{cmd("PING"), queued},
				{cmd("ECHO", "hi"), queued},
				{cmd("EXEC"), array(null, ok, bulk("2"), bulk("old"), integer(1), integer(11),
					"-ERR value is not an integer or out of range\r\n",
					array(bulk("new"), null, bulk("11")), integer(2), integer(1), null, ok, "+PONG\r\n", bulk("hi"))},
				{cmd("MGET", "s:a", "s:b", "s:n", "s:t", "s:x"), array(null, bulk("2"), bulk("11"), bulk("text"), bulk("1"))},
				{cmd("MULTI"), ok},
				{cmd("EXEC"), "*0\r\n"},
			}},
			{"errors outside", []step{
				{cmd("EXEC"), "-ERR EXEC without MULTI\r\n"},
				{cmd("DISCARD"), "-ERR DISCARD without MULTI\r\n"},
				{cmd("MULTI"), ok},
				{cmd("MULTI"), "-ERR MULTI calls can not be nested\r\n"},
				{cmd("WATCH", "k"), "-ERR WATCH inside MULTI is not allowed\r\n"},
				{cmd("SET", "e:k", "v"), queued},
				{cmd("EXEC"), array(ok)}, // neither error aborts, as in Redis
			}},
			{"execabort applies nothing", []step{
				{cmd("MULTI"), ok},
				{cmd("SET", "a:k", "v"), queued},
				{cmd("NOSUCH"), "-ERR unknown command 'NOSUCH', with args beginning with: \r\n"},
				{cmd("SET", "a:k2", "v"), queued},
				{cmd("EXEC"), execAbort},
				{cmd("EXISTS", "a:k", "a:k2"), integer(0)},
				{cmd("EXEC"), "-ERR EXEC without MULTI\r\n"},
				{cmd("MULTI"), ok},
				{cmd("GET"), "-ERR wrong number of arguments for 'get' command\r\n"},
				{cmd("EXEC"), execAbort},
				{cmd("MULTI"), ok},
				{cmd("SET", "a:k", "v", "BOGUS"), "-ERR syntax error\r\n"},
				{cmd("INCRBY", "a:n", "x"), "-ERR value is not an integer or out of range\r\n"},
				{cmd("SET", "a:k", "v"), queued},
				{cmd("EXEC"), execAbort},
				{cmd("MULTI"), ok},
				{cmd("SCAN", "0"), "-ERR SCAN is not allowed in a transaction ..."},
				{cmd("EXEC"), execAbort},
				{cmd("MULTI"), ok},
				{cmd("MSETNX", "a:k", "v"), "-ERR MSETNX is not allowed in a transaction\r\n"},
				{cmd("EXEC"), execAbort},
				{cmd("MULTI"), ok},
				{cmd("CLIENT", "ID"), "-ERR CLIENT is not allowed in a transaction ..."},
				{cmd("DISCARD"), ok},
				{cmd("EXISTS", "a:k", "a:n"), integer(0)},
			}},
			{"discard applies nothing", []step{
				{cmd("MULTI"), ok},
				{cmd("SET", "d:k", "v"), queued},
				{cmd("DEL", "d:k"), queued},
				{cmd("DISCARD"), ok},
				{cmd("EXISTS", "d:k"), integer(0)},
				{cmd("DISCARD"), "-ERR DISCARD without MULTI\r\n"},
			}},
			{"watch", []step{
				{cmd("SET", "w:k", "1"), ok},
				{cmd("WATCH", "w:k", "w:absent"), ok},
				{cmd("SET", "w:k", "2"), ok}, // this connection's own write counts too
				{cmd("MULTI"), ok},
				{cmd("SET", "w:x", "1"), queued},
				{cmd("EXEC"), "*-1\r\n"},
				{cmd("EXISTS", "w:x"), integer(0)},
				// EXEC cleared the watch.
				{cmd("MULTI"), ok},
				{cmd("SET", "w:x", "1"), queued},
				{cmd("EXEC"), array(ok)},
				// A watched key unchanged, or a failed SET NX (which
				// changes nothing), keeps the transaction.
				{cmd("WATCH", "w:k", "w:absent"), ok},
				{cmd("SET", "w:k", "other", "NX"), null},
				{cmd("MULTI"), ok},
				{cmd("GET", "w:k"), queued},
				{cmd("EXEC"), array(bulk("2"))},
				// Created after WATCH: aborts.
				{cmd("WATCH", "w:absent"), ok},
				{cmd("SET", "w:absent", "now"), ok},
				{cmd("MULTI"), ok},
				{cmd("DEL", "w:absent"), queued},
				{cmd("EXEC"), "*-1\r\n"},
				{cmd("GET", "w:absent"), bulk("now")},
				// UNWATCH and DISCARD forget the watch.
				{cmd("WATCH", "w:k"), ok},
				{cmd("UNWATCH"), ok},
				{cmd("SET", "w:k", "3"), ok},
				{cmd("MULTI"), ok},
				{cmd("UNWATCH"), queued},
				{cmd("GET", "w:k"), queued},
				{cmd("EXEC"), array(ok, bulk("3"))},
				{cmd("WATCH", "w:k"), ok},
				{cmd("MULTI"), ok},
				{cmd("DISCARD"), ok},
				{cmd("SET", "w:k", "4"), ok},
				{cmd("MULTI"), ok},
				{cmd("GET", "w:k"), queued},
				{cmd("EXEC"), array(bulk("4"))},
			}},
			{"msetnx", []step{
				{cmd("MSETNX", "n:a", "1", "n:b", "2"), integer(1)},
				{cmd("MSETNX", "n:c", "3", "n:b", "x"), integer(0)},
				{cmd("MGET", "n:a", "n:b", "n:c"), array(bulk("1"), bulk("2"), null)},
				{cmd("MSETNX", "n:d", "1", "n:d", "2", "SYNC"), integer(1)},
				{cmd("GET", "n:d"), bulk("2")},
				{cmd("MSETNX", "n:e"), "-ERR wrong number of arguments for 'msetnx' command\r\n"},
				{cmd("MSETNX", "n:e", "1", "n:f"), "-ERR wrong number of arguments for 'msetnx' command\r\n"},
			}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) { run(t, dialRaw(t, ts.respAddr), tc.steps) })
		}
	})
}

// TestRESPMultiRESP3: an aborted EXEC replies with RESP3's null.
func TestRESPMultiRESP3(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		c := dialRaw(t, ts.respAddr)
		c.do("HELLO", "3")
		run(t, c, []step{
			{cmd("WATCH", "k"), ok},
			{cmd("SET", "k", "1"), ok},
			{cmd("MULTI"), ok},
			{cmd("GET", "k"), queued},
			{cmd("EXEC"), "_\r\n"},
			{cmd("MULTI"), ok},
			{cmd("GET", "none"), queued},
			{cmd("EXEC"), "*1\r\n_\r\n"},
		})
	})
}

// TestGoRedisTx: go-redis TxPipelined and Watch against kvd. A transaction
// is atomic for a concurrent reader; a WATCH conflict aborts with
// redis.TxFailedErr and applies nothing.
func TestGoRedisTx(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		ctx := t.Context()
		rdb := redis.NewClient(&redis.Options{Addr: ts.respAddr, PoolSize: 8})
		defer rdb.Close()

		cmds, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, "g:a", "1", 0)
			p.Incr(ctx, "g:a")
			p.Get(ctx, "g:a")
			p.SetNX(ctx, "g:a", "x", 0)
			p.Del(ctx, "g:a", "g:none")
			return nil
		})
		if err != nil || len(cmds) != 5 {
			t.Fatalf("TxPipelined: %d cmds, %v", len(cmds), err)
		}
		if v := cmds[2].(*redis.StringCmd).Val(); v != "2" {
			t.Errorf("GET in the transaction = %q, want 2", v)
		}
		if cmds[3].(*redis.BoolCmd).Val() || cmds[4].(*redis.IntCmd).Val() != 1 {
			t.Errorf("SETNX %v, DEL %v", cmds[3], cmds[4])
		}

		// Atomicity: writers set all keys of the group to one value in a
		// transaction, a reader never sees them differ.
		const keys = 8
		group := make([]string, keys)
		for i := range group {
			group[i] = fmt.Sprintf("g:k%d", i)
		}
		var stop atomic.Bool
		var wg sync.WaitGroup
		errc := make(chan error, 4)
		for w := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; !stop.Load(); i++ {
					v := strconv.Itoa(w*1000000 + i)
					_, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
						for _, k := range group {
							p.Set(ctx, k, v, 0)
						}
						return nil
					})
					if err != nil {
						errc <- err
						return
					}
				}
			}()
		}
		reads := 0
		for reads < 300 {
			vals, err := rdb.MGet(ctx, group...).Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range vals[1:] {
				if v != vals[0] {
					stop.Store(true)
					wg.Wait()
					t.Fatalf("MGET saw half a transaction: %v", vals)
				}
			}
			if vals[0] != nil {
				reads++
			}
		}
		stop.Store(true)
		wg.Wait()
		select {
		case err := <-errc:
			t.Fatalf("transaction: %v", err)
		default:
		}

		// WATCH: a change between WATCH and EXEC fails the transaction,
		// which then applies nothing.
		if err := rdb.Set(ctx, "g:w", "1", 0).Err(); err != nil {
			t.Fatal(err)
		}
		err = rdb.Watch(ctx, func(tx *redis.Tx) error {
			if err := rdb.Set(ctx, "g:w", "changed", 0).Err(); err != nil { // another connection
				return err
			}
			_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, "g:w", "mine", 0)
				p.Set(ctx, "g:w2", "mine", 0)
				return nil
			})
			return err
		}, "g:w")
		if !errors.Is(err, redis.TxFailedErr) {
			t.Fatalf("Watch after a conflicting write: %v, want TxFailedErr", err)
		}
		if n, _ := rdb.Exists(ctx, "g:w2").Result(); n != 0 {
			t.Fatal("an aborted transaction applied a write")
		}
		if v, _ := rdb.Get(ctx, "g:w").Result(); v != "changed" {
			t.Fatalf("g:w = %q after an aborted transaction", v)
		}

		// Without a conflict: a read-modify-write through WATCH.
		err = rdb.Watch(ctx, func(tx *redis.Tx) error {
			n, err := tx.Get(ctx, "g:ctr").Int()
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, "g:ctr", n+5, 0)
				return nil
			})
			return err
		}, "g:ctr")
		if err != nil {
			t.Fatalf("Watch without a conflict: %v", err)
		}
		if v, _ := rdb.Get(ctx, "g:ctr").Result(); v != "5" {
			t.Fatalf("g:ctr = %q, want 5", v)
		}

		// A transaction with a queue-time error applies nothing.
		_, err = rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, "g:bad", "1", 0)
			p.Do(ctx, "NOSUCH")
			return nil
		})
		if err == nil {
			t.Fatal("transaction with an unknown command succeeded")
		}
		if n, _ := rdb.Exists(ctx, "g:bad").Result(); n != 0 {
			t.Fatal("a transaction that EXECABORT discarded applied a write")
		}
	})
}

// TestRESPMultiTooLarge: a transaction may queue no more arguments in all
// than one command may carry; past that it is discarded at EXEC.
func TestRESPMultiTooLarge(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		cfg := server.Config{MaxKeySize: 64, MaxValueSize: 64 << 10, MaxRequestSize: 64 + 64<<10 + 1<<20}
		ts := startServer(t, serverOpts{io: model, cfg: cfg})
		c := dialRaw(t, ts.respAddr)
		if r := c.do("MULTI"); r != ok {
			t.Fatalf("MULTI: %q", r)
		}
		v := string(make([]byte, 64<<10))
		for i := range 16 {
			if r := c.do("SET", "big:"+strconv.Itoa(i), v); r != queued {
				t.Fatalf("SET %d: %q", i, r)
			}
		}
		if r := c.do("SET", "big:last", v); r != "-ERR transaction too large (max 1114176 bytes queued)\r\n" {
			t.Fatalf("SET past the limit: %q", r)
		}
		if r := c.do("EXEC"); r != execAbort {
			t.Fatalf("EXEC: %q", r)
		}
		if r := c.do("EXISTS", "big:0"); r != integer(0) {
			t.Fatalf("EXISTS after EXECABORT: %q", r)
		}
	})
}

// TestRESPMultiGetRev: GETREV in a transaction reports the revisions as the
// transaction's earlier writes left them.
func TestRESPMultiGetRev(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		c := dialRaw(t, ts.respAddr)
		c.do("SET", "k", "1")
		r := c.do("CLIENT", "LASTREV")
		rev, err := strconv.ParseInt(r[1:len(r)-2], 10, 64)
		if err != nil || rev == 0 {
			t.Fatalf("CLIENT LASTREV: %q", r)
		}
		run(t, c, []step{
			{cmd("MULTI"), ok},
			{cmd("GETREV", "k"), queued},
			{cmd("SET", "k", "2"), queued},
			{cmd("GETREV", "k"), queued},
			{cmd("GETREV", "none"), queued},
			{cmd("EXEC"), array(array(bulk("1"), integer(rev), integer(rev)), ok,
				array(bulk("2"), integer(rev+1), integer(rev)), null)},
			{cmd("CLIENT", "LASTREV"), integer(rev + 1)},
		})
	})
}
