package server

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvdstore/kvd/auth"
	"github.com/kvdstore/kvd/engine"
)

// respCommand is one RESP command. arity follows Redis: n > 0 means exactly
// n arguments (the name included), n < 0 means at least -n.
type respCommand struct {
	name     string
	arity    int
	flags    []string // for COMMAND, as Redis reports them
	keyArgs  bool     // arguments after the name are keys (or values)
	valueArg func(i int) bool
	run      func(c *respConn, args [][]byte)
	requests prometheus.Counter
	// inline: the command never blocks and takes constant work per
	// argument, so the event loop runs it itself. Others run on a worker
	// goroutine while their connection waits (see eventLoop).
	inline bool
	// write, instead of run, makes a write command: it fills the
	// connection's batch (or replies with an error and returns false), and
	// the executor submits the batch without blocking, as it does a run of
	// plain SETs, and answers from its results once it is written.
	write func(c *respConn, args [][]byte) (engine.Durability, writeReply, bool)
	// txnRead makes a read command that a transaction may hold: it
	// fills the connection's batch with get ops (or replies with an error
	// and returns false); EXEC answers it from their results.
	txnRead func(c *respConn, args [][]byte) (writeReply, bool)
}

// commandTable builds the command table. It lives on the Server, not in a
// package variable, because COMMAND refers back to it.
func (s *Server) commandTable() map[string]*respCommand {
	list := []*respCommand{
		{name: "ping", inline: true, arity: -1, flags: []string{"fast"}, run: cmdPing},
		{name: "echo", inline: true, arity: 2, flags: []string{"fast"}, run: cmdEcho},
		{name: "quit", inline: true, arity: -1, flags: []string{"fast"}, run: cmdQuit},
		// AUTH and HELLO check passwords (slow, by design): not inline.
		{name: "hello", arity: -1, flags: []string{"fast"}, run: cmdHello},
		{name: "auth", arity: -2, flags: []string{"fast"}, run: cmdAuth},
		{name: "acl", arity: -2, flags: []string{"admin"}, run: cmdACL},
		{name: "select", inline: true, arity: 2, flags: []string{"fast"}, run: cmdSelect},
		{name: "command", arity: -1, flags: []string{"random"}, run: cmdCommand},
		{name: "client", arity: -2, flags: []string{"admin"}, run: cmdClient},
		{name: "raft", arity: -2, flags: []string{"admin"}, run: cmdRaft},
		{name: "info", arity: -1, flags: []string{"random"}, run: cmdInfo},
		{name: "config", arity: -2, flags: []string{"admin"}, run: cmdConfig},
		{name: "dbsize", arity: 1, flags: []string{"readonly"}, run: cmdDBSize},
		{name: "get", inline: true, arity: 2, flags: []string{"readonly", "fast"}, keyArgs: true, run: cmdGet, txnRead: txnGet},
		{name: "set", arity: -3, flags: []string{"write"}, keyArgs: true,
			valueArg: func(i int) bool { return i == 2 }, write: cmdSet},
		{name: "del", arity: -2, flags: []string{"write"}, keyArgs: true, write: cmdDel},
		{name: "exists", inline: true, arity: -2, flags: []string{"readonly", "fast"}, keyArgs: true, run: cmdExists, txnRead: txnExists},
		{name: "mget", inline: true, arity: -2, flags: []string{"readonly", "fast"}, keyArgs: true, run: cmdMGet, txnRead: txnMGet},
		{name: "mset", arity: -3, flags: []string{"write"}, keyArgs: true,
			valueArg: func(i int) bool { return i >= 2 && i%2 == 0 }, write: cmdMSet},
		{name: "incr", arity: 2, flags: []string{"write", "fast"}, keyArgs: true, write: cmdIncr},
		{name: "decr", arity: 2, flags: []string{"write", "fast"}, keyArgs: true, write: cmdIncr},
		{name: "incrby", arity: 3, flags: []string{"write", "fast"}, keyArgs: true, write: cmdIncr},
		{name: "decrby", arity: 3, flags: []string{"write", "fast"}, keyArgs: true, write: cmdIncr},
		{name: "getrev", inline: true, arity: 2, flags: []string{"readonly", "fast"}, keyArgs: true, run: cmdGetRev, txnRead: txnGetRev},
		{name: "cas", arity: -4, flags: []string{"write", "fast"}, keyArgs: true,
			valueArg: func(i int) bool { return i == 3 }, write: cmdCAS},
		{name: "cad", arity: -3, flags: []string{"write", "fast"}, keyArgs: true, write: cmdCAD},
		{name: "expire", arity: -3, flags: []string{"write", "fast"}, keyArgs: true, write: cmdExpire},
		{name: "pexpire", arity: -3, flags: []string{"write", "fast"}, keyArgs: true, write: cmdExpire},
		{name: "expireat", arity: -3, flags: []string{"write", "fast"}, keyArgs: true, write: cmdExpire},
		{name: "pexpireat", arity: -3, flags: []string{"write", "fast"}, keyArgs: true, write: cmdExpire},
		{name: "persist", arity: -2, flags: []string{"write", "fast"}, keyArgs: true, write: cmdPersist},
		{name: "setex", arity: 4, flags: []string{"write"}, keyArgs: true,
			valueArg: func(i int) bool { return i == 3 }, write: cmdSetEx},
		{name: "psetex", arity: 4, flags: []string{"write"}, keyArgs: true,
			valueArg: func(i int) bool { return i == 3 }, write: cmdSetEx},
		{name: "getex", arity: -2, flags: []string{"write", "fast"}, keyArgs: true, write: cmdGetEx},
		{name: "ttl", inline: true, arity: 2, flags: []string{"readonly", "fast"}, keyArgs: true, run: cmdTTL},
		{name: "pttl", inline: true, arity: 2, flags: []string{"readonly", "fast"}, keyArgs: true, run: cmdTTL},
		{name: "expiretime", inline: true, arity: 2, flags: []string{"readonly", "fast"}, keyArgs: true, run: cmdTTL},
		{name: "pexpiretime", inline: true, arity: 2, flags: []string{"readonly", "fast"}, keyArgs: true, run: cmdTTL},
		{name: "scan", arity: -2, flags: []string{"readonly"}, run: cmdScan},
		{name: "waitaof", arity: 4, flags: []string{}, run: cmdWaitAOF},
		{name: "msetnx", arity: -3, flags: []string{"write"}, keyArgs: true,
			valueArg: func(i int) bool { return i >= 2 && i%2 == 0 }, write: cmdMSetNX},
		{name: "multi", inline: true, arity: 1, flags: []string{"fast"}, run: cmdMulti},
		{name: "exec", arity: 1, flags: []string{}, write: cmdExec},
		{name: "discard", inline: true, arity: 1, flags: []string{"fast"}, run: cmdDiscard},
		{name: "watch", inline: true, arity: -2, flags: []string{"fast"}, keyArgs: true, run: cmdWatch},
		{name: "unwatch", inline: true, arity: 1, flags: []string{"fast"}, run: cmdUnwatch},
		{name: "keys", arity: 2, flags: []string{"readonly"}, run: cmdKeys},
		{name: "type", inline: true, arity: 2, flags: []string{"readonly", "fast"}, keyArgs: true, run: cmdType},
		{name: "strlen", inline: true, arity: 2, flags: []string{"readonly", "fast"}, keyArgs: true, run: cmdStrlen},
		{name: "setnx", arity: 3, flags: []string{"write", "fast"}, keyArgs: true,
			valueArg: func(i int) bool { return i == 2 }, write: cmdSetNX},
		{name: "getdel", arity: 2, flags: []string{"write", "fast"}, keyArgs: true, write: cmdGetDel},
		{name: "append", arity: 3, flags: []string{"write"}, keyArgs: true,
			valueArg: func(i int) bool { return i == 2 }, write: cmdAppend},
		{name: "incrbyfloat", arity: 3, flags: []string{"write", "fast"}, keyArgs: true, write: cmdIncrByFloat},
		{name: "flushdb", arity: -1, flags: []string{"write"}, write: cmdFlushDB},
		{name: "flushall", arity: -1, flags: []string{"write"}, write: cmdFlushDB},
		{name: "unlink", arity: -2, flags: []string{"write", "fast"}, keyArgs: true, write: cmdDel},
		{name: "touch", inline: true, arity: -2, flags: []string{"readonly", "fast"}, keyArgs: true, run: cmdExists},
		{name: "getset", arity: 3, flags: []string{"write", "fast"}, keyArgs: true,
			valueArg: func(i int) bool { return i == 2 }, write: cmdGetSet},
		{name: "memory", arity: -2, flags: []string{"readonly"}, run: cmdMemory},
		{name: "shutdown", inline: true, arity: -1, flags: []string{"admin"}, run: cmdShutdown},
		{name: "time", inline: true, arity: 1, flags: []string{"random", "fast"}, run: cmdTime},
		{name: "changes", arity: -3, flags: []string{"readonly"}, run: cmdChanges},
		{name: "kvwatch", inline: true, arity: -1, flags: []string{"pubsub", "noscript", "loading", "stale"}, run: cmdKVWatch},
		{name: "kvunwatch", inline: true, arity: -1, flags: []string{"pubsub", "noscript", "loading", "stale"}, run: cmdKVUnwatch},
		{name: "reset", inline: true, arity: 1, flags: []string{"noscript", "loading", "stale", "fast"}, run: cmdReset},
	}
	list = append(list, s.jobCommands()...)
	m := make(map[string]*respCommand, len(list))
	for _, cmd := range list {
		cmd.requests = s.metrics.requests.WithLabelValues("resp", cmd.name)
		m[cmd.name] = cmd
	}
	return m
}

