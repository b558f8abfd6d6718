package server_test

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvdstore/kvd/engine"
)

// TestRecoveryCutIsReported opens a crash image whose log has a hole among
// records written after the last fsync (what a power loss that keeps a
// later page and not an earlier one leaves): the store starts by itself,
// and INFO persistence, /v1/status and /metrics report what was cut.
func TestRecoveryCutIsReported(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		live := t.TempDir()
		db, err := engine.Open(live, engine.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		for i := range 10 {
			d := engine.DurabilitySync
			if i >= 5 {
				d = engine.DurabilityAsync
			}
			if _, err := db.Put([]byte(fmt.Sprint("k", i)), []byte("v"), engine.WriteOptions{Durability: d}); err != nil {
				t.Fatal(err)
			}
		}
		crash := t.TempDir()
		if out, err := exec.Command("cp", "-a", live+"/.", crash).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
		// Zero revision 8's record: 9 and 10 follow it, written when only 5
		// was durable.
		segs, _ := filepath.Glob(filepath.Join(crash, "wal", "0*"))
		if len(segs) != 1 {
			t.Fatalf("segments %v, want one", segs)
		}
		b, err := os.ReadFile(segs[0])
		if err != nil {
			t.Fatal(err)
		}
		off := 0
		for range 7 {
			size, n := binary.Uvarint(b[off:])
			off += n + int(size)
		}
		size, n := binary.Uvarint(b[off:])
		clear(b[off : off+n+int(size)])
		if err := os.WriteFile(segs[0], b, 0o640); err != nil {
			t.Fatal(err)
		}

		ts := startServer(t, serverOpts{io: model, dir: crash})
		c := dialRaw(t, ts.respAddr)
		info := c.do("INFO", "persistence")
		for _, want := range []string{"recovery_cuts:1\r\n", "recovery_cut_records:2\r\n", "recovery_cut_reason:a hole at revision 8"} {
			if !strings.Contains(info, want) {
				t.Errorf("INFO persistence lacks %q:\n%s", want, info)
			}
		}
		if got := c.do("GET", "k6"); got != bulk("v") {
			t.Errorf("GET k6 (revision 7, before the hole) = %q", got)
		}
		if got := c.do("EXISTS", "k8"); got != ":0\r\n" {
			t.Errorf("EXISTS k8 (revision 9, cut) = %q", got)
		}
		r := doHTTP(t, "GET", "http://"+ts.httpAddr+"/v1/status", nil, nil)
		var st struct {
			Recovery struct {
				Cuts    int   `json:"cuts"`
				Bytes   int64 `json:"bytes"`
				Records int   `json:"records"`
			} `json:"recovery"`
		}
		if err := json.Unmarshal([]byte(r.body), &st); err != nil || st.Recovery.Cuts != 1 || st.Recovery.Records != 2 || st.Recovery.Bytes <= 0 {
			t.Errorf("/v1/status recovery %+v (%v): %s", st.Recovery, err, r.body)
		}
		m := doHTTP(t, "GET", "http://"+ts.httpAddr+"/metrics", nil, nil)
		if !strings.Contains(m.body, "kvd_wal_recovery_cut_records 2\n") {
			t.Errorf("/metrics lacks kvd_wal_recovery_cut_records 2")
		}
	})
}
