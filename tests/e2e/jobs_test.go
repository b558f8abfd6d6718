package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/internal/kvtest"
)

// TestBackupUnderLoad saves a backup with kvctl while a writer runs,
// restores it offline into a fresh directory and checks that the restored
// store is exactly the source's at the backup's revision: every write is
// a new key, so the state at revision R is the keys of the first R writes.
func TestBackupUnderLoad(t *testing.T) {
	p := startKVD(t, "", "--commit-mode", "async", "--checkpoint-interval", "20ms")
	ctx := t.Context()
	c, err := client.Dial(ctx, p.RESPAddr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var acked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := c.Put(ctx, fmt.Sprintf("k%07d", i), []byte(strings.Repeat("v", 64))); err != nil {
				t.Error(err)
				return
			}
			acked.Add(1)
		}
	}()
	kvtest.Eventually(t, 30*time.Second, "2000 writes", func() bool { return acked.Load() >= 2000 })
	before := acked.Load()
	file := filepath.Join(t.TempDir(), "b.kvdsnap")
	out, errOut, code := runTool(t, "", nil, kvctlBin, "-o", "json", "backup", "save", "--http-addr", p.HTTPAddr, file)
	close(stop)
	wg.Wait()
	if code != 0 {
		t.Fatalf("backup save: exit %d: %s", code, errOut)
	}
	var saved struct {
		Revision uint64
		Sha256   string
	}
	json.Unmarshal([]byte(out), &saved)
	if saved.Revision < uint64(before) || saved.Revision > uint64(acked.Load()) {
		t.Fatalf("backup at revision %d; %d writes were acknowledged before it started, %d in all", saved.Revision, before, acked.Load())
	}
	if _, err := os.Stat(file + ".part"); err == nil {
		t.Fatal("FILE.part left after a backup")
	}
	out, errOut, code = runTool(t, "", nil, kvctlBin, "backup", "status", file)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("revision: %d\n", saved.Revision)) ||
		!strings.Contains(out, fmt.Sprintf("keys:     %d\n", saved.Revision)) {
		t.Fatalf("backup status: exit %d\n%s%s", code, out, errOut)
	}
	dir := filepath.Join(t.TempDir(), "restored")
	if out, errOut, code := runTool(t, "", nil, kvctlBin, "restore", file, "--data-dir", dir); code != 0 {
		t.Fatalf("restore: exit %d: %s%s", code, out, errOut)
	}
	p2 := startKVD(t, dir)
	c2, err := client.Dial(ctx, p2.RESPAddr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	st, err := c2.Status(ctx)
	if err != nil || st.Written != saved.Revision {
		t.Fatalf("restored store at revision %d (%v), want %d", st.Written, err, saved.Revision)
	}
	kvs, err := c2.Scan(ctx, client.ScanOptions{Limit: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(kvs)) != saved.Revision {
		t.Fatalf("restored %d keys, want %d", len(kvs), saved.Revision)
	}
	for i, kv := range kvs {
		if kv.Key != fmt.Sprintf("k%07d", i) {
			t.Fatalf("restored key %d is %q: not the first %d writes", i, kv.Key, saved.Revision)
		}
	}
	// A damaged copy is refused.
	b, _ := os.ReadFile(file)
	b[len(b)/2] ^= 0x10
	bad := filepath.Join(t.TempDir(), "bad.kvdsnap")
	os.WriteFile(bad, b, 0o640)
	if _, errOut, code := runTool(t, "", nil, kvctlBin, "backup", "status", bad); code != 1 || !strings.Contains(errOut, "bad snapshot") {
		t.Fatalf("damaged backup: exit %d: %s", code, errOut)
	}
}

// TestJobsHTTP drives the jobs over HTTP: submit, long-poll, events,
// artifact, cancel and errors; then restarts kvd and finds the records.
func TestJobsHTTP(t *testing.T) {
	dir := t.TempDir()
	p := startKVD(t, dir)
	ctx := t.Context()
	c, err := client.Dial(ctx, p.RESPAddr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		c.Put(ctx, fmt.Sprintf("h%04d", i), []byte("x"))
	}
	c.Close()
	base := "http://" + p.HTTPAddr
	post := func(path, body string) (*http.Response, map[string]any) {
		resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		json.NewDecoder(resp.Body).Decode(&v)
		return resp, v
	}
	resp, rec := post("/v1/jobs", `{"type":"backup"}`)
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Location") != "/v1/jobs/"+rec["id"].(string) {
		t.Fatalf("submit: %s, Location %q, %v", resp.Status, resp.Header.Get("Location"), rec)
	}
	id := rec["id"].(string)
	var done map[string]any
	if err := kvtest.GetJSON(ctx, http.DefaultClient, base+"/v1/jobs/"+id+"?wait=30s", &done); err != nil {
		t.Fatal(err)
	}
	if done["state"] != "succeeded" {
		t.Fatalf("backup: %v", done)
	}
	// Events of a finished job: its last record, as "done".
	er, err := http.Get(base + "/v1/jobs/" + id + "/events")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(er.Body)
	var events []string
	for sc.Scan() {
		if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			events = append(events, ev)
		}
	}
	er.Body.Close()
	if er.Header.Get("Content-Type") != "text/event-stream" || len(events) == 0 || events[len(events)-1] != "done" {
		t.Fatalf("events: %s %v", er.Header.Get("Content-Type"), events)
	}
	// The artifact, with its size and checksum.
	ar, err := http.Get(base + "/v1/jobs/" + id + "/artifact")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(ar.Body)
	ar.Body.Close()
	sum := sha256.Sum256(body)
	if ar.StatusCode != 200 || ar.Header.Get("Content-Length") != strconv.Itoa(len(body)) || ar.Header.Get("X-Kvd-Sha256") != hex.EncodeToString(sum[:]) {
		t.Fatalf("artifact: %s, %d bytes, Content-Length %s, X-Kvd-Sha256 %s, sha256 %x", ar.Status, len(body),
			ar.Header.Get("Content-Length"), ar.Header.Get("X-Kvd-Sha256"), sum)
	}
	// Errors.
	for _, tc := range []struct {
		path, body string
		status     int
	}{
		{"/v1/jobs", `{"type":"frob"}`, 400},
		{"/v1/jobs", `not json`, 400},
		{"/v1/jobs", `{"type":"restore","name":"../../etc/passwd"}`, 400},
		{"/v1/jobs", `{"type":"import","name":"missing.ndjson"}`, 400},
		{"/v1/jobs/J999999/cancel", ``, 404},
	} {
		if resp, v := post(tc.path, tc.body); resp.StatusCode != tc.status {
			t.Errorf("POST %s %s: %s %v, want %d", tc.path, tc.body, resp.Status, v, tc.status)
		}
	}
	// The records survive a restart.
	out, errOut, code := runTool(t, "", []string{"KVCTL_ADDR=" + p.RESPAddr}, kvctlBin, "job", "submit", "verify")
	vid := strings.TrimSpace(out)
	if code != 0 {
		t.Fatalf("job submit verify: %d %s", code, errOut)
	}
	if out, errOut, code := runTool(t, "", []string{"KVCTL_ADDR=" + p.RESPAddr}, kvctlBin, "job", "wait", vid); code != 0 || !strings.Contains(out, "state: succeeded") {
		t.Fatalf("job wait: %d %s%s", code, out, errOut)
	}
	stop(t, p, 15)
	p2 := startKVD(t, dir)
	out, _, _ = runTool(t, "", []string{"KVCTL_ADDR=" + p2.RESPAddr}, kvctlBin, "job", "list")
	list := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 4 {
			list[f[0]] = f[1] + " " + f[2] + " " + f[3]
		}
	}
	if list[id] != "backup succeeded 100.0%" || list[vid] != "verify succeeded 100.0%" {
		t.Fatalf("job list after a restart:\n%s", out)
	}
}