func cmdPing(c *respConn, args [][]byte) {
	if c.subscribed() && len(args) <= 2 {
		// As Redis answers PING in subscribed mode.
		c.writeArray(2)
		c.writeBulkString("pong")
		if len(args) == 2 {
			c.writeBulk(args[1])
		} else {
			c.writeBulkString("")
		}
		return
	}
	switch len(args) {
	case 1:
		c.writeStatus("PONG")
	case 2:
		c.writeBulk(args[1])
	default:
		c.writeError("ERR wrong number of arguments for 'ping' command")
	}
}

func cmdEcho(c *respConn, args [][]byte) { c.writeBulk(args[1]) }

func cmdQuit(c *respConn, _ [][]byte) {
	c.writeOK()
	c.quit = true
}

// cmdAuth answers AUTH password (as the default user) and AUTH user
// password.
func cmdAuth(c *respConn, args [][]byte) {
	users := c.s.users.Load()
	switch {
	case len(args) > 3:
		c.writeError(respErrSyntax)
	case users == nil:
		c.writeError("ERR AUTH <password> called without any password configured for the default user. " +
			"Are you sure your configuration is correct?")
	case len(args) == 2:
		c.writeOKOr(c.login(users, []byte(auth.DefaultUser), args[1]))
	default:
		c.writeOKOr(c.login(users, args[1], args[2]))
	}
}

