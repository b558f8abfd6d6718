package server_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/kvdstore/kvd/server"
)

// TestGoRedis drives the server with go-redis v9, with its default RESP3 and
// with RESP2.
func TestGoRedis(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		for _, proto := range []int{3, 2} {
			t.Run(fmt.Sprint("protocol ", proto), func(t *testing.T) {
				ctx := t.Context()
				rdb := redis.NewClient(&redis.Options{Addr: ts.respAddr, Protocol: proto, ClientName: "compat"})
				defer rdb.Close()
				k := func(s string) string { return fmt.Sprintf("p%d:%s", proto, s) }
				if err := rdb.Set(ctx, k("a"), "1", 0).Err(); err != nil {
					t.Fatalf("SET: %v", err)
				}
				if v, err := rdb.Get(ctx, k("a")).Result(); err != nil || v != "1" {
					t.Fatalf("GET = %q, %v", v, err)
				}
				if _, err := rdb.Get(ctx, k("missing")).Result(); err != redis.Nil {
					t.Fatalf("GET missing: err = %v, want redis.Nil", err)
				}
				if err := rdb.MSet(ctx, k("b"), "2", k("c"), "3").Err(); err != nil {
					t.Fatalf("MSET: %v", err)
				}
				vals, err := rdb.MGet(ctx, k("a"), k("nope"), k("c")).Result()
				if err != nil || !slices.Equal(vals, []any{"1", nil, "3"}) {
					t.Fatalf("MGET = %v, %v", vals, err)
				}
				if n, err := rdb.Incr(ctx, k("n")).Result(); err != nil || n != 1 {
					t.Fatalf("INCR = %d, %v", n, err)
				}
				if ok, err := rdb.SetNX(ctx, k("a"), "x", 0).Result(); err != nil || ok {
					t.Fatalf("SETNX existing = %v, %v", ok, err)
				}
				if n, err := rdb.Del(ctx, k("a"), k("b"), k("zz")).Result(); err != nil || n != 2 {
					t.Fatalf("DEL = %d, %v", n, err)
				}
				cfg, err := rdb.ConfigGet(ctx, "commit-mode").Result()
				if err != nil || cfg["commit-mode"] != "sync" {
					t.Fatalf("CONFIG GET = %v, %v", cfg, err)
				}
				if name, err := rdb.ClientGetName(ctx).Result(); err != nil || name != "compat" {
					t.Fatalf("CLIENT GETNAME = %q, %v", name, err)
				}
				res, err := rdb.Do(ctx, "WAITAOF", 1, 0, 0).Int64Slice()
				if err != nil || !slices.Equal(res, []int64{1, 0}) {
					t.Fatalf("WAITAOF = %v, %v", res, err)
				}
				if err := rdb.Do(ctx, "NOSUCH").Err(); err == nil || !strings.HasPrefix(err.Error(), "ERR unknown command") {
					t.Fatalf("unknown command: %v", err)
				}
				info, err := rdb.Info(ctx, "persistence").Result()
				if err != nil || !strings.Contains(info, "durable_revision:") {
					t.Fatalf("INFO = %q, %v", info, err)
				}
			})
		}
	})
}

// TestScan checks SCAN: ascending order, every key exactly once, MATCH,
// COUNT, cursor 0 at the end, cursors usable from another connection, and
// stale cursors refused.
func TestScan(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		ctx := t.Context()
		rdb := redis.NewClient(&redis.Options{Addr: ts.respAddr, PoolSize: 4})
		defer rdb.Close()
		var all []string
		for i := range 250 {
			key := fmt.Sprintf("user:%03d", i)
			if i%5 == 0 {
				key = fmt.Sprintf("item:%03d", i)
			}
			all = append(all, key)
			if err := rdb.Set(ctx, key, "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		slices.Sort(all)

		tests := []struct {
			match string
			count int64
			keep  func(string) bool
		}{
			{"", 7, func(string) bool { return true }},
			{"item:*", 3, func(k string) bool { return strings.HasPrefix(k, "item:") }},
			{"*:1?5", 10, func(k string) bool { return len(k) >= 5 && k[len(k)-3] == '1' && k[len(k)-1] == '5' }},
			{"user:00[1-3]", 1000, func(k string) bool { return slices.Contains([]string{"user:001", "user:002", "user:003"}, k) }},
			{"u[^s]*", 50, func(string) bool { return false }},
			{`user:\*`, 50, func(string) bool { return false }},
		}
		for _, tc := range tests {
			t.Run(tc.match, func(t *testing.T) {
				var want, got []string
				for _, k := range all {
					if tc.keep(k) {
						want = append(want, k)
					}
				}
				var cursor uint64
				calls := 0
				for {
					keys, next, err := rdb.Scan(ctx, cursor, tc.match, tc.count).Result()
					if err != nil {
						t.Fatalf("SCAN: %v", err)
					}
					if int64(len(keys)) > tc.count {
						t.Fatalf("SCAN COUNT %d returned %d keys", tc.count, len(keys))
					}
					got = append(got, keys...)
					calls++
					if next == 0 {
						break
					}
					if calls > 1000 {
						t.Fatal("SCAN does not terminate")
					}
					cursor = next
				}
				if !slices.Equal(got, want) {
					t.Errorf("SCAN MATCH %q:\n got %v\nwant %v", tc.match, got, want)
				}
			})
		}

		c := dialRaw(t, ts.respAddr)
		if got := c.do("SCAN", "12345"); got != "-ERR invalid or expired cursor\r\n" {
			t.Errorf("unknown cursor: %q", got)
		}
		if got := c.do("SCAN", "x"); got != "-ERR invalid cursor\r\n" {
			t.Errorf("bad cursor: %q", got)
		}
		if got := c.do("SCAN", "0", "COUNT", "0"); got != "-ERR syntax error\r\n" {
			t.Errorf("COUNT 0: %q", got)
		}
		if got := c.do("SCAN", "0", "TYPE", "hash"); got != array(bulk("0"), array()) {
			t.Errorf("TYPE hash: %q", got)
		}
	})
}

func TestCommandTable(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model, cfg: server.Config{}})
		c := dialRaw(t, ts.respAddr)
		list := c.do("COMMAND", "LIST")
		for _, name := range []string{"get", "set", "del", "exists", "mget", "mset", "incr", "scan", "waitaof",
			"hello", "client", "config", "info", "dbsize", "ping", "echo", "quit", "select", "command",
			"getrev", "cas", "cad"} {
			if !strings.Contains(list, bulk(name)) {
				t.Errorf("COMMAND LIST lacks %s", name)
			}
		}
		if got := c.do("QUIT"); got != ok {
			t.Errorf("QUIT = %q", got)
		}
		if rest := c.expectClosed(); rest != "" {
			t.Errorf("after QUIT got %q", rest)
		}
	})
}
