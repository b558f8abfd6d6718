package server_test

import (
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kvdstore/kvd/engine"
)

// TestLogFailed makes the write-ahead log's fsync fail and checks how the
// server reports it: writes get MISCONF (RESP) or 503 log_failed (HTTP),
// reads keep working, INFO and /v1/status say why, /healthz turns 503.
func TestLogFailed(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		var fail atomic.Bool
		ts := startServer(t, serverOpts{io: model, logFails: true, engine: engine.Options{
			SyncFile: func(f *os.File) error {
				if fail.Load() {
					return errors.New("injected fsync failure")
				}
				return f.Sync()
			},
		}})
		c := dialRaw(t, ts.respAddr)
		if got := c.do("SET", "before", "1"); got != ok {
			t.Fatalf("SET = %q", got)
		}
		fail.Store(true)
		misconf := "-MISCONF write-ahead log failed; writes are refused until kvd restarts\r\n"
		if got := c.do("SET", "k", "v"); got != misconf {
			t.Fatalf("SET after fsync failure = %q", got)
		}
		if got := c.do("INCR", "n"); got != misconf {
			t.Errorf("INCR = %q", got)
		}
		if got := c.do("GET", "before"); got != bulk("1") {
			t.Errorf("GET after the failure = %q, want reads to work", got)
		}
		info := c.do("INFO", "persistence")
		if !strings.Contains(info, "log_status:failed\r\n") || !strings.Contains(info, "log_error:") ||
			!strings.Contains(info, "injected fsync failure") {
			t.Errorf("INFO does not say why the log failed:\n%s", info)
		}

		base := "http://" + ts.httpAddr
		if r := doHTTP(t, "PUT", base+"/v1/kv/x", strings.NewReader("v"), nil); r.status != 503 || errorCode(t, r.body) != "log_failed" {
			t.Errorf("HTTP PUT: %d %s", r.status, r.body)
		}
		if r := doHTTP(t, "GET", base+"/healthz", nil, nil); r.status != 503 || errorCode(t, r.body) != "log_failed" {
			t.Errorf("healthz: %d %s", r.status, r.body)
		}
		if r := doHTTP(t, "GET", base+"/v1/status", nil, nil); !strings.Contains(r.body, "injected fsync failure") {
			t.Errorf("status lacks log_error: %s", r.body)
		}
		if r := doHTTP(t, "GET", base+"/v1/kv/before", nil, nil); r.status != 200 || r.body != "1" {
			t.Errorf("HTTP GET after the failure: %d %q", r.status, r.body)
		}
	})
}
