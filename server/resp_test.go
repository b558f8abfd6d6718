package server_test

import (
	"strings"
	"testing"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/server"
)

type step struct {
	cmd  []string
	want string // exact raw reply; a prefix if it ends in "..."
}

func run(t *testing.T, c *rawConn, steps []step) {
	t.Helper()
	for i, s := range steps {
		got := c.do(s.cmd...)
		if p, isPrefix := strings.CutSuffix(s.want, "..."); isPrefix {
			if !strings.HasPrefix(got, p) {
				t.Fatalf("step %d %q: got %q, want prefix %q", i, s.cmd, got, p)
			}
			continue
		}
		if got != s.want {
			t.Fatalf("step %d %q: got %q, want %q", i, s.cmd, got, s.want)
		}
	}
}

func cmd(args ...string) []string { return args }

func TestRESPCommands(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model, cfg: server.Config{MaxKeySize: 64, MaxValueSize: 1024}})
		tests := []struct {
			name  string
			steps []step
		}{
			{"ping", []step{
				{cmd("PING"), "+PONG\r\n"},
				{cmd("ping", "hi"), bulk("hi")},
				{cmd("ping", "a", "b"), "-ERR wrong number of arguments for 'ping' command\r\n"},
				{cmd("ECHO", "x y"), bulk("x y")},
			}},
			{"set get", []step{
				{cmd("SET", "k1", "v1"), ok},
				{cmd("GET", "k1"), bulk("v1")},
				{cmd("get", "missing"), null},
				{cmd("SET", "k1", ""), ok},
				{cmd("GET", "k1"), bulk("")},
			}},
			{"set options", []step{
				{cmd("SET", "k2", "a", "NX"), ok},
				{cmd("SET", "k2", "b", "NX"), null},
				{cmd("SET", "k2", "c", "XX", "GET"), bulk("a")},
				{cmd("SET", "k2-none", "c", "XX"), null},
				{cmd("GET", "k2-none"), null},
				{cmd("SET", "k2", "d", "GET", "SYNC"), bulk("c")},
				{cmd("SET", "k2", "e", "ASYNC", "KEEPTTL"), ok},
				{cmd("GET", "k2"), bulk("e")},
				{cmd("SET", "k2", "f", "NX", "XX"), "-ERR syntax error\r\n"},
				{cmd("SET", "k2", "f", "BOGUS"), "-ERR syntax error\r\n"},
				{cmd("SET", "k2"), "-ERR wrong number of arguments for 'set' command\r\n"},
			}},
			{"del exists", []step{
				{cmd("MSET", "d1", "1", "d2", "2"), ok},
				{cmd("EXISTS", "d1", "d1", "d3"), integer(2)},
				{cmd("DEL", "d1", "d2", "d3"), integer(2)},
				{cmd("DEL", "d1", "SYNC"), integer(0)},
				{cmd("EXISTS", "d1", "d2"), integer(0)},
				// A lone SYNC is a key, not a token.
				{cmd("SET", "SYNC", "x"), ok},
				{cmd("DEL", "SYNC"), integer(1)},
			}},
			{"mset mget", []step{
				{cmd("MSET", "m1", "a", "m2", "b", "ASYNC"), ok},
				{cmd("MSET", "m3", "c", "SYNC"), ok},
				{cmd("MGET", "m1", "nope", "m2", "m3"), array(bulk("a"), null, bulk("b"), bulk("c"))},
				{cmd("MSET", "m1", "a", "m2"), "-ERR wrong number of arguments for 'mset' command\r\n"},
				{cmd("MSET", "m1"), "-ERR wrong number of arguments for 'mset' command\r\n"},
			}},
			{"incr", []step{
				{cmd("INCR", "n"), integer(1)},
				{cmd("INCRBY", "n", "41"), integer(42)},
				{cmd("DECR", "n"), integer(41)},
				{cmd("DECRBY", "n", "50"), integer(-9)},
				{cmd("GET", "n"), bulk("-9")},
				{cmd("INCRBY", "n", "x"), "-ERR value is not an integer or out of range\r\n"},
				{cmd("INCRBY", "n", "+1"), "-ERR value is not an integer or out of range\r\n"},
				{cmd("SET", "s", "abc"), ok},
				{cmd("INCR", "s"), "-ERR value is not an integer or out of range\r\n"},
				{cmd("SET", "big", "9223372036854775807"), ok},
				{cmd("INCR", "big"), "-ERR increment or decrement would overflow\r\n"},
				{cmd("GET", "big"), bulk("9223372036854775807")},
				{cmd("DECRBY", "n", "-9223372036854775808"), "-ERR decrement would overflow\r\n"},
			}},
			{"errors keep the connection", []step{
				{cmd("NOSUCH", "a", "b"), "-ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' \r\n"},
				{cmd("GET"), "-ERR wrong number of arguments for 'get' command\r\n"},
				{cmd("GET", "a", "b"), "-ERR wrong number of arguments for 'get' command\r\n"},
				{cmd("SELECT", "1"), "-ERR DB index is out of range\r\n"},
				{cmd("SELECT", "0"), ok},
				{cmd("SET", "", "v"), "-ERR empty key\r\n"},
				{cmd("SET", strings.Repeat("k", 65), "v"), "-ERR key too large (max 64 bytes)\r\n"},
				{cmd("SET", "k", strings.Repeat("v", 1025)), "-ERR value too large (max 1024 bytes)\r\n"},
				{cmd("MSET", "k", strings.Repeat("v", 1025)), "-ERR value too large..."},
				{cmd("GET", strings.Repeat("k", 65)), null},
				{cmd("PING"), "+PONG\r\n"},
			}},
			{"binary keys and values", []step{
				{cmd("SET", "\x00\xff\r\n key", "\x00\r\n\xfe"), ok},
				{cmd("GET", "\x00\xff\r\n key"), bulk("\x00\r\n\xfe")},
				{cmd("EXISTS", "\x00\xff\r\n key"), integer(1)},
				{cmd("\x01odd\xff"), "-ERR unknown command '\\x01odd\\xff', with args beginning with: \r\n"},
			}},
			{"client", []step{
				{cmd("CLIENT", "GETNAME"), null},
				{cmd("CLIENT", "SETNAME", "worker-1"), ok},
				{cmd("CLIENT", "GETNAME"), bulk("worker-1")},
				{cmd("CLIENT", "SETNAME", "has space"), "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"},
				{cmd("CLIENT", "ID"), ":..."},
				{cmd("CLIENT", "DURABILITY"), bulk("default")},
				{cmd("CLIENT", "DURABILITY", "async"), ok},
				{cmd("CLIENT", "DURABILITY"), bulk("async")},
				{cmd("CLIENT", "DURABILITY", "maybe"), "-ERR durability must be sync, async or default\r\n"},
				{cmd("CLIENT", "SETINFO", "lib-name", "x"), ok},
				{cmd("CLIENT", "NOPE"), "-ERR unknown subcommand 'NOPE'. Try CLIENT HELP.\r\n"},
			}},
			{"client lastrev", []step{
				{cmd("CLIENT", "LASTREV"), integer(0)},
				{cmd("SET", "lr", "1"), ok},
				{cmd("CLIENT", "LASTREV"), ":..."},
				{cmd("SET", "lr", "2", "NX"), null}, // wrote nothing: unchanged
				{cmd("DEL", "no-such-key"), integer(0)},
				{cmd("SET", "", "x"), "-ERR empty key\r\n"},
				{cmd("CLIENT", "LASTREV", "x"), "-ERR wrong number of arguments for 'client|lastrev' command\r\n"},
			}},
			{"config", []step{
				{cmd("CONFIG", "GET", "commit-mode"), array(bulk("commit-mode"), bulk("sync"))},
				{cmd("CONFIG", "GET", "save"), array(bulk("save"), bulk(""))},
				{cmd("CONFIG", "GET", "appendonly"), array(bulk("appendonly"), bulk("yes"))},
				{cmd("CONFIG", "GET", "nothing*"), array()},
				{cmd("CONFIG", "SET", "flush-interval", "25"), ok},
				{cmd("CONFIG", "GET", "flush-*"), array(bulk("flush-interval"), bulk("25ms"))},
				{cmd("CONFIG", "SET", "flush-interval", "5ms"), ok},
				{cmd("CONFIG", "SET", "flush-interval", "soon"), "-ERR invalid flush-interval 'soon'..."},
				{cmd("CONFIG", "SET", "flush-interval", "1000000h"), "-ERR invalid flush-interval '1000000h': must be between 100µs and 1h0m0s\r\n"},
				{cmd("CONFIG", "SET", "flush-interval", "1ns"), "-ERR invalid flush-interval '1ns': must be between 100µs and 1h0m0s\r\n"},
				{cmd("CONFIG", "SET", "flush-interval", "3600001"), "-ERR invalid flush-interval '3600001': must be between 100µs and 1h0m0s\r\n"},
				{cmd("CONFIG", "SET", "flush-interval", "-5"), "-ERR invalid flush-interval '-5': must be between 100µs and 1h0m0s\r\n"},
				{cmd("CONFIG", "SET", "flush-interval", "99999999999999999"), "-ERR invalid flush-interval '99999999999999999': must be between 100µs and 1h0m0s\r\n"},
				// One bad parameter changes none.
				{cmd("CONFIG", "SET", "commit-mode", "async", "flush-interval", "0"), "-ERR invalid flush-interval '0'..."},
				{cmd("CONFIG", "GET", "commit-mode", "flush-interval"), array(bulk("commit-mode"), bulk("sync"), bulk("flush-interval"), bulk("5ms"))},
				{cmd("CONFIG", "SET", "flush-interval", "1h"), ok},
				{cmd("CONFIG", "SET", "flush-interval", "100us"), ok},
				{cmd("CONFIG", "SET", "flush-interval", "5"), ok},
				{cmd("CONFIG", "SET", "commit-mode", "maybe"), "-ERR invalid commit-mode 'maybe': must be sync or async\r\n"},
				{cmd("CONFIG", "SET", "save", ""), "-ERR Unknown option or number of arguments for CONFIG SET - 'save'\r\n"},
				{cmd("CONFIG", "SET", "commit-mode", "async"), ok},
				{cmd("CONFIG", "GET", "commit-mode"), array(bulk("commit-mode"), bulk("async"))},
				{cmd("CONFIG", "SET", "commit-mode", "sync"), ok},
			}},
			{"hello", []step{
				{cmd("HELLO", "4"), "-NOPROTO unsupported protocol version\r\n"},
				{cmd("HELLO", "2", "SETNAME", "h"), "*14\r\n$6\r\nserver\r\n$3\r\nkvd\r\n..."},
				{cmd("CLIENT", "GETNAME"), bulk("h")},
				{cmd("HELLO", "3"), "%7\r\n$6\r\nserver\r\n$3\r\nkvd\r\n..."},
				{cmd("GET", "no-such-key"), "_\r\n"},
				{cmd("CONFIG", "GET", "save"), "%1\r\n" + bulk("save") + bulk("")},
				{cmd("HELLO", "2"), "*14\r\n..."},
				{cmd("GET", "no-such-key"), null},
				{cmd("AUTH", "pw"), "-ERR AUTH <password> called without any password configured..."},
			}},
			{"command", []step{
				{cmd("COMMAND", "COUNT"), ":..."},
				{cmd("COMMAND", "DOCS"), array()},
				{cmd("COMMAND", "INFO", "get", "nope"), array(array(bulk("get"), integer(2),
					array("+readonly\r\n", "+fast\r\n"), integer(1), integer(1), integer(1)), null)},
			}},
			{"waitaof", []step{
				{cmd("SET", "w", "1", "ASYNC"), ok},
				{cmd("WAITAOF", "1", "0", "0"), array(integer(1), integer(0))},
				{cmd("WAITAOF", "0", "0", "0"), array(integer(1), integer(0))},
				{cmd("WAITAOF", "1", "0", "-1"), "-ERR timeout is negative\r\n"},
				{cmd("WAITAOF", "1", "0"), "-ERR wrong number of arguments for 'waitaof' command\r\n"},
			}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				run(t, dialRaw(t, ts.respAddr), tc.steps)
			})
		}
	})
}

