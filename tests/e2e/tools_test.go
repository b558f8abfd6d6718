package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/kvdstore/kvd/client"
)

// TestRedisCLI drives kvd with redis-cli, in RESP2 and RESP3.
func TestRedisCLI(t *testing.T) {
	cli := needTool(t, "redis-cli")
	p := startKVD(t, "")
	rc := func(args ...string) string {
		t.Helper()
		out, errOut, code := runTool(t, "", nil, cli, append([]string{"-h", "127.0.0.1", "-p", port(p.RESPAddr)}, args...)...)
		if code != 0 {
			t.Fatalf("redis-cli %q: exit %d: %s%s", args, code, out, errOut)
		}
		return out
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"PING"}, "PONG\n"},
		{[]string{"SET", "greeting", "hello world"}, "OK\n"},
		{[]string{"GET", "greeting"}, "hello world\n"},
		{[]string{"SET", "greeting", "x", "NX"}, "\n"},
		{[]string{"SET", "k", "v", "SYNC"}, "OK\n"},
		{[]string{"MSET", "a", "1", "b", "2", "ASYNC"}, "OK\n"},
		{[]string{"MGET", "a", "nope", "b"}, "1\n\n2\n"},
		{[]string{"INCR", "counter"}, "1\n"},
		{[]string{"INCRBY", "counter", "9"}, "10\n"},
		{[]string{"DEL", "a", "b", "nope"}, "2\n"},
		{[]string{"EXISTS", "k"}, "1\n"},
		{[]string{"DBSIZE"}, "3\n"},
		{[]string{"WAITAOF", "1", "0", "0"}, "1\n0\n"},
		{[]string{"CLIENT", "DURABILITY", "async"}, "OK\n"},
		{[]string{"CONFIG", "GET", "commit-mode"}, "commit-mode\nsync\n"},
		// redis-cli prints error replies followed by an empty line.
		{[]string{"NOSUCH"}, "ERR unknown command 'NOSUCH', with args beginning with: \n\n"},
		{[]string{"GET"}, "ERR wrong number of arguments for 'get' command\n\n"},
		{[]string{"-3", "GET", "greeting"}, "hello world\n"},
		{[]string{"-3", "HELLO"}, "server kvd\nversion devel...\n"}, // "devel (revision ...)" from a clone
		{[]string{"SET", "\xff\x01bin key", "\x02\xfe"}, "OK\n"},
		{[]string{"GET", "\xff\x01bin key"}, "\x02\xfe\n"},
	}
	for _, tc := range tests {
		got := rc(tc.args...)
		if p, isPrefix := strings.CutSuffix(tc.want, "...\n"); isPrefix {
			if !strings.HasPrefix(got, p) {
				t.Errorf("redis-cli %q = %q, want prefix %q", tc.args, got, p)
			}
		} else if got != tc.want {
			t.Errorf("redis-cli %q = %q, want %q", tc.args, got, tc.want)
		}
	}
	if hello := rc("-3", "HELLO"); !strings.Contains(hello, "\nproto 3\n") {
		t.Errorf("redis-cli -3 HELLO = %q, want proto 3", hello)
	}
	if info := rc("INFO", "persistence"); !strings.Contains(info, "commit_mode:sync") || !strings.Contains(info, "durable_revision:") {
		t.Errorf("INFO persistence = %q", info)
	}

	// --scan follows cursors to the end (cursor 0) and sees every key.
	var args []string
	var want []string
	for i := range 120 {
		k := fmt.Sprintf("scan:%03d", i)
		args = append(args, k, "v")
		want = append(want, k)
	}
	rc(append([]string{"MSET"}, args...)...)
	got := strings.Fields(rc("--scan", "--pattern", "scan:*"))
	if !slices.Equal(got, want) {
		t.Errorf("redis-cli --scan returned %d keys, want %d in order", len(got), len(want))
	}
	all := strings.Split(strings.TrimSuffix(rc("--scan"), "\n"), "\n")
	if len(all) != 124 {
		t.Errorf("redis-cli --scan (all) returned %d keys, want 124", len(all))
	}

	// Piped commands (inline protocol on stdin).
	out, _, code := runTool(t, "SET piped yes\nGET piped\n", nil, cli, "-h", "127.0.0.1", "-p", port(p.RESPAddr))
	if code != 0 || out != "OK\nyes\n" {
		t.Errorf("redis-cli with piped commands: %d %q", code, out)
	}
}