// writeOKOr writes +OK if msg is empty, else the error msg.
func (c *respConn) writeOKOr(msg string) {
	if msg != "" {
		c.writeError(msg)
		return
	}
	c.writeOK()
}

func cmdSelect(c *respConn, args [][]byte) {
	n, err := strconv.Atoi(string(args[1]))
	switch {
	case err != nil:
		c.writeError(respErrNotInteger)
	case n != 0:
		c.writeError("ERR DB index is out of range")
	default:
		c.writeOK()
	}
}

// cmdHello answers HELLO [protover [AUTH user pass] [SETNAME name]]. kvd
// speaks RESP2 and RESP3 (the replies it sends differ only in nulls and maps).
func cmdHello(c *respConn, args [][]byte) {
	proto := 0
	if len(args) > 1 {
		n, err := strconv.Atoi(string(args[1]))
		if err != nil {
			c.writeError("ERR Protocol version is not an integer or out of range")
			return
		}
		if n != 2 && n != 3 {
			c.writeError("NOPROTO unsupported protocol version")
			return
		}
		proto = n
	}
	name, hasName := "", false
	var user, pass []byte
	for i := 2; i < len(args); i++ {
		switch {
		case equalFold(args[i], "auth") && i+2 < len(args):
			user, pass = args[i+1], args[i+2]
			i += 2
		case equalFold(args[i], "setname") && i+1 < len(args):
			name, hasName = string(args[i+1]), true
			i++
		default:
			c.writeError("ERR Syntax error in HELLO option '" + printable(args[i], 64) + "'")
			return
		}
	}
	if hasName {
		if msg := checkClientName(name); msg != "" {
			c.writeError(msg)
			return
		}
	}
	// With no users configured every client is the default user, as on a
	// Redis server without requirepass, and AUTH is ignored.
	if users := c.s.users.Load(); users != nil {
		if user != nil {
			if msg := c.login(users, user, pass); msg != "" {
				c.writeError(msg)
				return
			}
		}
		if u, _ := c.user(); u == nil {
			c.writeError(respErrHelloNoAuth)
			return
		}
	}
	if hasName {
		c.name.Store(&name)
	}
	if proto != 0 {
		c.resp3 = proto == 3
		c.push.resp3.Store(c.resp3)
	}
	cur := 2
	if c.resp3 {
		cur = 3
	}
	c.writeMap(7)
	c.writeBulkString("server")
	c.writeBulkString("kvd")
	c.writeBulkString("version")
	c.writeBulkString(c.s.cfg.Version)
	c.writeBulkString("proto")
	c.writeInt(int64(cur))
	c.writeBulkString("id")
	c.writeInt(c.id)
	c.writeBulkString("mode")
	c.writeBulkString("standalone")
	c.writeBulkString("role")
	c.writeBulkString("master")
	c.writeBulkString("modules")
	c.writeArray(0)
}

