package e2e

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/internal/kvtest"
)

// TestWhenKvdRefusesToStart follows the README's "When kvd refuses to
// start". A bit flipped among records that sync writes fsynced one by one
// (each record after it says so, in its watermark) is damage to data that
// was on stable storage: kvd refuses, naming the segment and offset, as
// often as it is started, and leaves the files of its log as they were;
// the data directory copied aside refuses the same way (the evidence is
// kept), and the backup taken earlier (a copy of the stopped data
// directory) starts with every write it held. Damage confined to records
// the state file already holds needs none of this: kvd cuts it, logs the
// cut, and starts with every write.
func TestWhenKvdRefusesToStart(t *testing.T) {
	const n = 200
	t.Run("fsynced records", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "data")
		backup := filepath.Join(t.TempDir(), "backup")
		p := startKVD(t, dir, "--commit-mode", "sync", "--checkpoint-interval", "1h")
		put(t, p, 0, n/2)
		if code := stop(t, p, syscall.SIGTERM); code != 0 {
			t.Fatalf("kvd exited %d on SIGTERM\n%s", code, p.Log())
		}
		cp(t, dir, backup) // a backup of the stopped store
		p = startKVD(t, dir, "--commit-mode", "sync", "--checkpoint-interval", "1h")
		put(t, p, n/2, n)
		stop(t, p, syscall.SIGKILL) // the log keeps its records; the state file holds the first half

		seg := lastSegment(t, dir)
		orig, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		// A byte nine tenths into the records: in the second half, not
		// checkpointed, with records after it.
		end := len(bytes.TrimRight(orig, "\x00"))
		at := end * 9 / 10
		bad := slices.Clone(orig)
		bad[at] ^= 0xff
		if err := os.WriteFile(seg, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		before := logFiles(t, dir)
		refused := func(dir string) string {
			t.Helper()
			out, code := runKVD(t, dir)
			m := regexp.MustCompile(`corrupt record in segment (\d{20}) at offset (\d+)`).FindStringSubmatch(out)
			if code == 0 || m == nil || !strings.Contains(out, "fsynced") {
				t.Fatalf("kvd on a log damaged where it was fsynced: exit %d, want a refusal naming segment and offset, and why:\n%s", code, out)
			}
			if m[1] != filepath.Base(seg) {
				t.Fatalf("kvd named segment %s, the bad one is %s", m[1], filepath.Base(seg))
			}
			if off, _ := strconv.Atoi(m[2]); off > at || off < at-100 {
				t.Fatalf("kvd named offset %d: the bad byte is at %d", off, at)
			}
			return m[0]
		}
		first := refused(dir)
		if after := logFiles(t, dir); !maps.Equal(before, after) {
			t.Fatalf("kvd changed the log while refusing to start:\nbefore %v\nafter  %v", before, after)
		}
		if again := refused(dir); again != first {
			t.Fatalf("started again, kvd said %q, first %q", again, first)
		}
		aside := filepath.Join(t.TempDir(), "data.bad")
		cp(t, dir, aside)
		if got := refused(aside); got != first {
			t.Fatalf("the copy set aside: kvd said %q, the original %q", got, first)
		}
		if after := logFiles(t, dir); !maps.Equal(before, after) {
			t.Fatalf("kvd changed the log while refusing to start:\nbefore %v\nafter  %v", before, after)
		}

		// Restore the backup.
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		cp(t, backup, dir)
		p = startKVD(t, dir)
		expectKeys(t, p, n/2, n)
	})

	t.Run("checkpointed records", func(t *testing.T) {
		dir := t.TempDir()
		args := []string{"--commit-mode", "sync", "--checkpoint-interval", "1h", "--wal-retain", "1000"}
		p := startKVD(t, dir, args...)
		put(t, p, 0, n/2)
		if code := stop(t, p, syscall.SIGTERM); code != 0 { // checkpoints revisions 1..n/2
			t.Fatalf("kvd exited %d on SIGTERM\n%s", code, p.Log())
		}
		p = startKVD(t, dir, args...)
		put(t, p, n/2, n)
		stop(t, p, syscall.SIGKILL)

		seg := lastSegment(t, dir)
		orig, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		// A byte a quarter into the records: inside the checkpointed half.
		end := len(bytes.TrimRight(orig, "\x00"))
		bad := slices.Clone(orig)
		bad[end/4] ^= 0xff
		if err := os.WriteFile(seg, bad, 0o600); err != nil {
			t.Fatal(err)
		}
		p = startKVD(t, dir)
		if !regexp.MustCompile(`level=WARN msg="wal: cut the log to recover from a crash or damage".*below the checkpointed revision`).MatchString(p.Log()) {
			t.Fatalf("kvd did not log that it cut damage below the checkpoint:\n%s", p.Log())
		}
		expectKeys(t, p, n, n)
	})
}

// put writes k<i> = i for i in [from, to), one write after the other, so
// that revision i+1 wrote k<i>.
func put(t *testing.T, p *kvtest.Proc, from, to int) {
	t.Helper()
	c := dial(t, p.RESPAddr)
	defer c.Close()
	for i := from; i < to; i++ {
		if err := c.Put(t.Context(), fmt.Sprintf("k%03d", i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
}

// expectKeys checks that kvd holds revisions 1..kept of put's writes and
// none of the n-kept after.
func expectKeys(t *testing.T, p *kvtest.Proc, kept, n int) {
	t.Helper()
	c := dial(t, p.RESPAddr)
	defer c.Close()
	st, err := c.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Written != uint64(kept) {
		t.Fatalf("kvd holds revision %d, want %d", st.Written, kept)
	}
	for i := range n {
		v, err := c.Get(t.Context(), fmt.Sprintf("k%03d", i))
		switch {
		case i < kept && (err != nil || string(v) != fmt.Sprint(i)):
			t.Fatalf("k%03d (revision %d <= %d) = %q, %v; want %d", i, i+1, kept, v, err, i)
		case i >= kept && !errors.Is(err, client.ErrNotFound):
			t.Fatalf("k%03d (revision %d > %d) = %q, %v; want it absent", i, i+1, kept, v, err)
		}
	}
}

// cp copies the directory src to dst with cp -a, as the README says.
func cp(t *testing.T, src, dst string) {
	t.Helper()
	if _, stderr, code := runTool(t, "", nil, "cp", "-a", src, dst); code != 0 {
		t.Fatalf("cp -a %s %s: exit %d: %s", src, dst, code, stderr)
	}
}

// logFiles returns the size and digest of every file in dir's log.
func logFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "wal", "*"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no log files in %s: %v", dir, err)
	}
	files := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(p)] = fmt.Sprintf("%d bytes, sha256 %x", len(b), sha256.Sum256(b))
	}
	return files
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
	var st client.Status
	applied := kvtest.WaitFor(30*time.Second, 20*time.Millisecond, func() bool {
		var err error
		if st, err = c.Status(t.Context()); err != nil {
			t.Fatal(err)
		}
		return st.Checkpointed >= rev
	})
	if !applied {
		t.Fatalf("applied revision %d after 30s, want %d", st.Checkpointed, rev)
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
