package server

import (
	"errors"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/kvdstore/kvd/auth"
)

// Authentication and authorization over RESP. With Config.Users set, a
// connection starts unauthenticated: it may only AUTH, HELLO (with AUTH)
// and QUIT; anything else gets -NOAUTH. Once authenticated, every command
// is checked in respConn.command, after its arity, against the access the
// table below gives it: a permission (read, write, admin) and the keys it
// reaches. A command queued in a transaction is checked when it is queued.
//
// A connection remembers its user by name: after a reload (ACL LOAD,
// SIGHUP) the name is looked up again on its next command, so a changed
// user's permissions apply at once and a removed user's connection gets
// -NOAUTH.

// RESP errors of authentication and authorization, as Redis words them.
const (
	respErrNoAuth      = "NOAUTH Authentication required."
	respErrWrongPass   = "WRONGPASS invalid username-password pair or user is disabled."
	respErrNoPermKey   = "NOPERM No permissions to access a key"
	respErrHelloNoAuth = "NOAUTH HELLO must be called with the client already authenticated, " +
		"otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate " +
		"the client and select the RESP protocol version at the same time"
)

func respErrNoPerm(user, cmd string) string {
	return "NOPERM User " + user + " has no permissions to run the '" + cmd + "' command"
}

// keyScope is how a command reaches keys, which decides what a user
// restricted to key prefixes may do with it.
type keyScope uint8

const (
	scopeNone     keyScope = iota // reaches no key
	scopeKeys                     // the keys access.keys returns: each must be the user's
	scopeFiltered                 // lists keys (SCAN, KEYS): the reply holds only the user's
	scopeFilter                   // CHANGES: its KEY or PREFIX option must lie within the user's
	scopeAll                      // the whole keyspace at once: refused to a restricted user
)

// access is what running a command takes.
type access struct {
	perm  auth.Perm                     // 0: any authenticated user
	sub   func(args [][]byte) auth.Perm // instead of perm, when it depends on the arguments
	scope keyScope
	keys  func(args [][]byte) [][]byte // scopeKeys: the key arguments
}

// Key positions. Options, values and a trailing SYNC or ASYNC are not keys.
func firstKey(args [][]byte) [][]byte { return args[1:2] }
func allKeys(args [][]byte) [][]byte  { return args[1:] }

// keysThenDurability: DEL, UNLINK, PERSIST: key [key ...] [SYNC|ASYNC].
func keysThenDurability(args [][]byte) [][]byte {
	keys := args[1:]
	if len(keys) > 1 && isDurability(keys[len(keys)-1]) {
		keys = keys[:len(keys)-1]
	}
	return keys
}

// keyValuePairs: MSET, MSETNX: key value [key value ...] [SYNC|ASYNC].
func keyValuePairs(args [][]byte) [][]byte {
	var keys [][]byte
	for i := 1; i+1 < len(args); i += 2 {
		keys = append(keys, args[i])
	}
	return keys
}

// memoryKeys: MEMORY USAGE key [SAMPLES n].
func memoryKeys(args [][]byte) [][]byte {
	if equalFold(args[1], "usage") && len(args) > 2 {
		return args[2:3]
	}
	return nil
}

func isDurability(b []byte) bool { return equalFold(b, "sync") || equalFold(b, "async") }

// subIn returns a sub for commands open to every authenticated user but
// for the subcommands listed, which take perm.
func subIn(perm auth.Perm, subs ...string) func(args [][]byte) auth.Perm {
	return func(args [][]byte) auth.Perm {
		for _, s := range subs {
			if len(args) > 1 && equalFold(args[1], s) {
				return perm
			}
		}
		return 0
	}
}

// subNotIn returns a sub giving perm to every subcommand but those listed,
// which are open to every authenticated user.
func subNotIn(perm auth.Perm, subs ...string) func(args [][]byte) auth.Perm {
	in := subIn(perm, subs...)
	return func(args [][]byte) auth.Perm {
		if in(args) != 0 {
			return 0
		}
		return perm
	}
}

// setAccess: SET ... GET returns the old value, so it reads too.
func setAccess(args [][]byte) auth.Perm {
	for _, a := range args[3:] {
		if equalFold(a, "get") {
			return auth.Read | auth.Write
		}
	}
	return auth.Write
}