func checkClientName(name string) string {
	for i := range len(name) {
		if name[i] <= ' ' || name[i] > '~' {
			return "ERR Client names cannot contain spaces, newlines or special characters."
		}
	}
	return ""
}

// cmdCommand answers COMMAND, COMMAND COUNT, COMMAND LIST, COMMAND INFO and
// COMMAND DOCS (empty: redis-cli only uses it for hints).
func cmdCommand(c *respConn, args [][]byte) {
	names := make([]string, 0, len(c.s.cmds))
	for name := range c.s.cmds {
		names = append(names, name)
	}
	slices.Sort(names)
	if len(args) == 1 {
		c.writeArray(len(names))
		for _, n := range names {
			c.writeCommandInfo(c.s.cmds[n])
		}
		return
	}
	switch {
	case equalFold(args[1], "count"):
		c.writeInt(int64(len(names)))
	case equalFold(args[1], "list"):
		c.writeArray(len(names))
		for _, n := range names {
			c.writeBulkString(n)
		}
	case equalFold(args[1], "info"):
		c.writeArray(len(args) - 2)
		for _, a := range args[2:] {
			var buf [32]byte
			if cmd, ok := c.s.cmds[string(lower(buf[:0], a))]; ok {
				c.writeCommandInfo(cmd)
			} else {
				c.writeNull()
			}
		}
	case equalFold(args[1], "docs"):
		c.writeMap(0)
	default:
		c.writeError("ERR unknown subcommand '" + printable(args[1], 64) + "'. Try COMMAND HELP.")
	}
}

