package server_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvdstore/kvd/auth"
	"github.com/kvdstore/kvd/server"
)

// Test users: long passwords, so that no fuzzed input finds one.
const (
	rootPass   = "root-password-0123456789"
	readerPass = "reader-password-0123456789"
	writerPass = "writer-password-0123456789"
	appPass    = "app-password-0123456789"
	opsPass    = "ops-password-0123456789"
	newPass    = "new-password-0123456789"
)

// testUser is one line of a test users file.
type testUser struct{ name, perms, password, extra string }

var testUsers = []testUser{
	{"root", "all", rootPass, ""},
	{"reader", "read", readerPass, ""},
	{"writer", "write", writerPass, ""},
	{"app", "read,write", appPass, "prefix=app/ prefix=shared/"},
	{"ops", "admin", opsPass, ""},
	{"appadmin", "all", appPass, "prefix=app/"},
}

// usersFile returns the text of a users file of users, with cheap hashes.
func usersFile(t testing.TB, users []testUser) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# test users\n")
	for _, u := range users {
		h, err := auth.HashPassword(u.password, auth.MinIterations)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %s password=%s %s\n", u.name, u.perms, h, u.extra)
	}
	return b.String()
}

// writeUsers writes a users file of users at path.
func writeUsers(t testing.TB, path string, users []testUser) {
	t.Helper()
	if err := os.WriteFile(path, []byte(usersFile(t, users)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startAuthServer starts a server whose users are testUsers, loaded from
// a file that the test may rewrite and reload; it returns the file's path.
func startAuthServer(t testing.TB, model string) (*testServer, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users")
	writeUsers(t, path, testUsers)
	users, err := auth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, serverOpts{io: model, cfg: server.Config{
		Users:         users,
		LoadUsers:     func() (*auth.Users, error) { return auth.Load(path) },
		AuthFailDelay: -1,
	}})
	return ts, path
}

// login dials ts as user and checks that AUTH succeeds.
func login(t *testing.T, ts *testServer, user, pass string) *rawConn {
	t.Helper()
	c := dialRaw(t, ts.respAddr)
	if got := c.do("AUTH", user, pass); got != "+OK\r\n" {
		t.Fatalf("AUTH %s = %q", user, got)
	}
	return c
}

func noPerm(user, cmd string) string {
	return "-NOPERM User " + user + " has no permissions to run the '" + cmd + "' command\r\n"
}

const (
	noAuth    = "-NOAUTH Authentication required.\r\n"
	wrongPass = "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
	noPermKey = "-NOPERM No permissions to access a key\r\n"
)

func TestRESPNoAuth(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts, _ := startAuthServer(t, model)
		c := dialRaw(t, ts.respAddr)
		for _, args := range [][]string{
			{"GET", "k"}, {"SET", "k", "v"}, {"SET", "k", "v", "SYNC"}, {"SET", "k", "v", "NX"},
			{"PING"}, {"MULTI"}, {"CONFIG", "GET", "maxclients"}, {"ACL", "WHOAMI"}, {"SCAN", "0"},
			{"CHANGES", "FROM", "0"}, {"JOB", "LIST"}, {"CLIENT", "LIST"}, {"ACL", "LOAD"},
		} {
			if got := c.do(args...); got != noAuth {
				t.Errorf("%q before AUTH = %q, want NOAUTH", args, got)
			}
		}
		// A pipeline of plain SETs takes the executor's fast path.
		c.sendRaw(encode("SET", "a", "1") + encode("SET", "b", "2") + encode("SET", "c", "3"))
		for range 3 {
			if got := c.reply(); got != noAuth {
				t.Errorf("pipelined SET before AUTH = %q", got)
			}
		}
		if got := c.do("HELLO", "3"); !strings.HasPrefix(got, "-NOAUTH HELLO must be called") {
			t.Errorf("HELLO 3 before AUTH = %q", got)
		}
		if got := c.do("AUTH", "root", "wrong"); got != wrongPass {
			t.Errorf("AUTH root wrong = %q", got)
		}
		if got := c.do("AUTH", rootPass); got != wrongPass { // no user named default
			t.Errorf("AUTH password = %q", got)
		}
		if got := c.do("GET", "a"); got != noAuth {
			t.Errorf("GET after failed AUTH = %q", got)
		}
		if got := c.do("AUTH", "root", rootPass); got != "+OK\r\n" {
			t.Fatalf("AUTH root = %q", got)
		}
		if got := c.do("GET", "a"); got != "$-1\r\n" {
			t.Errorf("GET a after AUTH = %q (the SETs before AUTH must not have run)", got)
		}
		if got := c.do("ACL", "WHOAMI"); got != "$4\r\nroot\r\n" {
			t.Errorf("ACL WHOAMI = %q", got)
		}
		// A failed AUTH leaves the connection as it was.
		if got := c.do("AUTH", "reader", "wrong"); got != wrongPass {
			t.Errorf("AUTH reader wrong = %q", got)
		}
		if got := c.do("ACL", "WHOAMI"); got != "$4\r\nroot\r\n" {
			t.Errorf("ACL WHOAMI after a failed AUTH = %q", got)
		}
	})
}

