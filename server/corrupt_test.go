package server_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/kvtest"
	"github.com/kvdstore/kvd/server"
)

// TestCorruptValue: a value record of the state file that fails its
// checksum answers -ERR corrupt over RESP and 500 corrupt over HTTP, other
// keys still read, and INFO, /v1/status, /healthz (200, degraded) and
// /metrics report the store degraded.
func TestCorruptValue(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		dir := t.TempDir()
		db, err := engine.Open(dir, engine.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"good", "bad"} {
			if _, err := db.Put([]byte(k), []byte("value of "+k), engine.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		kvtest.DamageValue(t, dir, "bad", kvtest.FlipLastBit)

		metrics := server.NewMetrics()
		ts := startServer(t, serverOpts{dir: dir, io: model, cfg: server.Config{Metrics: metrics}})
		base := "http://" + ts.httpAddr
		c := dialRaw(t, ts.respAddr)

		if r := doHTTP(t, "GET", base+"/healthz", nil, nil); r.status != 200 || r.body != "ok\n" {
			t.Errorf("healthz before any damage was read: %d %q", r.status, r.body)
		}
		if got := c.do("GET", "good"); got != bulk("value of good") {
			t.Errorf("GET good = %q", got)
		}
		if got := c.do("GET", "bad"); !strings.HasPrefix(got, "-ERR corrupt: engine: corrupt value in the state file") {
			t.Errorf("GET bad = %q, want -ERR corrupt", got)
		}
		r := doHTTP(t, "GET", base+"/v1/kv/bad", nil, nil)
		if r.status != 500 || errorCode(t, r.body) != "corrupt" {
			t.Errorf("HTTP GET bad: %d %s", r.status, r.body)
		}
		if r := doHTTP(t, "GET", base+"/v1/kv/good", nil, nil); r.status != 200 || r.body != "value of good" {
			t.Errorf("HTTP GET good: %d %s", r.status, r.body)
		}

		var st server.Status
		if err := json.Unmarshal([]byte(doHTTP(t, "GET", base+"/v1/status", nil, nil).body), &st); err != nil {
			t.Fatal(err)
		}
		if !st.Degraded || st.StateCorruptions != 2 || !strings.Contains(st.StateLastCorruption, "corrupt value") || st.StateLastCorruptionTime == "" {
			t.Errorf("status: degraded %v, %d corruptions, last %q at %q", st.Degraded, st.StateCorruptions, st.StateLastCorruption, st.StateLastCorruptionTime)
		}
		if r := doHTTP(t, "GET", base+"/healthz", nil, nil); r.status != 200 || !strings.HasPrefix(r.body, "degraded: 2 reads") {
			t.Errorf("healthz: %d %q", r.status, r.body)
		}
		if m := doHTTP(t, "GET", base+"/metrics", nil, nil).body; !strings.Contains(m, "kvd_state_corruptions_total 2\n") {
			t.Errorf("metrics lack kvd_state_corruptions_total 2")
		}
		info := c.do("INFO", "persistence")
		for _, want := range []string{"state_status:degraded\r\n", "state_corruptions:2\r\n", "state_last_corruption:engine: corrupt value"} {
			if !strings.Contains(info, want) {
				t.Errorf("INFO lacks %q:\n%s", want, info)
			}
		}
	})
}
