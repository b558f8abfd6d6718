package e2e

import (
	"bufio"
	"context"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/kvtest"
)

// TestRedisCLIKeyTools runs redis-cli --bigkeys and --memkeys, which scan
// the keyspace with SCAN, TYPE, STRLEN and MEMORY USAGE, and --stat, which
// polls INFO every second until stopped: each must work against kvd
// without an error.
func TestRedisCLIKeyTools(t *testing.T) {
	cli := needTool(t, "redis-cli")
	p := startKVD(t, "")
	base := []string{"-h", "127.0.0.1", "-p", port(p.RESPAddr)}
	rc := func(args ...string) string {
		t.Helper()
		out, errOut, code := runTool(t, "", nil, cli, append(base, args...)...)
		if code != 0 || strings.Contains(out+errOut, "ERR") {
			t.Fatalf("redis-cli %q: exit %d: %s%s", args, code, out, errOut)
		}
		return out
	}
	rc("MSET", "small", "x", "big", strings.Repeat("v", 1000), "n", "12345")

	big := rc("--bigkeys")
	if !regexp.MustCompile(`Biggest string found so far '"big"' with 1000 bytes`).MatchString(big) ||
		!strings.Contains(big, "Sampled 3 keys in the keyspace!") ||
		!strings.Contains(big, "3 strings with 1006 bytes") {
		t.Errorf("redis-cli --bigkeys:\n%s", big)
	}
	mem := rc("--memkeys")
	if !regexp.MustCompile(`Biggest string found so far '"big"' with \d+ bytes`).MatchString(mem) ||
		!strings.Contains(mem, "Sampled 3 keys in the keyspace!") {
		t.Errorf("redis-cli --memkeys:\n%s", mem)
	}

	// --stat prints a header and a line per second, forever: read its
	// first lines, then stop it. stdbuf makes its output line-buffered.
	args := append(base, "--stat", "-i", "0.1")
	name := cli
	if sb, err := exec.LookPath("stdbuf"); err == nil {
		name, args = sb, append([]string{"-oL", cli}, args...)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	sc := bufio.NewScanner(out)
	var lines []string
	for len(lines) < 4 && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) < 4 {
		t.Fatalf("redis-cli --stat printed %q, then %v; stderr %q", lines, sc.Err(), stderr.String())
	}
	// The header, then: keys, memory, clients, blocked, requests, connections.
	row := regexp.MustCompile(`^3\s+[\d.]+[KMG]?\s+1\s+0\s+\d+ \(\+\d+\)\s+\d+\s*$`)
	if !strings.Contains(lines[0], "data") || !strings.Contains(lines[1], "keys") ||
		!row.MatchString(lines[2]) || !row.MatchString(lines[3]) {
		t.Errorf("redis-cli --stat printed:\n%s", strings.Join(lines, "\n"))
	}
}

// TestRedisCLIStringCommands runs the string and keyspace commands that
// kvd added for Redis users through redis-cli.
func TestRedisCLIStringCommands(t *testing.T) {
	cli := needTool(t, "redis-cli")
	p := startKVD(t, "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"SETNX", "s", "1"}, "1\n"},
		{[]string{"SETNX", "s", "2"}, "0\n"},
		{[]string{"APPEND", "s", "23"}, "3\n"},
		{[]string{"STRLEN", "s"}, "3\n"},
		{[]string{"TYPE", "s"}, "string\n"},
		{[]string{"TYPE", "nope"}, "none\n"},
		{[]string{"INCRBYFLOAT", "f", "10.5"}, "10.5\n"},
		{[]string{"INCRBYFLOAT", "f", "0.1"}, "10.6\n"},
		{[]string{"GETDEL", "f"}, "10.6\n"},
		{[]string{"KEYS", "*"}, "s\n"},
		{[]string{"MEMORY", "USAGE", "s"}, "68\n"},
		{[]string{"FLUSHALL"}, "OK\n"},
		{[]string{"DBSIZE"}, "0\n"},
	} {
		out, errOut, code := runTool(t, "", nil, cli, append([]string{"-h", "127.0.0.1", "-p", port(p.RESPAddr)}, tc.args...)...)
		if code != 0 || out != tc.want {
			t.Errorf("redis-cli %q = %q (exit %d, stderr %q), want %q", tc.args, out, code, errOut, tc.want)
		}
	}
}

// TestShutdownCommandExits: redis-cli SHUTDOWN stops kvd gracefully, as
// SIGTERM does: exit status 0, and what was written survives.
func TestShutdownCommandExits(t *testing.T) {
	cli := needTool(t, "redis-cli")
	dir := t.TempDir()
	p := startKVD(t, dir)
	addr := []string{"-h", "127.0.0.1", "-p", port(p.RESPAddr)}
	if out, _, code := runTool(t, "", nil, cli, append(addr, "SET", "kept", "yes", "ASYNC")...); code != 0 || out != "OK\n" {
		t.Fatalf("SET: %q, exit %d", out, code)
	}
	out, errOut, code := runTool(t, "", nil, cli, append(addr, "SHUTDOWN", "NOSAVE")...)
	if code != 0 || strings.Contains(out+errOut, "ERR") {
		t.Errorf("redis-cli SHUTDOWN: exit %d, %q %q", code, out, errOut)
	}
	if err := p.Wait(stopTimeout); err != nil && p.ExitCode() != 0 {
		t.Fatalf("kvd after SHUTDOWN: %v, exit %d\n%s", err, p.ExitCode(), p.Log())
	}
	if !p.Exited() || p.ExitCode() != 0 || !strings.Contains(p.Log(), "SHUTDOWN command") {
		t.Fatalf("kvd after SHUTDOWN: exited %v, status %d\n%s", p.Exited(), p.ExitCode(), p.Log())
	}
	p = startKVD(t, dir)
	if out, _, _ := runTool(t, "", nil, cli, "-h", "127.0.0.1", "-p", port(p.RESPAddr), "GET", "kept"); out != "yes\n" {
		t.Errorf("GET kept after the restart = %q", out)
	}
}

// TestVersionFlag: kvd --version and kvctl --version print the build's
// version and exit 0, without starting anything; a running kvd reports the
// same string in INFO, HELLO and /v1/status.
func TestVersionFlag(t *testing.T) {
	re := regexp.MustCompile(`^(kvd|kvctl) ((devel|v\S+)( \(revision [0-9a-f]{12}(, [^,)]+)?(, modified)?\))?)\n$`)
	var version string
	for _, bin := range []string{kvdBin, kvctlBin} {
		out, errOut, code := runTool(t, "", nil, bin, "--version")
		m := re.FindStringSubmatch(out)
		if code != 0 || m == nil || errOut != "" {
			t.Fatalf("%s --version: exit %d, stdout %q, stderr %q", bin, code, out, errOut)
		}
		version = m[2]
	}

	cli := needTool(t, "redis-cli")
	p := startKVD(t, "")
	info, _, _ := runTool(t, "", nil, cli, "-h", "127.0.0.1", "-p", port(p.RESPAddr), "INFO", "server")
	hello, _, _ := runTool(t, "", nil, cli, "-h", "127.0.0.1", "-p", port(p.RESPAddr), "-3", "HELLO")
	var st struct{ Version string }
	if err := kvtest.GetJSON(t.Context(), http.DefaultClient, "http://"+p.HTTPAddr+"/v1/status", &st); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info, "kvd_version:"+version+"\r\n") || !strings.Contains(hello, "\nversion "+version+"\n") || st.Version != version {
		t.Errorf("version %q; INFO server:\n%s\nHELLO:\n%s\n/v1/status: %q", version, info, hello, st.Version)
	}
}