func TestRESPHelloAuth(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts, _ := startAuthServer(t, model)
		c := dialRaw(t, ts.respAddr)
		if got := c.do("HELLO", "3", "AUTH", "app", "wrong"); got != wrongPass {
			t.Errorf("HELLO 3 AUTH app wrong = %q", got)
		}
		if got := c.do("GET", "app/x"); got != noAuth {
			t.Errorf("GET after failed HELLO AUTH = %q", got)
		}
		got := c.do("HELLO", "3", "AUTH", "app", appPass, "SETNAME", "worker")
		if !strings.HasPrefix(got, "%7\r\n") {
			t.Fatalf("HELLO 3 AUTH app = %q", got)
		}
		if got := c.do("GET", "app/x"); got != "_\r\n" { // RESP3 null
			t.Errorf("GET app/x after HELLO AUTH = %q", got)
		}
		if got := c.do("CLIENT", "GETNAME"); got != "$6\r\nworker\r\n" {
			t.Errorf("CLIENT GETNAME = %q", got)
		}
	})
}

// TestRESPPermissions checks each permission boundary: what each test
// user may and may not run.
func TestRESPPermissions(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts, _ := startAuthServer(t, model)
		root := login(t, ts, "root", rootPass)
		for _, k := range []string{"other", "app/x", "shared/y", "ap"} {
			if got := root.do("SET", k, "v-"+k); got != "+OK\r\n" {
				t.Fatalf("SET %s = %q", k, got)
			}
		}
		pass := map[string]string{"reader": readerPass, "writer": writerPass, "app": appPass, "ops": opsPass, "appadmin": appPass}
		for _, tc := range []struct {
			user string
			args []string
			want string // the exact reply, or a prefix ending in "*"
		}{
			{"reader", []string{"GET", "other"}, "$7\r\nv-other\r\n"},
			{"reader", []string{"MGET", "other", "app/x"}, "*2\r\n*"},
			{"reader", []string{"SET", "other", "x"}, noPerm("reader", "set")},
			{"reader", []string{"SET", "other", "x", "NX"}, noPerm("reader", "set")},
			{"reader", []string{"DEL", "other"}, noPerm("reader", "del")},
			{"reader", []string{"INCR", "n"}, noPerm("reader", "incr")},
			{"reader", []string{"FLUSHALL"}, noPerm("reader", "flushall")},
			{"reader", []string{"CONFIG", "GET", "maxclients"}, noPerm("reader", "config")},
			{"reader", []string{"CLIENT", "LIST"}, noPerm("reader", "client")},
			{"reader", []string{"CLIENT", "KILL", "ID", "1"}, noPerm("reader", "client")},
			{"reader", []string{"CLIENT", "SETNAME", "r"}, "+OK\r\n"},
			{"reader", []string{"CLIENT", "ID"}, ":*"},
			{"reader", []string{"ACL", "WHOAMI"}, "$6\r\nreader\r\n"},
			{"reader", []string{"ACL", "LIST"}, noPerm("reader", "acl")},
			{"reader", []string{"ACL", "USERS"}, noPerm("reader", "acl")},
			{"reader", []string{"ACL", "LOAD"}, noPerm("reader", "acl")},
			{"reader", []string{"JOB", "LIST"}, noPerm("reader", "job")},
			{"reader", []string{"BGSAVE"}, noPerm("reader", "bgsave")},
			{"reader", []string{"SHUTDOWN"}, noPerm("reader", "shutdown")},
			{"reader", []string{"RAFT", "ADD", "n2", "127.0.0.1:1"}, noPerm("reader", "raft")},
			{"reader", []string{"DBSIZE"}, ":4\r\n"},

			{"writer", []string{"SET", "w", "1"}, "+OK\r\n"},
			{"writer", []string{"MSET", "w1", "1", "w2", "2", "SYNC"}, "+OK\r\n"},
			{"writer", []string{"GET", "other"}, noPerm("writer", "get")},
			{"writer", []string{"SET", "other", "x", "GET"}, noPerm("writer", "set")},
			{"writer", []string{"GETSET", "other", "x"}, noPerm("writer", "getset")},
			{"writer", []string{"SCAN", "0"}, noPerm("writer", "scan")},
			{"writer", []string{"CHANGES", "FROM", "0"}, noPerm("writer", "changes")},
			{"writer", []string{"CONFIG", "SET", "timeout", "0"}, noPerm("writer", "config")},

			{"app", []string{"GET", "app/x"}, "$7\r\nv-app/x\r\n"},
			{"app", []string{"GET", "other"}, noPermKey},
			{"app", []string{"GET", "ap"}, noPermKey},
			{"app", []string{"MGET", "app/x", "other"}, noPermKey},
			{"app", []string{"MGET", "app/x", "shared/y"}, "*2\r\n$7\r\nv-app/x\r\n$10\r\nv-shared/y\r\n"},
			{"app", []string{"EXISTS", "other"}, noPermKey},
			{"app", []string{"SET", "other", "x"}, noPermKey},
			{"app", []string{"SET", "app/new", "x"}, "+OK\r\n"},
			{"app", []string{"MSET", "app/a", "1", "other", "2"}, noPermKey},
			{"app", []string{"MSET", "app/a", "1", "app/b", "2", "SYNC"}, "+OK\r\n"},
			{"app", []string{"DEL", "app/a", "SYNC"}, ":1\r\n"},
			{"app", []string{"DEL", "app/b", "other"}, noPermKey},
			{"app", []string{"CAS", "other", "0", "v"}, noPermKey},
			{"app", []string{"EXPIRE", "other", "10"}, noPermKey},
			{"app", []string{"WATCH", "other"}, noPermKey},
			{"app", []string{"MEMORY", "USAGE", "other"}, noPermKey},
			{"app", []string{"DBSIZE"}, noPermKey},
			{"app", []string{"FLUSHDB"}, noPermKey},
			{"app", []string{"CHANGES", "FROM", "0"}, noPermKey},
			{"app", []string{"CHANGES", "FROM", "0", "PREFIX", "ap"}, noPermKey},
			{"app", []string{"CHANGES", "FROM", "0", "KEY", "other"}, noPermKey},
			{"app", []string{"CHANGES", "FROM", "0", "PREFIX", "app/"}, "*3\r\n*"},
			{"writer", []string{"KVWATCH", "PREFIX", "w"}, noPerm("writer", "kvwatch")},
			{"app", []string{"KVWATCH"}, noPermKey},
			{"app", []string{"KVWATCH", "PREFIX", "ap"}, noPermKey},
			{"app", []string{"KVWATCH", "KEY", "other", "FROM", "1"}, noPermKey},
			{"app", []string{"KVWATCH", "FROM", "1", "PREFIX", "app/"}, "*4\r\n$7\r\nkvwatch\r\n*"},
			{"app", []string{"KVUNWATCH"}, "*3\r\n$9\r\nkvunwatch\r\n*"},
			{"app", []string{"SCAN", "0", "COUNT", "1000"}, "*2\r\n$1\r\n0\r\n*4\r\n$5\r\napp/b\r\n$7\r\napp/new\r\n$5\r\napp/x\r\n$8\r\nshared/y\r\n"},
			{"app", []string{"KEYS", "*"}, "*4\r\n$5\r\napp/b\r\n$7\r\napp/new\r\n$5\r\napp/x\r\n$8\r\nshared/y\r\n"},

			{"ops", []string{"GET", "other"}, noPerm("ops", "get")},
			{"ops", []string{"SET", "other", "x"}, noPerm("ops", "set")},
			{"ops", []string{"CONFIG", "GET", "maxclients"}, "*2\r\n*"},
			{"ops", []string{"ACL", "USERS"}, "*6\r\n$3\r\napp\r\n$8\r\nappadmin\r\n$3\r\nops\r\n$6\r\nreader\r\n$4\r\nroot\r\n$6\r\nwriter\r\n"},

			// An admin with a prefix administers, but reaches no key
			// outside it, and nothing of the whole keyspace at once.
			{"appadmin", []string{"CONFIG", "GET", "maxclients"}, "*2\r\n*"},
			{"appadmin", []string{"GET", "app/x"}, "$7\r\nv-app/x\r\n"},
			{"appadmin", []string{"GET", "other"}, noPermKey},
			{"appadmin", []string{"JOB", "LIST"}, noPermKey},
			{"appadmin", []string{"BGSAVE"}, noPermKey},
			{"appadmin", []string{"DBSIZE"}, noPermKey},
			{"appadmin", []string{"FLUSHALL"}, noPermKey},
			{"ops", []string{"CLIENT", "LIST"}, "$*"},
		} {
			c := login(t, ts, tc.user, pass[tc.user])
			got := c.do(tc.args...)
			ok := got == tc.want
			if p, wild := strings.CutSuffix(tc.want, "*"); wild {
				ok = strings.HasPrefix(got, p) && !strings.HasPrefix(got, "-")
			}
			if !ok {
				t.Errorf("%s: %q = %q, want %q", tc.user, tc.args, got, tc.want)
			}
			c.nc.Close()
		}
		// RESET makes the connection the default user again: with users
		// configured, not authenticated.
		rc := login(t, ts, "reader", readerPass)
		if got := rc.do("RESET"); got != "+RESET\r\n" {
			t.Fatalf("RESET = %q", got)
		}
		if got := rc.do("GET", "other"); !strings.HasPrefix(got, "-NOAUTH") {
			t.Fatalf("GET after RESET = %q, want NOAUTH", got)
		}
		rc.nc.Close()
		// INFO leaves the keyspace's figures out for a user with prefixes.
		if got := root.do("INFO", "keyspace"); !strings.Contains(got, "# Keyspace") {
			t.Errorf("root INFO keyspace = %q", got)
		}
		if got := login(t, ts, "app", appPass).do("INFO", "keyspace"); strings.Contains(got, "Keyspace") || strings.HasPrefix(got, "-") {
			t.Errorf("app INFO keyspace = %q", got)
		}
		// KEYS and SCAN list every key to a user without prefixes.
		if got := root.do("KEYS", "*"); !strings.HasPrefix(got, "*9\r\n") {
			t.Errorf("root KEYS * = %q", got)
		}
	})
}

