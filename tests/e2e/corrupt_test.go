package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/kvdstore/kvd/client"
)

// TestCorruptLogProcedure follows the README's "When kvd refuses to start"
// on a log with a bad record in the middle of its last segment: kvd refuses,
// naming the segment and offset, and leaves the files alone; cut at that
// offset, kvd replays the records before it. When the cut falls inside
// revisions the state file already holds, kvd says so, and with the
// segments removed it starts at the state file's revision.
func TestCorruptLogProcedure(t *testing.T) {
	const n = 200
	for _, checkpointed := range []bool{false, true} {
		t.Run(fmt.Sprintf("checkpointed=%v", checkpointed), func(t *testing.T) {
			dir := t.TempDir()
			interval := "1h"
			if checkpointed {
				interval = "100ms"
			}
			p := startKVD(t, dir, "--commit-mode", "sync", "--checkpoint-interval", interval)
			c := dial(t, p.respAddr)
			put := func(from, to int) {
				for i := from; i < to; i++ {
					if err := c.Put(t.Context(), fmt.Sprintf("k%03d", i), []byte(fmt.Sprint(i))); err != nil {
						t.Fatal(err)
					}
				}
			}
			put(0, n/2)
			if checkpointed {
				waitApplied(t, c, n/2)
			}
			put(n/2, n)
			c.Close()
			p.stop(syscall.SIGKILL) // the log keeps its records

			seg := lastSegment(t, dir)
			orig, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			// A byte in the first quarter of the records: inside the
			// checkpointed half when there is one.
			end := len(bytes.TrimRight(orig, "\x00"))
			bad := slices.Clone(orig)
			bad[end/4] ^= 0xff
			if err := os.WriteFile(seg, bad, 0o600); err != nil {
				t.Fatal(err)
			}

			out, code := runKVD(t, dir)
			m := regexp.MustCompile(`corrupt record in segment (\d{20}) at offset (\d+)`).FindStringSubmatch(out)
			if code == 0 || m == nil {
				t.Fatalf("kvd on a corrupt log: exit %d, want a refusal naming segment and offset:\n%s", code, out)
			}
			if m[1] != filepath.Base(seg) {
				t.Fatalf("kvd named segment %s, the bad one is %s", m[1], filepath.Base(seg))
			}
			if after, _ := os.ReadFile(seg); !bytes.Equal(after, bad) {
				t.Fatal("kvd changed the corrupt segment while refusing to start")
			}
			off, _ := strconv.Atoi(m[2])
			if off > end/4 || off < 0 {
				t.Fatalf("offset %d: the bad byte is at %d", off, end/4)
			}

			if err := os.Truncate(seg, int64(off)); err != nil {
				t.Fatal(err)
			}
			if checkpointed {
				out, code := runKVD(t, dir)
				if code == 0 || !regexp.MustCompile(`log holds revisions 1\.\.\d+, state needs \d+ onwards`).MatchString(out) {
					t.Fatalf("kvd with a log cut inside the state file's revisions: exit %d, want it to say so:\n%s", code, out)
				}
				if err := os.Remove(seg); err != nil {
					t.Fatal(err)
				}
			}

			p2 := startKVD(t, dir)
			c2 := dial(t, p2.respAddr)
			defer c2.Close()
			st, err := c2.Status(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			// One sequential client: revision i+1 wrote k<i>.
			kept := int(st.Committed)
			switch {
			case checkpointed && (st.Committed != st.Applied || kept < n/2):
				t.Fatalf("started at revision %d with %d applied, want the state file's revision (at least %d)", st.Committed, st.Applied, n/2)
			case !checkpointed && (kept < 1 || kept >= n/2):
				t.Fatalf("replayed %d records, want the ones before the bad byte (%d bytes into %d)", kept, end/4, end)
			}
			for i := range n {
				v, err := c2.Get(t.Context(), fmt.Sprintf("k%03d", i))
				switch {
				case i < kept && (err != nil || string(v) != fmt.Sprint(i)):
					t.Fatalf("k%03d (revision %d <= %d) = %q, %v; want %d", i, i+1, kept, v, err, i)
				case i >= kept && !errors.Is(err, client.ErrNotFound):
					t.Fatalf("k%03d (revision %d > %d) = %q, %v; want it gone", i, i+1, kept, v, err)
				}
			}
			t.Logf("bad byte at %d of %d; cut at %d; kvd started at revision %d", end/4, end, off, kept)
		})
	}
}

func dial(t *testing.T, addr string) *client.Client {
	t.Helper()
	c, err := client.Dial(t.Context(), addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitApplied waits until a checkpoint holds revision rev.
func waitApplied(t *testing.T, c *client.Client, rev uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := c.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if st.Applied >= rev {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("applied revision %d after 30s, want %d", st.Applied, rev)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lastSegment returns the path of the log's last segment file.
func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "wal", "[0-9]*"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no log segment in %s: %v", dir, err)
	}
	slices.Sort(names)
	return names[len(names)-1]
}

// runKVD runs kvd on dir until it exits (runTool's time limit applies) and
// returns its output and exit status.
func runKVD(t *testing.T, dir string) (string, int) {
	t.Helper()
	stdout, stderr, code := runTool(t, "", nil, kvdBin, "--data-dir", dir, "--listen", "127.0.0.1:0", "--http-listen", "")
	return stdout + stderr, code
}