// commandAccess is every command's access. A command missing here is
// refused to every user when users are configured (TestCommandAccessComplete
// keeps the table whole).
var commandAccess = func() map[string]access {
	open := access{}
	read := access{perm: auth.Read, scope: scopeKeys, keys: firstKey}
	readAll := access{perm: auth.Read, scope: scopeKeys, keys: allKeys}
	write := access{perm: auth.Write, scope: scopeKeys, keys: firstKey}
	readWrite := access{perm: auth.Read | auth.Write, scope: scopeKeys, keys: firstKey}
	admin := access{perm: auth.Admin}
	adminAll := access{perm: auth.Admin, scope: scopeAll}
	m := map[string]access{
		// Connection and transaction control: no data.
		"ping": open, "echo": open, "quit": open, "hello": open, "auth": open,
		"select": open, "command": open, "time": open, "multi": open, "exec": open,
		"discard": open, "unwatch": open, "waitaof": open, "lastsave": open,
		// CLIENT LIST and KILL see and end other users' connections.
		"client": {sub: subIn(auth.Admin, "list", "kill")},
		// ACL WHOAMI is everyone's; LIST, USERS and LOAD are the admins'.
		"acl": {sub: subNotIn(auth.Admin, "whoami", "help")},
		// RAFT STATUS and MEMBERS describe the cluster; the rest change it.
		"raft":     {sub: subNotIn(auth.Admin, "status", "members")},
		"config":   admin,
		"shutdown": admin,
		// Jobs and snapshots read or replace the whole keyspace.
		"job": adminAll, "bgsave": adminAll,
		"info":   {perm: auth.Read}, // its keyspace section is left out for a restricted user
		"dbsize": {perm: auth.Read, scope: scopeAll},
		"memory": {perm: auth.Read, scope: scopeKeys, keys: memoryKeys},
		"get":    read, "getrev": read, "ttl": read, "pttl": read, "expiretime": read,
		"pexpiretime": read, "type": read, "strlen": read,
		"exists": readAll, "mget": readAll, "touch": readAll, "watch": readAll,
		"scan": {perm: auth.Read, scope: scopeFiltered}, "keys": {perm: auth.Read, scope: scopeFiltered},
		"changes": {perm: auth.Read, scope: scopeFilter},
		// KVWATCH, as CHANGES, needs a KEY or PREFIX within the user's keys;
		// KVUNWATCH and RESET end only the connection's own watches.
		"kvwatch": {perm: auth.Read, scope: scopeFilter}, "kvunwatch": open, "reset": open,
		"set":   {sub: setAccess, scope: scopeKeys, keys: firstKey},
		"setnx": write, "setex": write, "psetex": write, "append": write,
		"incr": write, "decr": write, "incrby": write, "decrby": write, "incrbyfloat": write,
		"cas": write, "cad": write, "expire": write, "pexpire": write, "expireat": write, "pexpireat": write,
		"getdel": readWrite, "getset": readWrite, "getex": readWrite,
		"del":     {perm: auth.Write, scope: scopeKeys, keys: keysThenDurability},
		"unlink":  {perm: auth.Write, scope: scopeKeys, keys: keysThenDurability},
		"persist": {perm: auth.Write, scope: scopeKeys, keys: keysThenDurability},
		"mset":    {perm: auth.Write, scope: scopeKeys, keys: keyValuePairs},
		"msetnx":  {perm: auth.Write, scope: scopeKeys, keys: keyValuePairs},
		"flushdb": {perm: auth.Write, scope: scopeAll}, "flushall": {perm: auth.Write, scope: scopeAll},
	}
	return m
}()

// user returns c's user under the users configured now, re-resolving its
// name after a reload; nil if c is not authenticated (or its user was
// removed). open is true when no users are configured: everyone may do
// anything.
func (c *respConn) user() (u *auth.User, open bool) {
	users := c.s.users.Load()
	if users == nil {
		return nil, true
	}
	if c.authUsers != users {
		c.authUsers, c.authUser = users, nil
		if c.authName != "" {
			c.authUser = users.Lookup(c.authName)
		}
	}
	return c.authUser, false
}