// TestRESPPermissionsInTransaction: a transaction's commands are checked as
// they are queued; one refused aborts the EXEC.
func TestRESPPermissionsInTransaction(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts, _ := startAuthServer(t, model)
		c := login(t, ts, "app", appPass)
		for _, step := range []struct {
			args []string
			want string
		}{
			{[]string{"MULTI"}, "+OK\r\n"},
			{[]string{"SET", "app/t", "1"}, "+QUEUED\r\n"},
			{[]string{"SET", "other", "1"}, noPermKey},
			{[]string{"GET", "other"}, noPermKey},
			{[]string{"EXEC"}, "-EXECABORT Transaction discarded because of previous errors.\r\n"},
			{[]string{"GET", "app/t"}, "$-1\r\n"},
		} {
			if got := c.do(step.args...); got != step.want {
				t.Errorf("%q = %q, want %q", step.args, got, step.want)
			}
		}
		r := login(t, ts, "reader", readerPass)
		r.do("MULTI")
		if got := r.do("SET", "k", "v"); got != noPerm("reader", "set") {
			t.Errorf("reader: queued SET = %q", got)
		}
	})
}

// TestRESPACLLoad reloads a changed users file: a removed user's
// connection gets NOAUTH, a changed user's new permissions apply at once,
// a new user can log in, and a bad file changes nothing.
func TestRESPACLLoad(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts, path := startAuthServer(t, model)
		root := login(t, ts, "root", rootPass)
		reader := login(t, ts, "reader", readerPass)
		app := login(t, ts, "app", appPass)
		if got := app.do("SET", "app/x", "1"); got != "+OK\r\n" {
			t.Fatalf("app SET = %q", got)
		}
		writeUsers(t, path, []testUser{
			{"root", "all", rootPass, ""},
			{"app", "read", appPass, "prefix=app/"},
			{"newbie", "read", newPass, ""},
		})
		if got := root.do("ACL", "LOAD"); got != "+OK\r\n" {
			t.Fatalf("ACL LOAD = %q", got)
		}
		if got := reader.do("GET", "app/x"); got != noAuth {
			t.Errorf("removed user's GET = %q, want NOAUTH", got)
		}
		if got := app.do("SET", "app/x", "2"); got != noPerm("app", "set") {
			t.Errorf("app SET after losing write = %q", got)
		}
		if got := app.do("GET", "shared/y"); got != noPermKey {
			t.Errorf("app GET shared/y after losing the prefix = %q", got)
		}
		login(t, ts, "newbie", newPass)
		if got := dialRaw(t, ts.respAddr).do("AUTH", "reader", readerPass); got != wrongPass {
			t.Errorf("removed user's AUTH = %q", got)
		}

		if err := os.WriteFile(path, []byte("root all password=nonsense\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		got := root.do("ACL", "LOAD")
		if !strings.HasPrefix(got, "-ERR ") || !strings.Contains(got, "line 1") {
			t.Errorf("ACL LOAD of a bad file = %q", got)
		}
		if strings.Contains(got, "nonsense") {
			t.Errorf("ACL LOAD's error quotes the file's secret field: %q", got)
		}
		login(t, ts, "newbie", newPass) // the users before stay
		if got := root.do("ACL", "LIST"); !strings.Contains(got, "user app read password=<hashed> prefix=app/") ||
			strings.Contains(got, "pbkdf2") {
			t.Errorf("ACL LIST = %q", got)
		}
	})
}

