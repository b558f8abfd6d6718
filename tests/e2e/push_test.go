package e2e

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// inOrder reports whether s holds each of parts, in this order.
func inOrder(s string, parts ...string) bool {
	for _, p := range parts {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return true
}

// TestKVWatchRedisCLI runs the README's KVWATCH session with redis-cli -3
// --show-pushes y against a kvd process: the revisions from FROM 1 as push
// frames, a progress mark past a write of another key, a new write's
// change, and KVUNWATCH. redis-cli prints push frames as it reads them
// while waiting for a reply, so the test sends PINGs until the frames it
// expects have come.
func TestKVWatchRedisCLI(t *testing.T) {
	cli := needTool(t, "redis-cli")
	p := startKVD(t, "")
	pt := port(p.RESPAddr)
	for _, args := range [][]string{{"MSET", "app/a", "1", "app/b", "2"}, {"INCRBY", "app/a", "5"}, {"DEL", "app/b"}} {
		if _, errOut, code := runTool(t, "", nil, cli, append([]string{"-p", pt}, args...)...); code != 0 {
			t.Fatalf("redis-cli %v: exit %d: %s", args, code, errOut)
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cli, "-3", "--show-pushes", "y", "-p", pt)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	send := func(line string) {
		t.Helper()
		if _, err := io.WriteString(stdin, line+"\n"); err != nil {
			t.Fatalf("writing to redis-cli: %v (output so far %q)", err, out.String())
		}
	}
	await := func(parts ...string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !inOrder(out.String(), parts...) {
			if time.Now().After(deadline) {
				t.Fatalf("redis-cli printed %q, want in order %q", out.String(), parts)
			}
			send("PING") // redis-cli reads pushes while it waits for a reply
			time.Sleep(50 * time.Millisecond)
		}
	}
	send("KVWATCH PREFIX app/ FROM 1 PROGRESS 100")
	history := []string{
		"kvwatch\n1\n1\n1\n",
		"kvchange\n1\n1\nput\napp/a\n1\nput\napp/b\n2\n",
		"kvchange\n1\n2\nput\napp/a\n6\n",
		"kvchange\n1\n3\ndel\napp/b\n\n",
	}
	await(history...)
	if _, errOut, code := runTool(t, "", nil, cli, "-p", pt, "SET", "other", "x"); code != 0 {
		t.Fatalf("SET other: exit %d: %s", code, errOut)
	}
	history = append(history, "kvprogress\n1\n4\n")
	await(history...)
	send("SET app/c 3")
	history = append(history, "kvchange\n1\n5\nput\napp/c\n3\n")
	await(history...)
	send("KVUNWATCH")
	history = append(history, "kvunwatch\n1\n0\n")
	await(history...)
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("redis-cli: %v\n%s", err, out.String())
	}
	if strings.Count(out.String(), "kvchange\n") != 4 {
		t.Fatalf("redis-cli printed %d kvchange frames, want 4:\n%s", strings.Count(out.String(), "kvchange\n"), out.String())
	}
}