// authorize reports whether c may run cmd with args, replying with the
// error if not.
func (c *respConn) authorize(cmd *respCommand, args [][]byte) bool {
	u, open := c.user()
	if open {
		return true
	}
	if u == nil {
		switch cmd.name {
		case "auth", "hello", "quit", "reset":
			return true
		}
		c.writeError(respErrNoAuth)
		return false
	}
	a, ok := commandAccess[cmd.name]
	if !ok {
		c.writeError(respErrNoPerm(u.Name, cmd.name))
		return false
	}
	perm := a.perm
	if a.sub != nil {
		perm = a.sub(args)
	}
	if !u.Can(perm) {
		c.writeError(respErrNoPerm(u.Name, cmd.name))
		return false
	}
	if !u.Restricted() {
		return true
	}
	switch a.scope {
	case scopeKeys:
		for _, k := range a.keys(args) {
			if !u.KeyAllowed(k) {
				c.writeError(respErrNoPermKey)
				return false
			}
		}
	case scopeFilter:
		if !changesFilterAllowed(u, args[1:]) {
			c.writeError(respErrNoPermKey)
			return false
		}
	case scopeAll:
		c.writeError(respErrNoPermKey)
		return false
	}
	return true
}

// changesFilterAllowed reports whether CHANGES's options name a KEY or a
// PREFIX that lies within u's keys. Without one it would read every key.
func changesFilterAllowed(u *auth.User, opts [][]byte) bool {
	allowed := false
	for i := 0; i+1 < len(opts); i += 2 {
		switch {
		case equalFold(opts[i], "key"):
			if !u.KeyAllowed(opts[i+1]) {
				return false
			}
			allowed = true
		case equalFold(opts[i], "prefix"):
			if !u.RangeAllowed(opts[i+1]) {
				return false
			}
			allowed = true
		}
	}
	return allowed
}

// keyVisible reports whether c may see key in a listing (SCAN, KEYS).
func (c *respConn) keyVisible(key []byte) bool {
	u, open := c.user()
	return open || (u != nil && u.KeyAllowed(key))
}

// restricted reports whether c's user reaches only some keys.
func (c *respConn) restricted() bool {
	u, open := c.user()
	return !open && (u == nil || u.Restricted())
}

// setAllowed reports whether c may run a plain SET of key: the executor's
// fast path for SETs (plainSet) asks it, since it bypasses command.
func (c *respConn) setAllowed(key []byte) bool {
	u, open := c.user()
	return open || (u != nil && u.Can(auth.Write) && u.KeyAllowed(key))
}

// login authenticates c as name with password, slowing down repeated
// failures from c's address. It returns the error reply, or "".
func (c *respConn) login(users *auth.Users, name, password []byte) string {
	u, err := users.Authenticate(string(name), string(password))
	if err != nil {
		c.s.log.Info("resp authentication failed", "conn", c.id, "remote", c.addr)
		time.Sleep(c.s.authFails.fail(remoteHost(c.addr)))
		return respErrWrongPass
	}
	c.authName, c.authUsers, c.authUser = u.Name, users, u
	c.shownUser.Store(&u.Name)
	return ""
}

