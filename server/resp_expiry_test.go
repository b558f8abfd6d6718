package server_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kvdstore/kvd/server"
)

// TestRESPExpiry runs the expiry commands under both I/O models, with
// absolute times far from now so that every reply is exact.
func TestRESPExpiry(t *testing.T) {
	const future = "4102444800" // 2100-01-01 in Unix seconds
	const futureMs = future + "000"
	const later = "4133980800" // 2101-01-01
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model, cfg: server.Config{MaxKeySize: 64, MaxValueSize: 1024}})
		tests := []struct {
			name  string
			steps []step
		}{
			{"set with expiry", []step{
				{cmd("SET", "a", "1", "EXAT", future), ok},
				{cmd("EXPIRETIME", "a"), integer(4102444800)},
				{cmd("PEXPIRETIME", "a"), integer(4102444800000)},
				{cmd("SET", "a", "2", "KEEPTTL"), ok},
				{cmd("PEXPIRETIME", "a"), integer(4102444800000)},
				{cmd("SET", "a", "3", "PXAT", "4102444800123", "GET"), bulk("2")},
				{cmd("PEXPIRETIME", "a"), integer(4102444800123)},
				{cmd("SET", "a", "4", "XX", "EXAT", later), ok},
				{cmd("EXPIRETIME", "a"), integer(4133980800)},
				{cmd("SET", "a", "5", "NX", "EXAT", later), null},
				{cmd("SET", "a", "6"), ok}, // a plain SET clears the expiry
				{cmd("TTL", "a"), integer(-1)},
				{cmd("PTTL", "a"), integer(-1)},
				{cmd("EXPIRETIME", "a"), integer(-1)},
				{cmd("TTL", "nope"), integer(-2)},
				{cmd("PEXPIRETIME", "nope"), integer(-2)},
			}},
			{"set errors", []step{
				{cmd("SET", "e", "v", "EX", "0"), "-ERR invalid expire time in 'set' command\r\n"},
				{cmd("SET", "e", "v", "PX", "-5"), "-ERR invalid expire time in 'set' command\r\n"},
				{cmd("SET", "e", "v", "EX", "9223372036854775807"), "-ERR invalid expire time in 'set' command\r\n"},
				{cmd("SET", "e", "v", "EX", "x"), "-ERR value is not an integer or out of range\r\n"},
				{cmd("SET", "e", "v", "EX"), "-ERR syntax error\r\n"},
				{cmd("SET", "e", "v", "EX", "10", "PX", "10"), "-ERR syntax error\r\n"},
				{cmd("SET", "e", "v", "EX", "10", "KEEPTTL"), "-ERR syntax error\r\n"},
				{cmd("SET", "e", "v", "KEEPTTL", "EXAT", future), "-ERR syntax error\r\n"},
				{cmd("EXISTS", "e"), integer(0)},
			}},
			{"setex and psetex", []step{
				{cmd("SETEX", "s", "100", "v"), ok},
				{cmd("GET", "s"), bulk("v")},
				{cmd("TTL", "s"), integer(100)},
				{cmd("PSETEX", "s", "100000", "w"), ok},
				{cmd("GET", "s"), bulk("w")},
				{cmd("TTL", "s"), integer(100)},
				{cmd("SETEX", "s", "0", "v"), "-ERR invalid expire time in 'setex' command\r\n"},
				{cmd("PSETEX", "s", "-1", "v"), "-ERR invalid expire time in 'psetex' command\r\n"},
				{cmd("SETEX", "s", "x", "v"), "-ERR value is not an integer or out of range\r\n"},
				{cmd("SETEX", "s", "10"), "-ERR wrong number of arguments for 'setex' command\r\n"},
				{cmd("GET", "s"), bulk("w")},
			}},
			{"expire", []step{
				{cmd("EXPIRE", "x", "100"), integer(0)},
				{cmd("SET", "x", "v"), ok},
				{cmd("EXPIREAT", "x", future, "XX"), integer(0)},
				{cmd("EXPIREAT", "x", future, "GT"), integer(0)},
				{cmd("EXPIREAT", "x", later, "LT"), integer(1)},
				{cmd("EXPIRETIME", "x"), integer(4133980800)},
				{cmd("EXPIREAT", "x", future, "NX"), integer(0)},
				{cmd("EXPIREAT", "x", future, "GT"), integer(0)},
				{cmd("PEXPIREAT", "x", futureMs, "xx", "lt"), integer(1)},
				{cmd("EXPIRETIME", "x"), integer(4102444800)},
				{cmd("PERSIST", "x"), integer(1)},
				{cmd("PERSIST", "x"), integer(0)},
				{cmd("PERSIST", "nope"), integer(0)},
				{cmd("TTL", "x"), integer(-1)},
				{cmd("EXPIRE", "x", "100", "NX", "SYNC"), integer(1)},
				{cmd("TTL", "x"), integer(100)},
				{cmd("PEXPIRE", "x", "-1"), integer(1)}, // in the past: deleted
				{cmd("GET", "x"), null},
				{cmd("TTL", "x"), integer(-2)},
				{cmd("EXPIRE", "x", "10", "NX", "XX"), "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"},
				{cmd("EXPIRE", "x", "10", "GT", "LT"), "-ERR GT and LT options at the same time are not compatible\r\n"},
				{cmd("EXPIRE", "x", "10", "BOGUS"), "-ERR Unsupported option BOGUS\r\n"},
				{cmd("EXPIRE", "x", "ten"), "-ERR value is not an integer or out of range\r\n"},
				{cmd("EXPIRE", "x", "9223372036854775807"), "-ERR invalid expire time in 'expire' command\r\n"},
				{cmd("PEXPIRE", "x", "9223372036854775807"), "-ERR invalid expire time in 'pexpire' command\r\n"},
				{cmd("EXPIRE", "x"), "-ERR wrong number of arguments for 'expire' command\r\n"},
			}},
			{"getex", []step{
				{cmd("GETEX", "g"), null},
				{cmd("GETEX", "g", "EX", "10"), null},
				{cmd("EXISTS", "g"), integer(0)},
				{cmd("SET", "g", "v"), ok},
				{cmd("GETEX", "g"), bulk("v")},
				{cmd("TTL", "g"), integer(-1)},
				{cmd("GETEX", "g", "EXAT", future), bulk("v")},
				{cmd("EXPIRETIME", "g"), integer(4102444800)},
				{cmd("GETEX", "g", "PERSIST", "ASYNC"), bulk("v")},
				{cmd("TTL", "g"), integer(-1)},
				{cmd("GETEX", "g", "PX", "0"), "-ERR invalid expire time in 'getex' command\r\n"},
				{cmd("GETEX", "g", "EX", "10", "PERSIST"), "-ERR syntax error\r\n"},
				{cmd("GETEX", "g", "BOGUS"), "-ERR syntax error\r\n"},
				{cmd("GETEX", "g", "PXAT", "1"), bulk("v")}, // in the past: deleted
				{cmd("GET", "g"), null},
			}},
			{"incr keeps the expiry", []step{
				{cmd("SET", "n", "1", "EXAT", future), ok},
				{cmd("INCR", "n"), integer(2)},
				{cmd("EXPIRETIME", "n"), integer(4102444800)},
			}},
		}
		c := dialRaw(t, ts.respAddr)
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) { run(t, c, tc.steps) })
		}

		// Relative times, and a key that expires: gone for every read.
		run(t, c, []step{{cmd("SET", "r", "v", "EX", "100"), ok}})
		reply := c.do("PTTL", "r")
		if ttl, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(reply, ":"), "\r\n"), 10, 64); err != nil || ttl > 100_000 || ttl < 99_000 {
			t.Fatalf("PTTL after SET EX 100: %q", reply)
		}
		run(t, c, []step{
			{cmd("SET", "soon", "v", "PX", "50"), ok},
			{cmd("SET", "stay", "v"), ok},
			{cmd("PEXPIRE", "stay", "100000"), integer(1)},
		})
		deadline := time.Now().Add(5 * time.Second)
		for c.do("EXISTS", "soon") != integer(0) {
			if time.Now().After(deadline) {
				t.Fatal("a key set with PX 50 still exists after 5s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		run(t, c, []step{
			{cmd("GET", "soon"), null},
			{cmd("MGET", "soon", "stay"), array(null, bulk("v"))},
			{cmd("TTL", "soon"), integer(-2)},
			{cmd("GETEX", "soon", "PERSIST"), null},
			{cmd("SET", "soon", "new", "NX"), ok},
			{cmd("TTL", "soon"), integer(-1)},
		})
		if scan := c.do("SCAN", "0", "MATCH", "so*"); !strings.Contains(scan, "soon") {
			t.Fatalf("SCAN after setting soon again: %q", scan)
		}
	})
}