func (c *respConn) writeCommandInfo(cmd *respCommand) {
	first, last, step := 0, 0, 0
	if cmd.keyArgs {
		first, last, step = 1, 1, 1
		switch cmd.name {
		case "mset", "msetnx":
			last, step = -1, 2
		case "del", "exists", "mget", "watch", "unlink", "touch":
			last = -1
		}
	}
	c.writeArray(6)
	c.writeBulkString(cmd.name)
	c.writeInt(int64(cmd.arity))
	c.writeArray(len(cmd.flags))
	for _, f := range cmd.flags {
		c.writeStatus(f)
	}
	c.writeInt(int64(first))
	c.writeInt(int64(last))
	c.writeInt(int64(step))
}

// cmdClient answers CLIENT ID, SETNAME, GETNAME, SETINFO, LIST, INFO, KILL,
// HELP (resp_admin.go) and kvd's own
// CLIENT DURABILITY [sync|async|default] and CLIENT LASTREV (the revision of
// this connection's last successful write, 0 before any).
func cmdClient(c *respConn, args [][]byte) {
	sub := args[1]
	switch {
	case equalFold(sub, "id") && len(args) == 2:
		c.writeInt(c.id)
	case equalFold(sub, "getname") && len(args) == 2:
		name := c.clientName()
		c.writeBulkOrNull([]byte(name), name != "")
	case equalFold(sub, "setname") && len(args) == 3:
		if msg := checkClientName(string(args[2])); msg != "" {
			c.writeError(msg)
			return
		}
		name := string(args[2])
		c.name.Store(&name)
		c.writeOK()
	case equalFold(sub, "setinfo") && len(args) == 4:
		c.writeOK()
	case equalFold(sub, "list"):
		c.clientList(args[2:])
	case equalFold(sub, "info") && len(args) == 2:
		c.writeBulkString(c.clientLine(time.Now()))
	case equalFold(sub, "kill") && len(args) >= 3:
		c.clientKill(args[2:])
	case equalFold(sub, "help") && len(args) == 2:
		c.writeHelp(clientHelp...)
	case equalFold(sub, "consistency"):
		c.clientConsistency(args[2:])
	case equalFold(sub, "redirect"):
		c.clientRedirect(args[2:])
	case equalFold(sub, "lastrev") && len(args) == 2:
		c.writeInt(int64(c.lastRev))
	case equalFold(sub, "durability") && len(args) == 2:
		if c.durability == engine.DurabilityDefault {
			c.writeBulkString("default")
		} else {
			c.writeBulkString(durabilityName(c.durability, 0))
		}
	case equalFold(sub, "durability") && len(args) == 3:
		d, ok := parseDurability(args[2])
		if !ok {
			c.writeError("ERR durability must be sync, async or default")
			return
		}
		c.durability = d
		c.writeOK()
	case equalFold(sub, "id"), equalFold(sub, "getname"), equalFold(sub, "setname"),
		equalFold(sub, "setinfo"), equalFold(sub, "durability"), equalFold(sub, "lastrev"),
		equalFold(sub, "info"), equalFold(sub, "kill"), equalFold(sub, "help"):
		c.writeError("ERR wrong number of arguments for 'client|" + strings.ToLower(string(sub)) + "' command")
	default:
		c.writeError("ERR unknown subcommand '" + printable(sub, 64) + "'. Try CLIENT HELP.")
	}
}

func cmdDBSize(c *respConn, _ [][]byte) {
	n, err := c.reads().Count()
	if err != nil {
		c.writeError(respError(err))
		return
	}
	c.writeInt(int64(n))
}

