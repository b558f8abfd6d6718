package server_test

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/kvtest"
	"github.com/kvdstore/kvd/server"
)

// TestUnsyncedExposure holds the write-ahead log's fsync back in async mode
// and checks that INFO persistence, /v1/status and /metrics show an
// acknowledged write's growing age while it is unsynced, and its maximum
// over the last minute once the fsync completed.
func TestUnsyncedExposure(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		var (
			mu      sync.Mutex
			held    chan struct{} // non-nil: fsyncs wait until it is closed
			release = func() {
				mu.Lock()
				defer mu.Unlock()
				if held != nil {
					close(held)
					held = nil
				}
			}
		)
		metrics := server.NewMetrics()
		ts := startServer(t, serverOpts{io: model,
			syncFile: func(f *os.File) error {
				mu.Lock()
				c := held
				mu.Unlock()
				if c != nil {
					<-c
				}
				return f.Sync()
			},
			cfg: server.Config{Metrics: metrics},
			engine: engine.Options{
				CommitMode: engine.CommitAsync,
			},
		})
		defer release() // before the server's cleanup closes the store
		c := dialRaw(t, ts.respAddr)
		base := "http://" + ts.httpAddr
		infoMs := func(field string) float64 {
			t.Helper()
			info := c.do("INFO", "persistence")
			for _, line := range strings.Split(info, "\r\n") {
				if v, ok := strings.CutPrefix(line, field+":"); ok {
					f, err := strconv.ParseFloat(v, 64)
					if err != nil {
						t.Fatalf("INFO %s: %v", field, err)
					}
					return f
				}
			}
			t.Fatalf("INFO persistence lacks %s:\n%s", field, info)
			return 0
		}
		status := func() server.Unsynced {
			t.Helper()
			r := doHTTP(t, "GET", base+"/v1/status", nil, nil)
			var st server.Status
			if err := json.Unmarshal([]byte(r.body), &st); err != nil {
				t.Fatalf("status: %v in %s", err, r.body)
			}
			return st.Unsynced
		}
		gauge := func(name string) float64 {
			t.Helper()
			return metricValue(t, doHTTP(t, "GET", base+"/metrics", nil, nil).body, name)
		}

		if age := infoMs("unsynced_oldest_age_ms"); age != 0 {
			t.Errorf("unsynced_oldest_age_ms = %v with nothing written", age)
		}
		mu.Lock()
		held = make(chan struct{})
		mu.Unlock()
		if got := c.do("SET", "k", "v"); got != ok {
			t.Fatalf("SET = %q", got)
		}
		// The flusher's fsync is held: the acknowledged write ages.
		kvtest.Eventually(t, 10*time.Second, "INFO to show the unsynced write 50ms old", func() bool {
			return infoMs("unsynced_oldest_age_ms") >= 50
		})
		if u := status(); u.OldestAgeSeconds < 0.05 || u.MaxAgeLastMinuteSeconds < u.OldestAgeSeconds || u.MaxAgeSeconds < u.OldestAgeSeconds {
			t.Errorf("status unsynced while the fsync is held = %+v", u)
		}
		if g := gauge("kvd_wal_unsynced_oldest_age_seconds"); g < 0.05 {
			t.Errorf("kvd_wal_unsynced_oldest_age_seconds = %v while the fsync is held", g)
		}
		if g := gauge("kvd_wal_unsynced_max_age_last_minute_seconds"); g < 0.05 {
			t.Errorf("kvd_wal_unsynced_max_age_last_minute_seconds = %v while the fsync is held", g)
		}

		release()
		kvtest.Eventually(t, 10*time.Second, "the write to become durable", func() bool {
			st := ts.db.Stats()
			return st.DurableRevision == st.WrittenRevision
		})
		if age := infoMs("unsynced_oldest_age_ms"); age != 0 {
			t.Errorf("unsynced_oldest_age_ms = %v once everything is durable", age)
		}
		if m := infoMs("unsynced_max_age_last_minute_ms"); m < 50 {
			t.Errorf("unsynced_max_age_last_minute_ms = %v, want the held write's age, at least 50", m)
		}
		if m := infoMs("unsynced_max_age_ms"); m < 50 {
			t.Errorf("unsynced_max_age_ms = %v, want at least 50", m)
		}
		if u := status(); u.OldestAgeSeconds != 0 || u.MaxAgeLastMinuteSeconds < 0.05 {
			t.Errorf("status unsynced after the fsync = %+v", u)
		}
		if g := gauge("kvd_wal_unsynced_max_age_last_minute_seconds"); g < 0.05 {
			t.Errorf("kvd_wal_unsynced_max_age_last_minute_seconds = %v after the fsync", g)
		}
	})
}