// remoteHost returns the host of a host:port address.
func remoteHost(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// authLimiter slows down repeated failed authentications from one address:
// a failure within authFailWindow of the address's previous one waits
// delay more than that one did, up to authFailMaxDelays times delay. The wait
// comes before the reply, on the connection's own goroutine (AUTH and
// HELLO run on a worker under the event loop), so a client guessing
// passwords gets a few per second at most, and others are not slowed.
type authLimiter struct {
	delay time.Duration
	mu    sync.Mutex
	fails map[string]authFailures
	now   func() time.Time
}

type authFailures struct {
	n    int
	last time.Time
}

const (
	defaultAuthFailDelay = 100 * time.Millisecond
	authFailMaxDelays    = 20
	authFailWindow       = time.Minute
	// authFailAddrs bounds the addresses remembered: past it, the table
	// starts over (a flood from many addresses resets its own delays, not
	// the PBKDF2 cost of each guess).
	authFailAddrs = 10000
)

func newAuthLimiter(delay time.Duration) *authLimiter {
	switch {
	case delay == 0:
		delay = defaultAuthFailDelay
	case delay < 0:
		delay = 0
	}
	return &authLimiter{delay: delay, fails: map[string]authFailures{}, now: time.Now}
}

// fail records a failed authentication from addr and returns how long to
// wait before answering it.
func (l *authLimiter) fail(addr string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	f := l.fails[addr]
	if now.Sub(f.last) > authFailWindow {
		f.n = 0
	}
	f.n++
	f.last = now
	if _, ok := l.fails[addr]; !ok && len(l.fails) >= authFailAddrs {
		clear(l.fails)
	}
	l.fails[addr] = f
	return l.delay * time.Duration(min(f.n, authFailMaxDelays))
}

// Users returns the users configured now, nil if none.
func (s *Server) Users() *auth.Users { return s.users.Load() }

// errNoUsersFile is ReloadUsers's error on a server without Config.LoadUsers.
var errNoUsersFile = errors.New("no users file to reload (kvd --auth-file)")

// ReloadUsers replaces the users with those Config.LoadUsers returns. If it
// fails, the users stay as they were and the error is returned (and
// logged). Connections look their user up again on their next command.
func (s *Server) ReloadUsers() error {
	if s.cfg.LoadUsers == nil {
		return errNoUsersFile
	}
	users, err := s.cfg.LoadUsers()
	if err != nil {
		s.log.Error("users reload failed; the users loaded before stay", "err", err)
		return err
	}
	old := s.users.Swap(users)
	s.log.Info("users reloaded", "users", len(users.Names()))
	s.cutStaleLogins(old, users)
	s.usersReloaded.fire()
	return nil
}

// cutStaleLogins closes the RESP connections with KVWATCH watches open
// whose user a reload removed or whose permissions or prefixes it changed:
// a watch is checked once, when it opens, and its frames would go on
// coming. A connection without watches stays: its next command is checked
// against the new users (-NOAUTH for a removed user). SSE streams and
// waiting long-polls check again themselves (usersReloaded).
func (s *Server) cutStaleLogins(old, users *auth.Users) {
	for _, c := range s.clientsByID() {
		name := c.shownUser.Load()
		if name == nil || c.push.count.Load() == 0 {
			continue
		}
		now := users.Lookup(*name)
		cut := now == nil
		if !cut && old != nil {
			before := old.Lookup(*name)
			cut = before == nil || before.Perms != now.Perms || !slices.Equal(before.Prefixes, now.Prefixes)
		}
		if cut {
			s.log.Info("users reloaded: closing a connection with watches whose user was removed or changed", "conn", c.id, "user", *name)
			s.killConn(c)
		}
	}
}

// reloadNotice tells waiters that the users were reloaded: wait returns a
// channel that the next fire closes.
type reloadNotice struct {
	mu sync.Mutex
	ch chan struct{}
}

func (n *reloadNotice) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *reloadNotice) fire() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}

// cmdACL answers ACL WHOAMI, ACL LIST, ACL USERS and ACL LOAD.
func cmdACL(c *respConn, args [][]byte) {
	sub := args[1]
	users := c.s.users.Load()
	switch {
	case equalFold(sub, "whoami") && len(args) == 2:
		u, open := c.user()
		switch {
		case open:
			c.writeBulkString(auth.DefaultUser)
		case u == nil:
			c.writeError(respErrNoAuth)
		default:
			c.writeBulkString(u.Name)
		}
	case equalFold(sub, "users") && len(args) == 2:
		if users == nil {
			c.writeArray(1)
			c.writeBulkString(auth.DefaultUser)
			return
		}
		names := users.Names()
		c.writeArray(len(names))
		for _, n := range names {
			c.writeBulkString(n)
		}
	case equalFold(sub, "list") && len(args) == 2:
		if users == nil {
			c.writeArray(1)
			c.writeBulkString("user " + auth.DefaultUser + " all (no users configured)")
			return
		}
		names := users.Names()
		c.writeArray(len(names))
		for _, n := range names {
			c.writeBulkString(users.Lookup(n).Describe())
		}
	case equalFold(sub, "load") && len(args) == 2:
		if err := c.s.ReloadUsers(); err != nil {
			c.writeError("ERR " + oneLine(err.Error()))
			return
		}
		c.writeOK()
	case equalFold(sub, "help") && len(args) == 2:
		help := []string{
			"ACL WHOAMI: the user of this connection.",
			"ACL USERS: the users' names (admin).",
			"ACL LIST: the users, without their secrets (admin).",
			"ACL LOAD: reload the users file (admin).",
		}
		c.writeArray(len(help))
		for _, h := range help {
			c.writeStatus(h)
		}
	default:
		c.writeError("ERR unknown subcommand or wrong number of arguments for '" + printable(sub, 64) + "'. Try ACL HELP.")
	}
}
