package cluster

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/kvdstore/kvd/internal/kvtest"
)

// TestClusterJobs: a follower runs the jobs it is sent. A backup holds its
// state (a single node restores it with every key); an import writes
// through the leader, so every node has the keys; a verify passes; restore,
// compact and defrag are refused at once with the reason.
func TestClusterJobs(t *testing.T) {
	c := newCluster(t, "sync")
	ctx := t.Context()
	l := c.leader()
	f := c.others(l)[0]
	rdb := c.client(l)
	for i := range 100 {
		if err := rdb.Set(ctx, fmt.Sprintf("k%03d", i), fmt.Sprintf("v%d", i), 0).Err(); err != nil {
			t.Fatal(err)
		}
	}

	// A backup on the follower, of its own state.
	rec := submitJob(t, f, `{"type":"backup","name":"b.kvdsnap"}`, http.StatusAccepted)
	if rec = waitJob(t, f, rec.ID); rec.State != "succeeded" {
		t.Fatalf("backup on %s: %+v", f.name, rec)
	}
	restored := filepath.Join(t.TempDir(), "restored")
	backup := filepath.Join(f.dir, "backups", "b.kvdsnap")
	if out, err := exec.CommandContext(ctx, kvctlBin, "restore", backup, "--data-dir", restored).CombinedOutput(); err != nil {
		t.Fatalf("kvctl restore of %s's backup: %v\n%s", f.name, err, out)
	}
	single, err := kvtest.Start(t, kvtest.Options{Bin: kvdBin, DataDir: restored,
		Args: []string{"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	src := redis.NewClient(&redis.Options{Addr: single.RESPAddr})
	defer src.Close()
	if n, err := src.DBSize(ctx).Result(); err != nil || n != 100 {
		t.Fatalf("the backup restored on a single node holds %d keys (%v), want 100", n, err)
	}
	if v, err := src.Get(ctx, "k099").Result(); err != nil || v != "v99" {
		t.Fatalf("the backup's k099 = %q, %v", v, err)
	}

	// An import on the follower reaches every node.
	var nd strings.Builder
	for i := range 50 {
		fmt.Fprintf(&nd, "{\"key\":\"imp%02d\",\"value\":\"x%d\"}\n", i, i)
	}
	if err := os.WriteFile(filepath.Join(f.dir, "backups", "in.ndjson"), []byte(nd.String()), 0o640); err != nil {
		t.Fatal(err)
	}
	rec = submitJob(t, f, `{"type":"import","name":"in.ndjson"}`, http.StatusAccepted)
	if rec = waitJob(t, f, rec.ID); rec.State != "succeeded" {
		t.Fatalf("import on %s: %+v", f.name, rec)
	}
	for _, n := range c.nodes {
		if v, err := c.client(n).Get(ctx, "imp49").Result(); err != nil || v != "x49" {
			t.Fatalf("%s: imp49 = %q, %v after the import on %s", n.name, v, err, f.name)
		}
	}

	rec = submitJob(t, f, `{"type":"verify"}`, http.StatusAccepted)
	if rec = waitJob(t, f, rec.ID); rec.State != "succeeded" {
		t.Fatalf("verify on %s: %+v", f.name, rec)
	}

	for _, body := range []string{`{"type":"restore","name":"b.kvdsnap"}`, `{"type":"compact","revision":5}`, `{"type":"defrag"}`} {
		submitJob(t, f, body, http.StatusBadRequest)
	}
}

// submitJob posts a job to n and checks the status it answers; the record,
// when it is 202.
func submitJob(t *testing.T, n *node, body string, want int) kvtest.JobRecord {
	t.Helper()
	status, rec, reply, err := kvtest.SubmitJob(http.DefaultClient, "http://"+n.p.HTTPAddr, body)
	if err != nil {
		t.Fatal(err)
	}
	if status != want {
		t.Fatalf("POST /v1/jobs %s on %s: %d %s, want %d", body, n.name, status, reply, want)
	}
	if status != http.StatusAccepted {
		t.Logf("POST /v1/jobs %s: %d %s", body, status, bytes.TrimSpace(reply))
	}
	return rec
}

// waitJob waits for n's job id to finish and returns its record.
func waitJob(t *testing.T, n *node, id string) kvtest.JobRecord {
	t.Helper()
	rec, err := kvtest.WaitJob(t.Context(), "http://"+n.p.HTTPAddr, id)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}