// TestRedisBenchmark runs redis-benchmark's SET, GET, MSET and INCR tests:
// all four must complete without an error reply.
func TestRedisBenchmark(t *testing.T) {
	bench := needTool(t, "redis-benchmark")
	p := startKVD(t, "")
	out, errOut, code := runTool(t, "", nil, bench, "-h", "127.0.0.1", "-p", port(p.RESPAddr),
		"-t", "set,get,mset,incr", "-q", "-n", "20000")
	if code != 0 {
		t.Fatalf("redis-benchmark exit %d: %s %s", code, out, errOut)
	}
	text := out + errOut
	if regexp.MustCompile(`(?i)\berr|error`).MatchString(text) {
		t.Fatalf("redis-benchmark reported errors:\n%s", text)
	}
	// -q prints progress lines ending in \r and one final line per test.
	for _, name := range []string{"SET", "GET", "MSET (10 keys)", "INCR"} {
		re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `: [0-9.]+ requests per second`)
		if !re.MatchString(strings.ReplaceAll(text, "\r", "\n")) {
			t.Errorf("redis-benchmark output lacks the %s line:\n%s", name, text)
		}
	}
	c, err := client.Dial(t.Context(), p.RESPAddr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v, err := c.Get(t.Context(), "counter:__rand_int__"); err != nil || string(v) != "20000" {
		t.Errorf("after 20000 INCRs the counter is %q, %v", v, err)
	}
}

// TestKvctl runs kvctl as a process.
func TestKvctl(t *testing.T) {
	p := startKVD(t, "")
	env := []string{"KVCTL_ADDR=" + p.RESPAddr}
	tests := []struct {
		name       string
		stdin      string
		args       []string
		wantOut    string // exact; a prefix if it ends in "..."
		wantErr    string // substring of stderr
		wantStatus int
	}{
		{name: "put", args: []string{"put", "fruit", "apple"}, wantOut: "OK\n"},
		{name: "put sync", args: []string{"--durability", "sync", "put", "veg", "leek"}, wantOut: "OK\n"},
		{name: "put stdin", stdin: "line1\nline2", args: []string{"put", "doc", "-"}, wantOut: "OK\n"},
		{name: "put dash value", args: []string{"put", "neg", "--", "-1"}, wantOut: "OK\n"},
		{name: "put ttl", args: []string{"put", "--ttl", "1h", "ttl-key", "x"}, wantOut: "OK\n"},
		{name: "put ttl too short", args: []string{"put", "--ttl", "1us", "ttl-key", "x"}, wantErr: "--ttl 1µs is under 1ms", wantStatus: 2},
		{name: "put ttl and if-rev", args: []string{"put", "--ttl", "1s", "--if-rev", "0", "ttl-key", "x"}, wantErr: "exclude each other", wantStatus: 2},
		{name: "get", args: []string{"get", "fruit"}, wantOut: "apple\n"},
		{name: "get stdin value", args: []string{"get", "doc"}, wantOut: "line1\nline2\n"},
		{name: "get json", args: []string{"-o", "json", "get", "fruit"}, wantOut: `{"key":"fruit","value":"apple"}` + "\n"},
		{name: "get flags after command", args: []string{"get", "neg", "--addr", p.RESPAddr}, wantOut: "-1\n"},
		{name: "get missing", args: []string{"get", "nope"}, wantErr: `"nope": not found`, wantStatus: 1},
		{name: "scan", args: []string{"scan"}, wantOut: "doc\nfruit\nneg\nttl-key\nveg\n"},
		{name: "scan prefix", args: []string{"scan", "--prefix", "f"}, wantOut: "fruit\n"},
		{name: "scan limit values", args: []string{"scan", "--limit", "2", "--values"}, wantOut: "doc\tline1\nline2\nfruit\tapple\n"},
		{name: "scan json", args: []string{"-o", "json", "scan", "--prefix", "v"}, wantOut: `[{"key":"veg"}]` + "\n"},
		{name: "del", args: []string{"del", "fruit"}, wantOut: "deleted\n"},
		{name: "del missing", args: []string{"del", "fruit"}, wantOut: "not found\n"},
		{name: "del json", args: []string{"-o", "json", "del", "veg"}, wantOut: `{"deleted":true}` + "\n"},
		{name: "put if absent", args: []string{"put", "--if-rev", "0", "cas", "a"}, wantOut: "OK\nmod_revision: ..."},
		{name: "put if absent again", args: []string{"put", "--if-rev", "0", "cas", "b"},
			wantErr: `"cas": revision mismatch: the key exists, current mod revision`, wantStatus: 1},
		{name: "get rev", args: []string{"get", "--rev", "cas"}, wantOut: "mod_revision: ..."},
		{name: "del if-rev mismatch", args: []string{"del", "--if-rev", "1", "cas"},
			wantErr: `"cas": revision mismatch: current mod revision`, wantStatus: 1},
		{name: "sync", args: []string{"sync"}, wantOut: "OK\n"},
		{name: "status", args: []string{"status"}, wantOut: "version:               devel..."},
		{name: "status json", args: []string{"-o", "json", "status"}, wantOut: `{"checkpointed":...`},
		{name: "help", args: []string{"--help"}, wantOut: "kvctl: the command-line client of kvd.\n..."},
		{name: "command help", args: []string{"put", "--help"}, wantOut: "kvctl put: store VALUE under KEY...", wantStatus: 0},
		{name: "no command", args: nil, wantErr: "no command given", wantStatus: 2},
		{name: "unknown command", args: []string{"frob"}, wantErr: `unknown command "frob"`, wantStatus: 2},
		{name: "missing argument", args: []string{"put", "k"}, wantErr: "put takes KEY VALUE", wantStatus: 2},
		{name: "bad flag", args: []string{"get", "--bogus", "k"}, wantErr: "unknown flag: --bogus", wantStatus: 2},
		{name: "bad durability", args: []string{"--durability", "later", "put", "k", "v"}, wantErr: "--durability", wantStatus: 2},
		{name: "bad output", args: []string{"-o", "xml", "sync"}, wantErr: "--output", wantStatus: 2},
		{name: "server down", args: []string{"--addr", "127.0.0.1:1", "get", "k"}, wantErr: "dial 127.0.0.1:1", wantStatus: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runTool(t, tc.stdin, env, kvctlBin, tc.args...)
			if code != tc.wantStatus {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tc.wantStatus, out, errOut)
			}
			if p, isPrefix := strings.CutSuffix(tc.wantOut, "..."); isPrefix {
				if !strings.HasPrefix(out, p) {
					t.Errorf("stdout %q, want prefix %q", out, p)
				}
			} else if out != tc.wantOut {
				t.Errorf("stdout %q, want %q", out, tc.wantOut)
			}
			if !strings.Contains(errOut, tc.wantErr) {
				t.Errorf("stderr %q lacks %q", errOut, tc.wantErr)
			}
			if strings.Contains(errOut, "connection pool") {
				t.Errorf("stderr %q has go-redis's own log lines", errOut)
			}
		})
	}
}

