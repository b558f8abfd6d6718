package server_test

import (
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/kvtest"
)

// TestLogFailed makes the write-ahead log's fsync fail and checks how the
// server reports it: the write whose fsync failed gets UNKNOWN (its outcome
// is unknown), later writes get MISCONF (RESP) or 503 log_failed (HTTP),
// reads keep working, INFO and /v1/status say why, /healthz turns 503.
func TestLogFailed(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		var fail atomic.Bool
		ts := startServer(t, serverOpts{io: model, logFails: true, syncFile: func(f *os.File) error {
			if fail.Load() {
				return errors.New("injected fsync failure")
			}
			return f.Sync()
		}})
		c := dialRaw(t, ts.respAddr)
		if got := c.do("SET", "before", "1"); got != ok {
			t.Fatalf("SET = %q", got)
		}
		fail.Store(true)
		// The SET whose fsync failed was written: it may or may not be there
		// after a restart.
		unknown := "-UNKNOWN outcome unknown: the write may or may not have been executed (the write-ahead log failed); read before retrying: injected fsync failure\r\n"
		if got := c.do("SET", "k", "v"); got != unknown {
			t.Fatalf("SET whose fsync failed = %q, want %q", got, unknown)
		}
		misconf := "-MISCONF write-ahead log failed; writes are refused until kvd restarts\r\n"
		if got := c.do("SET", "k2", "v"); got != misconf {
			t.Fatalf("SET after the failure = %q", got)
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

// TestLogWriteRefused makes a write of the write-ahead log fail (a file
// size limit gives EFBIG, as a full disk gives ENOSPC): that write gets
// MISCONF write refused (RESP) or 503 log_write_failed (HTTP), which say it
// was not executed; the log does not fail, INFO and /v1/status count the
// failures, and writes succeed again once they fit.
func TestLogWriteRefused(t *testing.T) {
	if kvtest.InSubprocess(t) {
		return
	}
	ts := startServer(t, serverOpts{engine: engine.Options{Preallocate: -1}})
	c := dialRaw(t, ts.respAddr)
	if got := c.do("SET", "before", "1"); got != ok {
		t.Fatalf("SET = %q", got)
	}
	kvtest.FileLimit(t, 16<<10)
	big := strings.Repeat("x", 32<<10)
	refused := "-MISCONF write refused, not executed: the write-ahead log could not write it: file too large\r\n"
	if got := c.do("SET", "big", big); got != refused {
		t.Fatalf("SET past the limit = %q, want %q", got, refused)
	}
	base := "http://" + ts.httpAddr
	if r := doHTTP(t, "PUT", base+"/v1/kv/big", strings.NewReader(big), nil); r.status != 503 || errorCode(t, r.body) != "log_write_failed" ||
		!strings.Contains(r.body, "not executed") {
		t.Errorf("HTTP PUT past the limit: %d %s", r.status, r.body)
	}
	if got := c.do("GET", "big"); got != "$-1\r\n" {
		t.Errorf("GET of the refused key = %q, want nil", got)
	}
	info := c.do("INFO", "persistence")
	for _, want := range []string{"log_status:ok\r\n", "log_write_failures:2\r\n", "log_last_write_error:", "file too large"} {
		if !strings.Contains(info, want) {
			t.Errorf("INFO persistence lacks %q:\n%s", want, info)
		}
	}
	if r := doHTTP(t, "GET", base+"/v1/status", nil, nil); !strings.Contains(r.body, `"log_write_failures":2`) ||
		!strings.Contains(r.body, "file too large") || strings.Contains(r.body, "log_error") {
		t.Errorf("status: %s", r.body)
	}
	if r := doHTTP(t, "GET", base+"/healthz", nil, nil); r.status != 200 {
		t.Errorf("healthz while writes are refused: %d %s", r.status, r.body)
	}
	kvtest.FileLimit(t, 0)
	if got := c.do("SET", "big", big); got != ok {
		t.Fatalf("SET once it fits = %q", got)
	}
	if got := c.do("GET", "big"); got != bulk(big) {
		t.Errorf("GET after the retry: %.40q", got)
	}
}
