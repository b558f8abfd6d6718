package server_test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/kvtest"
	"github.com/kvdstore/kvd/jobs"
	"github.com/kvdstore/kvd/server"
)

// startJobServer is startServer with a job manager.
func startJobServer(t *testing.T) (*testServer, *jobs.Manager) {
	t.Helper()
	dir := t.TempDir()
	db, err := engine.Open(dir, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := jobs.Open(db, jobs.Options{Dir: filepath.Join(dir, "jobs"), BackupDir: filepath.Join(dir, "backups")})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(db, server.Config{Jobs: m})
	if err != nil {
		t.Fatal(err)
	}
	respLn, httpLn := kvtest.Listen(t), kvtest.Listen(t)
	errc := make(chan error, 2)
	go func() { errc <- srv.ServeRESP(respLn) }()
	go func() { errc <- srv.ServeHTTPAPI(httpLn) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		for range 2 {
			if err := <-errc; !errors.Is(err, server.ErrServerClosed) {
				t.Errorf("Serve returned %v", err)
			}
		}
		m.Close()
		db.Close()
	})
	return &testServer{db: db, srv: srv, respAddr: respLn.Addr().String(), httpAddr: httpLn.Addr().String()}, m
}

// TestJobsDisabled: without a job manager the job commands and endpoints
// say so.
func TestJobsDisabled(t *testing.T) {
	ts := startServer(t, serverOpts{})
	c := dialRaw(t, ts.respAddr)
	for _, cmd := range [][]string{{"JOB", "LIST"}, {"BGSAVE"}, {"LASTSAVE"}} {
		if got := c.do(cmd...); !strings.HasPrefix(got, "-ERR jobs are not enabled") {
			t.Errorf("%v: %q", cmd, got)
		}
	}
	for _, path := range []string{"/v1/jobs", "/v1/snapshot", "/v1/jobs/J000001"} {
		resp, err := http.Get("http://" + ts.httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("GET %s: %s, want 503", path, resp.Status)
		}
	}
}

// TestJobCommand drives JOB over RESP: submit, wait, get, list, cancel and
// the errors.
func TestJobCommand(t *testing.T) {
	ts, _ := startJobServer(t)
	c := dialRaw(t, ts.respAddr)
	id := c.do("JOB", "SUBMIT", "verify")
	if !strings.HasPrefix(id, "$7\r\nJ0000") {
		t.Fatalf("JOB SUBMIT verify: %q", id)
	}
	id = strings.Split(id, "\r\n")[1]
	if got := c.do("JOB", "WAIT", id, "10000"); !strings.Contains(got, bulk("state")+bulk("succeeded")) {
		t.Fatalf("JOB WAIT: %q", got)
	}
	if got := c.do("JOB", "LIST", "TYPE", "verify"); !strings.HasPrefix(got, "*1\r\n") || !strings.Contains(got, bulk(id)) {
		t.Fatalf("JOB LIST TYPE verify: %q", got)
	}
	if got := c.do("JOB", "LIST", "TYPE", "backup"); got != "*0\r\n" {
		t.Fatalf("JOB LIST TYPE backup: %q", got)
	}
	if got := c.do("JOB", "CANCEL", id); !strings.Contains(got, bulk("succeeded")) {
		t.Fatalf("JOB CANCEL of a finished job: %q", got)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"JOB", "GET", "J999999"}, "-ERR jobs: no such job"},
		{[]string{"JOB", "SUBMIT", "frob"}, "-ERR jobs: bad job parameters: unknown job type"},
		{[]string{"JOB", "SUBMIT", "compact"}, "-ERR jobs: bad job parameters: compact needs a revision"},
		{[]string{"JOB", "SUBMIT", "compact", "REVISION", "x"}, "-ERR revision is not a number"},
		{[]string{"JOB", "SUBMIT", "import", "NAME"}, "-ERR syntax error"},
		{[]string{"JOB", "WAIT", id, "-1"}, "-ERR timeout is not a number"},
		{[]string{"JOB", "FROB"}, "-ERR unknown subcommand"},
	} {
		if got := c.do(tc.args...); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%v: %q, want %q...", tc.args, got, tc.want)
		}
	}
	if got := c.do("BGSAVE"); got != "+Background saving started\r\n" {
		t.Fatalf("BGSAVE: %q", got)
	}
	kvtest.Eventually(t, 30*time.Second, "LASTSAVE to change", func() bool { return c.do("LASTSAVE") != ":0\r\n" })
}