// cmdInfo answers INFO [section ...] with the sections server, clients,
// memory, persistence, stats and keyspace.
func cmdInfo(c *respConn, args [][]byte) {
	want := map[string]bool{}
	for _, a := range args[1:] {
		want[strings.ToLower(string(a))] = true
	}
	all := len(want) == 0 || want["all"] || want["everything"] || want["default"]
	var b strings.Builder
	section := func(name string, fill func()) {
		if !all && !want[name] {
			return
		}
		if name == "keyspace" && c.restricted() {
			return // the whole keyspace's figures: not for a user restricted to some keys
		}
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		b.WriteString("# " + strings.ToUpper(name[:1]) + name[1:] + "\r\n")
		fill()
	}
	field := func(k string, v any) { fmt.Fprintf(&b, "%s:%v\r\n", k, v) }
	s := c.s
	section("server", func() {
		uptime := time.Since(s.started)
		field("kvd_version", s.cfg.Version)
		// The Redis version whose command semantics kvd follows, for
		// clients that check it.
		field("redis_version", "7.0.0")
		field("redis_mode", "standalone")
		field("os", runtime.GOOS)
		field("arch_bits", strconv.IntSize)
		field("go_version", runtime.Version())
		field("process_id", os.Getpid())
		field("tcp_port", portOf(c.laddr))
		field("uptime_in_seconds", int64(uptime.Seconds()))
		field("uptime_in_days", int64(uptime.Hours()/24))
	})
	section("clients", func() {
		field("connected_clients", s.Clients())
		field("blocked_clients", 0)
		field("maxclients", s.cfg.MaxClients)
		// Bytes held for requests not yet complete, against their
		// budget (Config.RESPPendingBytes).
		field("pending_request_bytes", s.pending.used.Load())
	})
	section("memory", func() {
		m := readMemoryStats()
		field("used_memory", m.heapBytes)
		if m.rssBytes >= 0 {
			field("used_memory_rss", m.rssBytes)
		}
		field("gogc", m.gcPercent)
		field("gc_cycles", m.gcCycles)
		// The budget (Config.MaxMemory) and what counts against it.
		st := s.store.Stats()
		field("max_memory", s.cfg.MaxMemory)
		field("memtable_bytes", st.MemtableBytes)
		field("memtable_max_bytes", st.MaxMemtableBytes)
		field("heap_live_bytes", m.heapLive)
		field("heap_total_bytes", m.heapTotal)
		field("heap_released_bytes", m.heapReleased)
		field("go_memory_limit", m.goMemoryLimit)
		if m.rssAnon >= 0 {
			field("rss_anon_bytes", m.rssAnon)
			field("rss_file_bytes", m.rssFile)
		}
	})
	section("persistence", func() {
		st := s.store.Stats()
		field("commit_mode", st.CommitMode)
		field("flush_interval_ms", float64(s.store.FlushInterval())/float64(time.Millisecond))
		field("written_revision", st.WrittenRevision)
		field("durable_revision", st.DurableRevision)
		field("checkpointed_revision", st.CheckpointedRevision)
		field("fsyncs", st.Fsyncs)
		field("records_synced", st.RecordsSynced)
		field("records_per_fsync", fmt.Sprintf("%.2f", recordsPerFsync(st)))
		field("max_fsync_ms", fmt.Sprintf("%.3f", float64(st.MaxFsync)/float64(time.Millisecond)))
		// How long log records stay written but not fsynced: what a power
		// loss can take in async mode (see engine.Stats).
		field("unsynced_oldest_age_ms", fmt.Sprintf("%.3f", float64(st.OldestUnsynced)/float64(time.Millisecond)))
		field("unsynced_max_age_last_minute_ms", fmt.Sprintf("%.3f", float64(st.MaxUnsyncedLastMinute)/float64(time.Millisecond)))
		field("unsynced_max_age_ms", fmt.Sprintf("%.3f", float64(st.MaxUnsyncedSinceOpen)/float64(time.Millisecond)))
		field("wal_bytes", st.WALBytes)
		field("wal_segments", st.WALSegments)
		field("memtable_bytes", st.MemtableBytes)
		field("checkpoints", st.Checkpoints)
		s.infoDisk(field)
		field("recovery_cuts", st.Recovery.Cuts)
		field("recovery_cut_bytes", st.Recovery.Bytes)
		field("recovery_cut_records", st.Recovery.Records)
		if st.Recovery.Cuts > 0 {
			field("recovery_cut_reason", oneLine(st.Recovery.Reason))
		}
		field("checkpoint_failures", st.CheckpointFailures)
		if st.CheckpointErr != nil {
			field("checkpoint_last_error", oneLine(st.CheckpointErr.Error()))
		}
		field("log_write_failures", st.LogWriteFailures)
		field("log_records_refused", st.LogRecordsRefused)
		if st.LogWriteErr != nil {
			field("log_last_write_error", oneLine(st.LogWriteErr.Error()))
		}
		// A damaged state file (see engine.Stats.Corruptions).
		if st.Corruptions > 0 {
			field("state_status", "degraded")
		} else {
			field("state_status", "ok")
		}
		field("state_corruptions", st.Corruptions)
		if st.CorruptionErr != nil {
			field("state_last_corruption", oneLine(st.CorruptionErr.Error()))
			field("state_last_corruption_time", st.CorruptionTime.Unix())
		}
		s.infoJobs(field)
		field("aof_enabled", 1)
		if st.Err != nil {
			field("log_status", "failed")
			field("log_error", strings.NewReplacer("\r", " ", "\n", " ").Replace(st.Err.Error()))
		} else {
			field("log_status", "ok")
		}
	})
	section("replication", func() { s.infoReplication(field) })
	section("stats", func() {
		field("total_connections_received", s.totalConns.Load())
		field("total_commands_processed", s.totalCommands.Load())
		field("rejected_connections", s.rejected.Load())
		field("expired_keys", s.store.Stats().ExpiredRemoved)
	})
	// Keyspace counts the keys (as DBSIZE, reading every key); Redis
	// leaves an empty database out.
	section("keyspace", func() {
		if n, err := s.store.Count(); err == nil && n > 0 {
			field("db0", fmt.Sprintf("keys=%d,expires=0,avg_ttl=0", n))
		}
	})
	c.writeBulkString(b.String())
}

