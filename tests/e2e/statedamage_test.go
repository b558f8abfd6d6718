package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/internal/kvtest"
)

const damageKeys = 600

func damageKey(i int) string   { return fmt.Sprintf("key-%04d", i) }
func damageValue(i int) string { return fmt.Sprintf("value-%04d-%s", i, strings.Repeat("v", 90)) }

// TestStateFileDamage flips bits in page headers and branch elements of a
// stopped kvd's state file, then starts it and reads every key with GET,
// EXISTS, SCAN and HTTP: kvd survives them all; each read returns the right
// value or a corrupt error, never other data; status, /healthz, INFO and
// /metrics report it degraded; "kvd check" refuses the running store, and
// once it is stopped exits 1 naming the damaged page.
func TestStateFileDamage(t *testing.T) {
	pristine := filepath.Join(t.TempDir(), "data")
	p := startKVD(t, pristine)
	c := dial(t, p.RESPAddr)
	kvs := make([]client.KV, damageKeys)
	for i := range kvs {
		kvs[i] = client.KV{Key: damageKey(i), Value: []byte(damageValue(i))}
	}
	if err := c.PutMany(t.Context(), kvs); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if code := stop(t, p, syscall.SIGTERM); code != 0 { // checkpoints everything
		t.Fatalf("kvd exited %d\n%s", code, p.Log())
	}
	if out, _, code := runTool(t, "", nil, kvdBin, "check", "--data-dir", pristine); code != 0 || !strings.Contains(out, "keys checked: 600") {
		t.Fatalf("kvd check of the undamaged store: exit %d\n%s", code, out)
	}

	for _, tc := range []struct {
		name string
		// flip damages the file and returns the page that kvd check must
		// name ("" for any) and the keys whose reads may fail.
		flip func(path string, pages []kvtest.BoltPage) (string, [][]byte)
	}{
		{"leaf flags", func(path string, pages []kvtest.BoltPage) (string, [][]byte) {
			l := leafPages(pages)[7]
			kvtest.XorFile(t, path, l.Offset+kvtest.PageFlagsOff, 0x04)
			return fmt.Sprintf("page %d: ", l.ID), l.Keys
		}},
		{"branch pgid", func(path string, pages []kvtest.BoltPage) (string, [][]byte) {
			root := pages[0]
			kvtest.XorFile(t, path, root.BranchElemOff(4)+8+5, 0x01) // pgid + 2^40
			for _, l := range pages {
				if l.ID == root.Children[4] {
					return "reference to page", l.Keys
				}
			}
			t.Fatal("child page not found")
			return "", nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			cp(t, pristine, dir)
			path := filepath.Join(dir, "state.db")
			pages, _ := kvtest.StatePages(t, path, "kv")
			wantProblem, hit := tc.flip(path, pages)
			isHit := func(k string) bool {
				return slices.ContainsFunc(hit, func(h []byte) bool { return string(h) == k })
			}

			p := startKVD(t, dir)
			rdb := redis.NewClient(&redis.Options{Addr: p.RESPAddr, MaxRetries: -1})
			defer rdb.Close()
			ctx := t.Context()
			corrupt := 0
			check := func(what, k string, err error, ok bool) {
				t.Helper()
				switch {
				case err == nil && ok:
				case err != nil && strings.HasPrefix(err.Error(), "ERR corrupt") && isHit(k):
					corrupt++
				default:
					select {
					case <-p.Done():
						t.Fatalf("kvd died at %s %s: %v\n%s", what, k, p.Err(), p.Log())
					default:
					}
					t.Errorf("%s %s: %v (value right: %v)", what, k, err, ok)
				}
			}
			for i := range damageKeys {
				k := damageKey(i)
				v, err := rdb.Get(ctx, k).Result()
				check("GET", k, err, v == damageValue(i))
				n, err := rdb.Exists(ctx, k).Result()
				check("EXISTS", k, err, n == 1)
			}
			var cursor uint64
			scanned := 0
			for {
				keys, next, err := rdb.Scan(ctx, cursor, "*", 100).Result()
				if err != nil {
					if !strings.HasPrefix(err.Error(), "ERR corrupt") {
						t.Errorf("SCAN: %v", err)
					}
					break
				}
				scanned += len(keys)
				if cursor = next; cursor == 0 {
					break
				}
			}
			for _, i := range []int{0, damageKeys / 2, damageKeys - 1} {
				k := damageKey(i)
				code, body := httpGet(t, "http://"+p.HTTPAddr+"/v1/kv/"+k)
				switch {
				case code == http.StatusOK && body == damageValue(i):
				case code == http.StatusInternalServerError && strings.Contains(body, `"code":"corrupt"`) && isHit(k):
				default:
					t.Errorf("HTTP GET %s: %d %s", k, code, body)
				}
			}
			for _, l := range hit[:1] {
				code, body := httpGet(t, "http://"+p.HTTPAddr+"/v1/kv/"+string(l))
				if code != http.StatusInternalServerError || !strings.Contains(body, `"code":"corrupt"`) {
					t.Errorf("HTTP GET of a damaged key %s: %d %s", l, code, body)
				}
			}
			t.Logf("%d corrupt replies; SCAN saw %d keys", corrupt, scanned)
			if corrupt == 0 {
				t.Errorf("no read met the damage")
			}
			select {
			case <-p.Done():
				t.Fatalf("kvd exited: %v\n%s", p.Err(), p.Log())
			default:
			}

			if code, body := httpGet(t, "http://"+p.HTTPAddr+"/v1/status"); !strings.Contains(body, `"degraded":true`) {
				t.Errorf("status: %d %s", code, body)
			}
			if code, body := httpGet(t, "http://"+p.HTTPAddr+"/healthz"); code != http.StatusOK || !strings.HasPrefix(body, "degraded: ") {
				t.Errorf("healthz: %d %s", code, body)
			}
			_, metrics := httpGet(t, "http://"+p.HTTPAddr+"/metrics")
			m := regexp.MustCompile(`(?m)^kvd_state_corruptions_total (\d+)$`).FindStringSubmatch(metrics)
			if m == nil {
				t.Errorf("no kvd_state_corruptions_total in the metrics")
			} else if n, _ := strconv.Atoi(m[1]); n == 0 {
				t.Errorf("metrics: %s", m[0])
			}
			if info, err := rdb.Info(ctx, "persistence").Result(); err != nil || !strings.Contains(info, "state_status:degraded") {
				t.Errorf("INFO: %v\n%s", err, info)
			}
			if !strings.Contains(p.Log(), "damaged page in the state file") {
				t.Errorf("the damage was not logged:\n%s", p.Log())
			}

			if _, stderr, code := runTool(t, "", nil, kvdBin, "check", "--data-dir", dir); code != 2 || !strings.Contains(stderr, "in use") {
				t.Errorf("kvd check of a running store: exit %d, %s", code, stderr)
			}
			if code := stop(t, p, syscall.SIGTERM); code != 0 {
				t.Errorf("kvd exited %d\n%s", code, p.Log())
			}
			out, _, code := runTool(t, "", nil, kvdBin, "check", "--data-dir", dir)
			if code != 1 || !strings.Contains(out, wantProblem) {
				t.Errorf("kvd check: exit %d, want 1 and %q:\n%s", code, wantProblem, out)
			}
		})
	}
}

// leafPages returns the leaf pages, in key order.
func leafPages(pages []kvtest.BoltPage) []kvtest.BoltPage {
	var out []kvtest.BoltPage
	for _, p := range pages {
		if !p.Branch {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b kvtest.BoltPage) int { return bytes.Compare(a.Keys[0], b.Keys[0]) })
	return out
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
