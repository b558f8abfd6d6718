package server_test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/server"
)

// TestStringCommands checks SETNX, GETDEL, APPEND, STRLEN, TYPE,
// INCRBYFLOAT, KEYS, MEMORY USAGE and FLUSHDB against Redis's replies.
func TestStringCommands(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model, engine: engine.Options{MaxValueSize: 16}, cfg: server.Config{MaxValueSize: 16}})
		tests := []struct {
			name  string
			steps []step
		}{
			{"setnx", []step{
				{cmd("SETNX", "s", "1"), integer(1)},
				{cmd("SETNX", "s", "2"), integer(0)},
				{cmd("GET", "s"), bulk("1")},
				{cmd("SETNX", "s"), "-ERR wrong number of arguments for 'setnx' command\r\n"},
			}},
			{"getdel", []step{
				{cmd("SET", "g", ""), ok},
				{cmd("GETDEL", "g"), bulk("")},
				{cmd("GETDEL", "g"), null},
				{cmd("EXISTS", "g"), integer(0)},
			}},
			{"append strlen type", []step{
				{cmd("TYPE", "a"), "+none\r\n"},
				{cmd("STRLEN", "a"), integer(0)},
				{cmd("APPEND", "a", "Hello"), integer(5)},
				{cmd("APPEND", "a", " World"), integer(11)},
				{cmd("GET", "a"), bulk("Hello World")},
				{cmd("STRLEN", "a"), integer(11)},
				{cmd("TYPE", "a"), "+string\r\n"},
				{cmd("APPEND", "a", "123456"), "-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n"},
				{cmd("GET", "a"), bulk("Hello World")},
			}},
			{"incrbyfloat", []step{
				{cmd("INCRBYFLOAT", "f", "10.5"), bulk("10.5")},
				{cmd("INCRBYFLOAT", "f", "0.1"), bulk("10.6")},
				{cmd("INCRBYFLOAT", "f", "-5"), bulk("5.6")},
				{cmd("SET", "f", "5.0e3"), ok},
				{cmd("INCRBYFLOAT", "f", "2.0e2"), bulk("5200")},
				{cmd("INCRBYFLOAT", "f", "x"), "-ERR value is not a valid float\r\n"},
				{cmd("INCRBYFLOAT", "f", "nan"), "-ERR value is not a valid float\r\n"},
				{cmd("INCRBYFLOAT", "f", "inf"), "-ERR increment would produce NaN or Infinity\r\n"},
				{cmd("SET", "f", "text"), ok},
				{cmd("INCRBYFLOAT", "f", "1"), "-ERR value is not a valid float\r\n"},
				{cmd("GET", "f"), bulk("text")},
			}},
			{"getset unlink touch", []step{
				{cmd("GETSET", "gs", "1"), null},
				{cmd("GETSET", "gs", "2"), bulk("1")},
				{cmd("TOUCH", "gs", "gs", "nope"), integer(2)},
				{cmd("UNLINK", "gs", "nope"), integer(1)},
				{cmd("GET", "gs"), null},
			}},
			{"memory usage", []step{
				{cmd("SET", "m", "12345"), ok},
				{cmd("MEMORY", "USAGE", "m"), integer(1 + 5 + 64)},
				{cmd("MEMORY", "USAGE", "m", "SAMPLES", "0"), integer(1 + 5 + 64)},
				{cmd("MEMORY", "USAGE", "nope"), null},
				{cmd("MEMORY", "USAGE", "m", "SAMPLES"), "-ERR wrong number of arguments for 'memory|usage' command\r\n"},
				{cmd("MEMORY", "FROB"), "-ERR unknown subcommand 'FROB'. Try MEMORY HELP.\r\n"},
			}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) { run(t, dialRaw(t, ts.respAddr), tt.steps) })
		}

		// KEYS and FLUSHDB see every key: run them last, on their own.
		c := dialRaw(t, ts.respAddr)
		run(t, c, []step{
			{cmd("FLUSHDB"), ok},
			{cmd("KEYS", "*"), array()},
			{cmd("MSET", "user:1", "a", "user:2", "b", "user:10", "c", "u*x", "d", "order:1", "e"), ok},
			{cmd("KEYS", "*"), array(bulk("order:1"), bulk("u*x"), bulk("user:1"), bulk("user:10"), bulk("user:2"))},
			{cmd("KEYS", "user:?"), array(bulk("user:1"), bulk("user:2"))},
			{cmd("KEYS", "user:[^1]*"), array(bulk("user:2"))},
			{cmd("KEYS", `u\*x`), array(bulk("u*x"))},
			{cmd("KEYS", "user:1"), array(bulk("user:1"))},
			{cmd("KEYS", "nomatch*"), array()},
			{cmd("FLUSHALL", "LATER"), "-ERR syntax error\r\n"},
			{cmd("FLUSHALL", "ASYNC"), ok},
			{cmd("DBSIZE"), integer(0)},
			{cmd("FLUSHDB", "SYNC"), ok},
		})
	})
}