func recordsPerFsync(st engine.Stats) float64 {
	if st.Fsyncs == 0 {
		return 0
	}
	return float64(st.RecordsSynced) / float64(st.Fsyncs)
}

func portOf(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return addr[i+1:]
	}
	return addr
}

// configParams returns the CONFIG GET parameters and their current values:
// kvd's own, and the ones redis-cli and redis-benchmark ask for at start.
func (s *Server) configParams() [][2]string {
	return [][2]string{
		{"commit-mode", s.store.CommitMode().String()},
		{"flush-interval", s.store.FlushInterval().String()},
		{"max-value-size", strconv.Itoa(s.cfg.MaxValueSize)},
		{"max-key-size", strconv.Itoa(s.cfg.MaxKeySize)},
		{"maxclients", strconv.Itoa(s.cfg.MaxClients)},
		{"timeout", strconv.FormatInt(s.idleTimeout.Load()/int64(time.Second), 10)},
		{"proto-max-bulk-len", strconv.Itoa(max(s.cfg.MaxKeySize, s.cfg.MaxValueSize))},
		{"databases", "1"},
		{"save", ""},
		{"appendonly", "yes"},
	}
}

// cmdConfig answers CONFIG GET pattern [pattern ...], CONFIG SET
// (commit-mode, flush-interval) and CONFIG RESETSTAT.
func cmdConfig(c *respConn, args [][]byte) {
	sub := args[1]
	switch {
	case equalFold(sub, "get") && len(args) >= 3:
		params := c.s.configParams()
		var hits [][2]string
		for _, p := range params {
			for _, pat := range args[2:] {
				if globMatch(lowerBytes(pat), []byte(p[0])) {
					hits = append(hits, p)
					break
				}
			}
		}
		c.writeMap(len(hits))
		for _, h := range hits {
			c.writeBulkString(h[0])
			c.writeBulkString(h[1])
		}
	case equalFold(sub, "set") && len(args) >= 4 && len(args)%2 == 0:
		// Check every parameter before changing any, as Redis does.
		var sets []func()
		for i := 2; i < len(args); i += 2 {
			set, msg := c.s.configSet(strings.ToLower(string(args[i])), string(args[i+1]))
			if msg != "" {
				c.writeError(msg)
				return
			}
			sets = append(sets, set)
		}
		for _, set := range sets {
			set()
		}
		c.writeOK()
	case equalFold(sub, "resetstat") && len(args) == 2:
		c.writeOK()
	case equalFold(sub, "get"), equalFold(sub, "set"), equalFold(sub, "resetstat"):
		c.writeError("ERR wrong number of arguments for 'config|" + strings.ToLower(string(sub)) + "' command")
	default:
		c.writeError("ERR unknown subcommand '" + printable(sub, 64) + "'. Try CONFIG HELP.")
	}
}