func TestINFOSections(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		c := dialRaw(t, ts.respAddr)
		c.do("SET", "a", "1")
		all := c.do("INFO")
		for _, want := range []string{"# Server\r\n", "# Clients\r\n", "# Persistence\r\n", "# Stats\r\n",
			"written_revision:1\r\n", "durable_revision:1\r\n", "checkpointed_revision:", "fsyncs:",
			"records_per_fsync:", "connected_clients:1\r\n", "commit_mode:sync\r\n"} {
			if !strings.Contains(all, want) {
				t.Errorf("INFO lacks %q:\n%s", want, all)
			}
		}
		if got := c.do("INFO", "clients"); strings.Contains(got, "# Persistence") || !strings.Contains(got, "# Clients") {
			t.Errorf("INFO clients returned other sections:\n%s", got)
		}
	})
}

// TestDurabilityTokens checks that SYNC and ASYNC tokens and CLIENT
// DURABILITY choose the commit mode: in a server whose default is async,
// a SYNC write is durable when acknowledged.
func TestDurabilityTokens(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model, engine: engine.Options{CommitMode: engine.CommitAsync, FlushInterval: 1 << 62}})
		c := dialRaw(t, ts.respAddr)
		durableAfter := func(args ...string) bool {
			t.Helper()
			if got := c.do(args...); got != ok && got != integer(1) && got != integer(0) {
				t.Fatalf("%q: %q", args, got)
			}
			st := ts.db.Stats()
			return st.DurableRevision == st.WrittenRevision
		}
		if durableAfter("SET", "a", "1") {
			t.Errorf("async default: plain SET was durable with an hour-long flush interval")
		}
		for _, args := range [][]string{
			{"SET", "a", "2", "SYNC"},
			{"MSET", "a", "3", "b", "4", "SYNC"},
			{"DEL", "b", "SYNC"},
		} {
			c.do("SET", "x", "async")
			if !durableAfter(args...) {
				t.Errorf("%q not durable when acknowledged", args)
			}
		}
		c.do("CLIENT", "DURABILITY", "sync")
		c.do("SET", "x", "y", "ASYNC")
		if !durableAfter("INCR", "counter") {
			t.Errorf("CLIENT DURABILITY sync: INCR not durable when acknowledged")
		}
		c.do("CLIENT", "DURABILITY", "default")
		if durableAfter("SET", "z", "1") {
			t.Errorf("CLIENT DURABILITY default: SET durable in async mode")
		}
		if got := c.do("WAITAOF", "0", "0", "0"); got != array(integer(0), integer(0)) {
			t.Errorf("WAITAOF 0 0 0 before sync = %q, want [0 0]", got)
		}
		if got := c.do("WAITAOF", "1", "0", "0"); got != array(integer(1), integer(0)) {
			t.Errorf("WAITAOF 1 0 0 = %q, want [1 0]", got)
		}
		if st := ts.db.Stats(); st.DurableRevision != st.WrittenRevision {
			t.Errorf("after WAITAOF durable=%d committed=%d", st.DurableRevision, st.WrittenRevision)
		}
	})
}

