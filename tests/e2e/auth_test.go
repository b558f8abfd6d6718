package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// respConn is a RESP connection for the tests of this file, which need
// only simple replies.
type respConn struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
}

func dialRESP(t *testing.T, addr string) *respConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &respConn{t: t, nc: nc, r: bufio.NewReader(nc)}
}

// do sends args and returns the reply: a status, error or integer line
// with its type byte, or a bulk string's content ("(nil)" for null).
func (c *respConn) do(args ...string) string {
	c.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	c.nc.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.nc.Write([]byte(b.String())); err != nil {
		c.t.Fatal(err)
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		c.t.Fatal(err)
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "$-1" {
		return "(nil)"
	}
	if strings.HasPrefix(line, "$") {
		var n int
		fmt.Sscanf(line, "$%d", &n)
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			c.t.Fatal(err)
		}
		return string(buf[:n])
	}
	return line
}

// hashPassword runs kvd passwd with password on stdin.
func hashPassword(t *testing.T, password string) string {
	t.Helper()
	out, errOut, code := runTool(t, password+"\n", nil, kvdBin, "passwd", "--iterations", "10000")
	if code != 0 || !strings.HasPrefix(out, "pbkdf2-sha256$10000$") {
		t.Fatalf("kvd passwd: exit %d: %s%s", code, out, errOut)
	}
	return strings.TrimSpace(out)
}