// TestKeysManyChunks lists more keys than one chunk of the store's scan.
func TestKeysManyChunks(t *testing.T) {
	ts := startServer(t, serverOpts{})
	var b engine.Batch
	for i := range 10000 {
		b.Put([]byte("k"+strconv.Itoa(i)), []byte("v"))
	}
	if _, err := ts.db.Write(&b, engine.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, ts.respAddr)
	if got := c.do("KEYS", "*"); !strings.HasPrefix(got, "*10000\r\n") {
		t.Fatalf("KEYS * = %.40q..., want 10000 keys", got)
	}
	if got := c.do("KEYS", "k999*"); got != array(bulk("k999"), bulk("k9990"), bulk("k9991"), bulk("k9992"), bulk("k9993"),
		bulk("k9994"), bulk("k9995"), bulk("k9996"), bulk("k9997"), bulk("k9998"), bulk("k9999")) {
		t.Fatalf("KEYS k999* = %q", got)
	}
}

// TestFlushDBOneRevision: FLUSHDB deletes keys of the state file and of
// the memtable in one write, and they stay deleted after a restart.
func TestFlushDBOneRevision(t *testing.T) {
	dir := t.TempDir()
	db, err := engine.Open(dir, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := db.Put([]byte("old"+strconv.Itoa(i)), []byte("v"), engine.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil { // checkpoints them into the state file
		t.Fatal(err)
	}
	ts := startServer(t, serverOpts{dir: dir})
	c := dialRaw(t, ts.respAddr)
	run(t, c, []step{{cmd("SET", "new", "v"), ok}})
	before := ts.db.WrittenRevision()
	run(t, c, []step{
		{cmd("FLUSHDB"), ok},
		{cmd("DBSIZE"), integer(0)},
		{cmd("KEYS", "*"), array()},
	})
	if after := ts.db.WrittenRevision(); after != before+1 {
		t.Errorf("FLUSHDB took revisions %d to %d, want one", before, after)
	}
	if d := ts.db.DurableRevision(); d < before+1 {
		t.Errorf("FLUSHDB acknowledged at durable revision %d, before its own %d", d, before+1)
	}
}

// TestClientListKill checks CLIENT LIST, INFO, KILL and HELP.
func TestClientListKill(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		me := dialRaw(t, ts.respAddr)
		other := dialRaw(t, ts.respAddr)
		third := dialRaw(t, ts.respAddr)
		run(t, other, []step{{cmd("CLIENT", "SETNAME", "worker"), ok}})
		run(t, third, []step{{cmd("PING"), "+PONG\r\n"}}) // accepted and counted before the LIST
		myID := strings.Trim(me.do("CLIENT", "ID"), ":\r\n")
		otherID := strings.Trim(other.do("CLIENT", "ID"), ":\r\n")

		list := me.do("CLIENT", "LIST")
		line := regexp.MustCompile(`(?m)^id=` + otherID + ` addr=127\.0\.0\.1:\d+ laddr=\S+ name=worker age=\d+ idle=\d+ flags=N db=0 sub=0 omem=\d+ cmd=client user=default$`)
		if !line.MatchString(list) || !strings.Contains(list, "id="+myID+" ") || strings.Count(list, "id=") != 3 {
			t.Errorf("CLIENT LIST = %q", list)
		}
		if got := me.do("CLIENT", "LIST", "ID", otherID); strings.Count(got, "id=") != 1 || !strings.Contains(got, "id="+otherID+" ") {
			t.Errorf("CLIENT LIST ID %s = %q", otherID, got)
		}
		if got := me.do("CLIENT", "LIST", "TYPE", "pubsub"); got != bulk("") {
			t.Errorf("CLIENT LIST TYPE pubsub = %q", got)
		}
		if got := me.do("CLIENT", "INFO"); !strings.Contains(got, "id="+myID+" ") || !strings.Contains(got, "cmd=client") {
			t.Errorf("CLIENT INFO = %q", got)
		}
		if got := me.do("CLIENT", "HELP"); !strings.HasPrefix(got, "*") || !strings.Contains(got, "+KILL <option> <value>") {
			t.Errorf("CLIENT HELP = %q", got)
		}

		run(t, me, []step{
			{cmd("CLIENT", "KILL", "ID", myID), integer(0)}, // SKIPME yes
			{cmd("CLIENT", "KILL", "ID", "0"), "-ERR client-id should be greater than 0\r\n"},
			{cmd("CLIENT", "KILL", "1.2.3.4:5"), "-ERR No such client\r\n"},
			{cmd("CLIENT", "KILL", "ID", otherID), integer(1)},
		})
		other.expectClosed()
		addr := third.nc.LocalAddr().String()
		run(t, me, []step{{cmd("CLIENT", "KILL", addr), ok}})
		third.expectClosed()
		run(t, me, []step{{cmd("CLIENT", "KILL", "ID", myID, "SKIPME", "no"), integer(1)}})
		me.expectClosed()
		if n := pollClients(ts.srv, 0); n != 0 {
			t.Errorf("%d clients left after the kills", n)
		}
	})
}