// TestClientLastRev checks CLIENT LASTREV against the engine's revisions:
// it is the revision of this connection's last successful write, and writes
// that change nothing or fail leave it alone.
func TestClientLastRev(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		c := dialRaw(t, ts.respAddr)
		other := dialRaw(t, ts.respAddr)
		rev := func() string { return integer(int64(ts.db.Stats().WrittenRevision)) }
		c.do("MSET", "a", "1", "b", "2")
		want := rev()
		if got := c.do("CLIENT", "LASTREV"); got != want {
			t.Fatalf("after MSET: %q, want %q", got, want)
		}
		other.do("SET", "c", "3")   // another connection's write
		c.do("SET", "a", "x", "NX") // writes nothing
		c.do("DEL", "zz")           // writes nothing
		if got := c.do("CLIENT", "LASTREV"); got != want {
			t.Fatalf("after writes that changed nothing: %q, want %q", got, want)
		}
		c.do("INCR", "a")
		want = rev()
		if got := c.do("CLIENT", "LASTREV"); got != want {
			t.Fatalf("after INCR: %q, want %q", got, want)
		}
		c.do("SET", "t", "text")
		want = rev()
		if got := c.do("INCR", "t"); got != "-ERR value is not an integer or out of range\r\n" {
			t.Fatalf("INCR text = %q", got)
		}
		other.do("SET", "c", "4")
		if got := c.do("CLIENT", "LASTREV"); got != want {
			t.Fatalf("after a failed INCR: %q, want %q", got, want)
		}
	})
}