// Bounds of the flush-interval that CONFIG SET (and kvd's --flush-interval)
// accept: below 100µs the flusher would fsync nearly back to back and gain
// nothing over sync commits; an hour is already far more than a power
// failure should be allowed to take (tests use it to keep async writes
// unsynced), and beyond it a typo ("1000000h") would mean never.
const (
	MinFlushInterval = 100 * time.Microsecond
	MaxFlushInterval = time.Hour
)

// configSet checks one CONFIG SET parameter and returns the function that
// applies it, or the error reply. Settable: commit-mode (sync or async) and
// flush-interval (MinFlushInterval to MaxFlushInterval, a Go duration or a
// number of milliseconds).
func (s *Server) configSet(name, value string) (func(), string) {
	switch name {
	case "commit-mode":
		m, err := engine.ParseCommitMode(strings.ToLower(value))
		if err != nil {
			return nil, "ERR invalid commit-mode '" + value + "': must be sync or async"
		}
		return func() {
			s.store.SetCommitMode(m)
			s.log.Info("commit mode changed", "mode", m)
		}, ""
	case "flush-interval":
		d, err := parseInterval(value)
		if err != nil {
			return nil, "ERR invalid flush-interval '" + value + "': " + err.Error()
		}
		return func() {
			if err := s.store.SetFlushInterval(d); err != nil {
				s.log.Error("flush interval not changed", "err", err)
				return
			}
			s.log.Info("flush interval changed", "interval", d)
		}, ""
	case "timeout":
		// Seconds, as in Redis; 0 turns the idle timeout off.
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil || n < 0 || n > math.MaxInt64/int64(time.Second) {
			return nil, "ERR invalid timeout '" + value + "': must be a number of seconds, 0 for none"
		}
		return func() {
			s.idleTimeout.Store(n * int64(time.Second))
			s.log.Info("resp idle timeout changed", "timeout", time.Duration(n)*time.Second)
		}, ""
	}
	return nil, "ERR Unknown option or number of arguments for CONFIG SET - '" + name + "'"
}

// parseInterval parses a Go duration ("10ms") or a bare number of
// milliseconds ("10") between MinFlushInterval and MaxFlushInterval.
func parseInterval(v string) (time.Duration, error) {
	var d time.Duration
	if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
		if ms > int64(MaxFlushInterval/time.Millisecond) {
			ms = int64(MaxFlushInterval/time.Millisecond) + 1 // out of range, without overflow
		}
		d = time.Duration(ms) * time.Millisecond
	} else if d, err = time.ParseDuration(v); err != nil {
		return 0, fmt.Errorf("want a duration such as 10ms")
	}
	if d < MinFlushInterval || d > MaxFlushInterval {
		return 0, fmt.Errorf("must be between %v and %v", MinFlushInterval, MaxFlushInterval)
	}
	return d, nil
}

func lowerBytes(b []byte) []byte {
	return []byte(strings.ToLower(string(b)))
}