// TestRESPMalformedAuth sends malformed AUTH and HELLO commands: each gets
// a clear error, and the connection stays unauthenticated.
func TestRESPMalformedAuth(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts, _ := startAuthServer(t, model)
		c := dialRaw(t, ts.respAddr)
		for _, tc := range []struct {
			raw  string
			want string
		}{
			{encode("AUTH"), "-ERR wrong number of arguments for 'auth' command\r\n"},
			{encode("AUTH", "root", rootPass, "extra"), "-ERR syntax error\r\n"},
			{encode("AUTH", ""), wrongPass},
			{encode("AUTH", "", ""), wrongPass},
			{encode("AUTH", "root", ""), wrongPass},
			{encode("AUTH", "root\x00", rootPass), wrongPass},
			{encode("AUTH", "root", rootPass+"\x00"), wrongPass},
			{encode("AUTH", strings.Repeat("r", 10000), rootPass), wrongPass},
			{encode("HELLO", "3", "AUTH"), "-ERR Syntax error in HELLO option 'AUTH'\r\n"},
			{encode("HELLO", "3", "AUTH", "root"), "-ERR Syntax error in HELLO option 'AUTH'\r\n"},
			{encode("HELLO", "x", "AUTH", "root", rootPass), "-ERR Protocol version is not an integer or out of range\r\n"},
			{encode("HELLO", "4", "AUTH", "root", rootPass), "-NOPROTO unsupported protocol version\r\n"},
			{encode("HELLO", "3", "AUTH", "root", "wrong"), wrongPass},
			{encode("HELLO", "3", "AUTH", "root", rootPass, "SETNAME", "a b"), "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"},
			{encode("HELLO", "3", "SETNAME", "x", "AUTH", "root"), "-ERR Syntax error in HELLO option 'AUTH'\r\n"},
			{"AUTH root\r\n", wrongPass}, // inline command: a password alone, for the default user
		} {
			c.sendRaw(tc.raw)
			if got := c.reply(); got != tc.want {
				t.Errorf("%q = %q, want %q", tc.raw, got, tc.want)
			}
			if got := c.do("GET", "k"); got != noAuth {
				t.Fatalf("after %q: GET = %q, want NOAUTH", tc.raw, got)
			}
		}
	})
}