// TestRESPExpiredKeyLeavesScan: a key that expires disappears from SCAN and
// DBSIZE, and the store removes it.
func TestRESPExpiredKeyLeavesScan(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		c := dialRaw(t, ts.respAddr)
		for i := range 5 {
			run(t, c, []step{{cmd("SET", "k"+strconv.Itoa(i), "v", "PX", "30"), ok}})
		}
		run(t, c, []step{{cmd("SET", "keep", "v"), ok}})
		deadline := time.Now().Add(5 * time.Second)
		for ts.db.Stats().ExpiredRemoved < 5 {
			if time.Now().After(deadline) {
				t.Fatalf("removed %d of 5 expired keys after 5s", ts.db.Stats().ExpiredRemoved)
			}
			time.Sleep(10 * time.Millisecond)
		}
		run(t, c, []step{
			{cmd("DBSIZE"), integer(1)},
			{cmd("SCAN", "0"), array(bulk("0"), array(bulk("keep")))},
		})
		if info := c.do("INFO", "stats"); !strings.Contains(info, "expired_keys:5\r\n") {
			t.Fatalf("INFO stats after 5 keys expired: %q", info)
		}
		if m := doHTTP(t, "GET", "http://"+ts.httpAddr+"/metrics", nil, nil).body; !strings.Contains(m, "kvd_expired_keys_total 5\n") {
			t.Fatalf("metrics after 5 keys expired lack kvd_expired_keys_total 5")
		}
	})
}