// pollClients waits up to 10s for the server to count want clients and
// returns the last count.
func pollClients(s *server.Server, want int) int {
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := s.Clients()
		if n == want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestShutdownCommand: SHUTDOWN (after a refused ABORT) closes its
// connection without a reply and signals ShutdownRequested; the server
// itself goes on until Shutdown.
func TestShutdownCommand(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		c := dialRaw(t, ts.respAddr)
		run(t, c, []step{
			{cmd("SHUTDOWN", "ABORT"), "-ERR No shutdown in progress.\r\n"},
			{cmd("SHUTDOWN", "LATER"), "-ERR syntax error\r\n"},
		})
		select {
		case <-ts.srv.ShutdownRequested():
			t.Fatal("shutdown requested before SHUTDOWN")
		default:
		}
		c.send("SHUTDOWN", "NOSAVE", "NOW")
		if rest := c.expectClosed(); rest != "" {
			t.Errorf("SHUTDOWN replied %q, want nothing", rest)
		}
		select {
		case <-ts.srv.ShutdownRequested():
		case <-time.After(10 * time.Second):
			t.Fatal("SHUTDOWN did not signal ShutdownRequested")
		}
		run(t, dialRaw(t, ts.respAddr), []step{{cmd("PING"), "+PONG\r\n"}})
	})
}

func TestTime(t *testing.T) {
	c := dialRaw(t, startServer(t, serverOpts{}).respAddr)
	got := c.do("TIME")
	m := regexp.MustCompile(`^\*2\r\n\$\d+\r\n(\d+)\r\n\$\d+\r\n(\d+)\r\n$`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("TIME = %q", got)
	}
	sec, _ := strconv.ParseInt(m[1], 10, 64)
	usec, _ := strconv.ParseInt(m[2], 10, 64)
	if d := time.Since(time.Unix(sec, usec*1000)); d < -time.Minute || d > time.Minute || usec >= 1e6 {
		t.Errorf("TIME = %s s %s µs, %v from now", m[1], m[2], d)
	}
}