// TestRESPOpenWithoutUsers: with no users, every client may do anything,
// as before users existed.
func TestRESPOpenWithoutUsers(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		c := dialRaw(t, ts.respAddr)
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"SET", "k", "v"}, "+OK\r\n"},
			{[]string{"ACL", "WHOAMI"}, "$7\r\ndefault\r\n"},
			{[]string{"HELLO", "2", "AUTH", "default", "x"}, "*14\r\n"},
			{[]string{"AUTH", "x"}, "-ERR AUTH <password> called without any password configured"},
			{[]string{"ACL", "LOAD"}, "-ERR no users file to reload (kvd --auth-file)\r\n"},
		} {
			if got := c.do(tc.args...); !strings.HasPrefix(got, tc.want) {
				t.Errorf("%q = %q, want %q...", tc.args, got, tc.want)
			}
		}
	})
}

// FuzzRESPAuth sends AUTH or HELLO with arbitrary arguments, then GET: no
// input but a right password authenticates, and none stops the server.
func FuzzRESPAuth(f *testing.F) {
	f.Add(true, "root", "x", "")
	f.Add(false, "3", "AUTH", "root")
	f.Add(false, "3", "AUTH\x00", "")
	f.Add(true, "", "\r\n", "\x00")
	var servers []*testServer
	for _, model := range respIOs {
		ts, _ := startAuthServer(f, model)
		servers = append(servers, ts)
	}
	f.Fuzz(func(t *testing.T, isAuth bool, a, b, c string) {
		args := []string{"HELLO", a, b, c, "x"}
		if isAuth {
			args = []string{"AUTH", a, b, c}
		}
		for _, ts := range servers {
			conn := dialRaw(t, ts.respAddr)
			if got := conn.do(args...); !strings.HasPrefix(got, "-") {
				t.Fatalf("%q = %q, want an error", args, got)
			}
			if got := conn.do("GET", "k"); got != noAuth {
				t.Fatalf("after %q: GET = %q", args, got)
			}
			conn.nc.Close()
		}
	})
}

// TestRESPNoSecretsShown: CLIENT LIST names each connection's user, and
// neither it, INFO nor ACL LIST shows a password or a hash.
func TestRESPNoSecretsShown(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts, _ := startAuthServer(t, model)
		login(t, ts, "app", appPass)
		ops := login(t, ts, "ops", opsPass)
		list := ops.do("CLIENT", "LIST")
		if !strings.Contains(list, " user=app\n") || !strings.Contains(list, " user=ops\n") {
			t.Errorf("CLIENT LIST does not name the users: %q", list)
		}
		root := login(t, ts, "root", rootPass)
		for _, args := range [][]string{{"CLIENT", "LIST"}, {"INFO", "everything"}, {"ACL", "LIST"}, {"CONFIG", "GET", "*"}} {
			got := root.do(args...)
			if strings.HasPrefix(got, "-") {
				t.Errorf("%q = %q", args, got)
			}
			for _, secret := range []string{appPass, opsPass, rootPass, "pbkdf2", "sha256$"} {
				if strings.Contains(got, secret) {
					t.Errorf("%q shows %q", args, secret)
				}
			}
		}
	})
}