// TestProtectedMode: with no users, kvd refuses a non-loopback address and
// says why, unless --insecure-no-auth; any of 127.0.0.0/8 is loopback.
func TestProtectedMode(t *testing.T) {
	for _, args := range [][]string{
		{"--listen", "0.0.0.0:0"},
		{"--http-listen", "0.0.0.0:0"},
		{"--listen", "[::]:0"},
		{"--listen", ":0"},
	} {
		full := append([]string{"--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}, args...)
		_, errOut, code := runTool(t, "", nil, kvdBin, full...)
		if code != 1 || !strings.Contains(errOut, "protected mode") || !strings.Contains(errOut, "--insecure-no-auth") ||
			!strings.Contains(errOut, "--auth-file") || !strings.Contains(errOut, args[0]) {
			t.Errorf("kvd %q: exit %d, want 1 with protected mode's reason: %s", args, code, errOut)
		}
	}
	p := startKVD(t, "", "--listen", "127.0.0.2:0")
	if got := dialRESP(t, p.RESPAddr).do("PING"); got != "+PONG" {
		t.Errorf("PING on 127.0.0.2 = %q", got)
	}
	p = startKVD(t, "", "--listen", "0.0.0.0:0", "--insecure-no-auth")
	if got := dialRESP(t, "127.0.0.1:"+port(p.RESPAddr)).do("SET", "k", "v"); got != "+OK" {
		t.Errorf("SET with --insecure-no-auth = %q", got)
	}
	if !strings.Contains(p.Log(), "insecure-no-auth") {
		t.Errorf("kvd did not warn of --insecure-no-auth:\n%s", p.Log())
	}

	users := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(users, []byte("root all password="+hashPassword(t, "pw-root-1")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p = startKVD(t, "", "--listen", "0.0.0.0:0", "--auth-file", users)
	c := dialRESP(t, "127.0.0.1:"+port(p.RESPAddr))
	if got := c.do("GET", "k"); got != "-NOAUTH Authentication required." {
		t.Errorf("GET before AUTH = %q", got)
	}
	if got := c.do("AUTH", "root", "pw-root-1"); got != "+OK" {
		t.Errorf("AUTH = %q", got)
	}
}

// TestAuthFileReload: kvd --auth-file serves its users over RESP and HTTP
// (password and token), and SIGHUP reloads the file: a new user can log
// in, a removed user's connection gets NOAUTH, a bad file keeps the users.
func TestAuthFileReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "users")
	rootHash, readerHash := hashPassword(t, "pw-root-1"), hashPassword(t, "pw-reader-1")
	out, _, code := runTool(t, "", nil, kvdBin, "token")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "kvd_") || !strings.HasPrefix(lines[1], "token=sha256$") {
		t.Fatalf("kvd token: exit %d: %q", code, out)
	}
	token := lines[0]
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("root all password=" + rootHash + "\nreader read password=" + readerHash + " " + lines[1] + "\n")
	p := startKVD(t, "", "--auth-file", path)

	root := dialRESP(t, p.RESPAddr)
	root.do("AUTH", "root", "pw-root-1")
	if got := root.do("SET", "k", "v"); got != "+OK" {
		t.Fatalf("root SET = %q", got)
	}
	reader := dialRESP(t, p.RESPAddr)
	if got := reader.do("AUTH", "reader", "pw-reader-1"); got != "+OK" {
		t.Fatalf("reader AUTH = %q", got)
	}
	if got := reader.do("SET", "k", "x"); !strings.HasPrefix(got, "-NOPERM") {
		t.Errorf("reader SET = %q", got)
	}
	get := func(authz string) int {
		req, _ := http.NewRequest("GET", "http://"+p.HTTPAddr+"/v1/kv/k", nil)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := get(""); st != 401 {
		t.Errorf("HTTP GET without credentials: %d", st)
	}
	if st := get("Bearer " + token); st != 200 {
		t.Errorf("HTTP GET with the reader's token: %d", st)
	}

	write("root all password=" + rootHash + "\nnewbie read password=" + readerHash + "\n")
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for dialRESP(t, p.RESPAddr).do("AUTH", "newbie", "pw-reader-1") != "+OK" {
		if time.Now().After(deadline) {
			t.Fatalf("the new user cannot log in 30s after SIGHUP:\n%s", p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := reader.do("GET", "k"); got != "-NOAUTH Authentication required." {
		t.Errorf("removed user's GET after SIGHUP = %q", got)
	}
	if st := get("Bearer " + token); st != 401 {
		t.Errorf("HTTP GET with the removed user's token: %d", st)
	}

	write("root all password=nonsense\n")
	p.Signal(syscall.SIGHUP)
	for !strings.Contains(p.Log(), "users reload failed") {
		if time.Now().After(deadline) {
			t.Fatalf("no reload failure logged:\n%s", p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := dialRESP(t, p.RESPAddr).do("AUTH", "newbie", "pw-reader-1"); got != "+OK" {
		t.Errorf("AUTH after a failed reload = %q (the users before must stay)", got)
	}
	if strings.Contains(p.Log(), "pw-") || strings.Contains(p.Log(), "nonsense") {
		t.Errorf("kvd's log holds a secret:\n%s", p.Log())
	}
}

// TestRequirePass: --requirepass-file and KVD_REQUIREPASS give the default
// user a password; redis-cli logs in with REDISCLI_AUTH and --user/--pass.
func TestRequirePass(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(file, []byte("file-pass-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startKVD(t, "", "--requirepass-file", file)
	c := dialRESP(t, p.RESPAddr)
	if got := c.do("PING"); got != "-NOAUTH Authentication required." {
		t.Errorf("PING before AUTH = %q", got)
	}
	if got := c.do("AUTH", "file-pass-1"); got != "+OK" {
		t.Errorf("AUTH = %q", got)
	}

	p = startKVDEnv(t, []string{"KVD_REQUIREPASS=env-pass-1"}, "")
	if got := dialRESP(t, p.RESPAddr).do("AUTH", "default", "env-pass-1"); got != "+OK" {
		t.Errorf("AUTH default = %q", got)
	}
	if strings.Contains(p.Log(), "visible to every local user") {
		t.Errorf("kvd warned of a password from the environment:\n%s", p.Log())
	}
	cli := needTool(t, "redis-cli")
	out, errOut, code := runTool(t, "", []string{"REDISCLI_AUTH=env-pass-1"}, cli, "-p", port(p.RESPAddr), "SET", "k", "v")
	if code != 0 || out != "OK\n" {
		t.Errorf("redis-cli with REDISCLI_AUTH: exit %d: %q %s", code, out, errOut)
	}
	out, errOut, _ = runTool(t, "", nil, cli, "-p", port(p.RESPAddr), "--user", "default", "--pass", "wrong", "GET", "k")
	if !strings.Contains(out+errOut, "WRONGPASS") {
		t.Errorf("redis-cli with a wrong password: %q", out)
	}
	out, errOut, code = runTool(t, "", nil, cli, "-p", port(p.RESPAddr), "--user", "default", "--pass", "env-pass-1", "GET", "k")
	if code != 0 || out != "v\n" {
		t.Errorf("redis-cli --user --pass: exit %d: %q %s", code, out, errOut)
	}
}

// TestKvctlCredentials: kvctl takes credentials from KVD_USER and
// KVD_PASSWORD, --user and --password-file (bench's connections too), and
// KVD_TOKEN for HTTP.
func TestKvctlCredentials(t *testing.T) {
	dir := t.TempDir()
	out, _, _ := runTool(t, "", nil, kvdBin, "token")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	users := filepath.Join(dir, "users")
	file := "root all password=" + hashPassword(t, "pw-root-1") + " " + lines[1] + "\n" +
		"reader read password=" + hashPassword(t, "pw-reader-1") + "\n"
	if err := os.WriteFile(users, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("pw-reader-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startKVD(t, "", "--auth-file", users)
	kvctl := func(env []string, args ...string) (string, string, int) {
		t.Helper()
		return runTool(t, "", env, kvctlBin, append([]string{"--addr", p.RESPAddr}, args...)...)
	}
	if _, errOut, code := kvctl(nil, "put", "k", "v"); code != 1 || !strings.Contains(errOut, "NOAUTH") {
		t.Errorf("kvctl put without credentials: exit %d: %s", code, errOut)
	}
	rootEnv := []string{"KVD_USER=root", "KVD_PASSWORD=pw-root-1"}
	if out, errOut, code := kvctl(rootEnv, "put", "k", "v"); code != 0 {
		t.Errorf("kvctl put as root: exit %d: %s%s", code, out, errOut)
	}
	if out, errOut, code := kvctl(nil, "get", "--user", "reader", "--password-file", pwFile, "k"); code != 0 || out != "v\n" {
		t.Errorf("kvctl get as reader: exit %d: %q %s", code, out, errOut)
	}
	if _, errOut, code := kvctl(nil, "--user", "reader", "--password-file", pwFile, "put", "k", "x"); code != 1 || !strings.Contains(errOut, "NOPERM") {
		t.Errorf("kvctl put as reader: exit %d: %s", code, errOut)
	}
	// bench dials its clients itself: they carry the credentials too.
	bench := []string{"bench", "--clients", "2", "--requests", "200", "--durability", "async"}
	if _, errOut, code := kvctl(nil, bench...); code == 0 || !strings.Contains(errOut, "NOAUTH") {
		t.Errorf("kvctl bench without credentials: exit %d: %s", code, errOut)
	}
	if out, errOut, code := kvctl(rootEnv, bench...); code != 0 || !strings.Contains(out, "async") {
		t.Errorf("kvctl bench as root: exit %d: %s%s", code, out, errOut)
	}
	save := func(env []string) (string, int) {
		_, errOut, code := kvctl(env, "backup", "save", "--http-addr", p.HTTPAddr, filepath.Join(t.TempDir(), "b"))
		return errOut, code
	}
	if errOut, code := save(nil); code != 1 || !strings.Contains(errOut, "401") && !strings.Contains(errOut, "unauthorized") {
		t.Errorf("kvctl backup save without credentials: exit %d: %s", code, errOut)
	}
	if errOut, code := save([]string{"KVD_TOKEN=" + lines[0]}); code != 0 {
		t.Errorf("kvctl backup save with root's token: exit %d: %s", code, errOut)
	}
	if errOut, code := save(rootEnv); code != 0 {
		t.Errorf("kvctl backup save as root: exit %d: %s", code, errOut)
	}
}