// TestJobsRESP checks BGSAVE, LASTSAVE and INFO persistence with
// redis-cli, and an import through kvctl.
func TestJobsRESP(t *testing.T) {
	cli := needTool(t, "redis-cli")
	dir := t.TempDir()
	backups := filepath.Join(dir, "backups")
	p := startKVD(t, dir)
	rc := func(args ...string) string {
		out, errOut, code := runTool(t, "", nil, cli, append([]string{"-p", port(p.RESPAddr)}, args...)...)
		if code != 0 {
			t.Fatalf("redis-cli %v: %d %s", args, code, errOut)
		}
		return strings.TrimSpace(out)
	}
	if got := rc("LASTSAVE"); got != "0" {
		t.Fatalf("LASTSAVE before any backup: %q", got)
	}
	rc("SET", "a", "1")
	if got := rc("BGSAVE"); got != "Background saving started" && got != "Background saving already in progress" {
		t.Fatalf("BGSAVE: %q", got)
	}
	kvtest.Eventually(t, 30*time.Second, "LASTSAVE to change", func() bool { return rc("LASTSAVE") != "0" })
	info := rc("INFO", "persistence")
	for _, f := range []string{"rdb_bgsave_in_progress:0", "rdb_last_bgsave_status:ok", "rdb_changes_since_last_save:0"} {
		if !strings.Contains(info, f) {
			t.Errorf("INFO persistence lacks %s:\n%s", f, info)
		}
	}
	// Import 5000 keys with redis-cli --pipe's format.
	var b strings.Builder
	for i := range 5000 {
		k := fmt.Sprintf("imp%05d", i)
		fmt.Fprintf(&b, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$3\r\nval\r\n", len(k), k)
	}
	os.WriteFile(filepath.Join(backups, "keys.resp"), []byte(b.String()), 0o640)
	out, errOut, code := runTool(t, "", []string{"KVCTL_ADDR=" + p.RESPAddr}, kvctlBin, "import", "keys.resp")
	if code != 0 || !strings.Contains(out, "result_keys: 5000\n") {
		t.Fatalf("kvctl import: %d\n%s%s", code, out, errOut)
	}
	if got := rc("DBSIZE"); got != "5001" {
		t.Fatalf("DBSIZE after import: %s", got)
	}
	if got := rc("JOB", "SUBMIT", "restore"); !strings.Contains(got, "needs the name") {
		t.Fatalf("JOB SUBMIT restore without a name: %q", got)
	}
}