// TestKvctlValueTooLarge checks that a server error reaches kvctl's user.
func TestKvctlValueTooLarge(t *testing.T) {
	p := startKVD(t, "", "--max-value-size", "1KiB")
	out, errOut, code := runTool(t, strings.Repeat("x", 2000), nil, kvctlBin, "--addr", p.RESPAddr, "put", "big", "-")
	if code != 1 || !strings.Contains(errOut, "value too large") {
		t.Errorf("put of 2000 bytes with a 1 KiB limit: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestHTTP exercises the HTTP API of a kvd process.
func TestHTTP(t *testing.T) {
	p := startKVD(t, "", "--commit-mode", "async", "--flush-interval", "1h", "--pprof")
	base := "http://" + p.HTTPAddr
	do := func(method, path, body string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}
	res, _ := do("PUT", "/v1/kv/city", "Lyon")
	if res.StatusCode != 200 || res.Header.Get("X-Kvd-Durable") != "false" || res.Header.Get("X-Kvd-Revision") != "1" {
		t.Errorf("async PUT: %d durable=%q rev=%q", res.StatusCode, res.Header.Get("X-Kvd-Durable"), res.Header.Get("X-Kvd-Revision"))
	}
	res, _ = do("PUT", "/v1/kv/town?durability=sync", "Vienne")
	if res.StatusCode != 200 || res.Header.Get("X-Kvd-Durable") != "true" {
		t.Errorf("sync PUT: %d durable=%q", res.StatusCode, res.Header.Get("X-Kvd-Durable"))
	}
	if res, body := do("GET", "/v1/kv/city", ""); res.StatusCode != 200 || body != "Lyon" {
		t.Errorf("GET: %d %q", res.StatusCode, body)
	}
	if res, body := do("GET", "/v1/kv/nowhere", ""); res.StatusCode != 404 || !strings.Contains(body, `"code":"not_found"`) {
		t.Errorf("GET missing: %d %q", res.StatusCode, body)
	}
	if res, body := do("GET", "/v1/kv?values=text", ""); res.StatusCode != 200 ||
		body != `{"items":[{"key":"city","value":"Lyon","size":4},{"key":"town","value":"Vienne","size":6}],"more":false}`+"\n" {
		t.Errorf("list: %d %s", res.StatusCode, body)
	}
	if res, body := do("POST", "/v1/sync", ""); res.StatusCode != 200 || body != `{"durable_revision":2}`+"\n" {
		t.Errorf("sync: %d %s", res.StatusCode, body)
	}
	res, body := do("GET", "/v1/status", "")
	var st struct {
		CommitMode string `json:"commit_mode"`
		Revisions  struct{ Written, Durable uint64 }
	}
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.CommitMode != "async" || st.Revisions.Written != 2 || st.Revisions.Durable != 2 {
		t.Errorf("status: %d %s", res.StatusCode, body)
	}
	if res, body := do("GET", "/metrics", ""); res.StatusCode != 200 || !strings.Contains(body, `kvd_requests_total{command="put",protocol="http"} 2`) ||
		!strings.Contains(body, "kvd_wal_fsync_duration_seconds_count") {
		t.Errorf("metrics: %d", res.StatusCode)
	}
	if res, _ := do("GET", "/debug/pprof/", ""); res.StatusCode != 200 {
		t.Errorf("--pprof: /debug/pprof/ = %d", res.StatusCode)
	}
	if res, body := do("GET", "/healthz", ""); res.StatusCode != 200 || body != "ok\n" {
		t.Errorf("healthz: %d %q", res.StatusCode, body)
	}
}
