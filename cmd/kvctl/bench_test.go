package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/server"
)

// startKVD serves a real engine in a temporary directory over RESP on a
// 127.0.0.1 port and returns the address.
func startKVD(t *testing.T, cfg server.Config) string {
	t.Helper()
	db, err := engine.Open(t.TempDir(), engine.Options{MaxValueSize: cfg.MaxValueSize})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(db, cfg)
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeRESP(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, server.ErrServerClosed) {
			t.Errorf("ServeRESP: %v", err)
		}
		if err := db.Close(); err != nil {
			t.Errorf("engine Close: %v", err)
		}
	})
	return ln.Addr().String()
}

// kvctl runs the command line args as main does and returns what it
// printed and its exit status.
func kvctl(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb strings.Builder
	err := run(t.Context(), args, strings.NewReader(""), &out, &errb)
	code = exitCode(err, &errb)
	return out.String(), errb.String(), code
}

// benchJSON is one object of "kvctl bench -o json", with the field names
// the command documents.
type benchJSON struct {
	Mode       string  `json:"mode"`
	CommitMode string  `json:"server_commit_mode"`
	Ops        int64   `json:"ops"`
	Reads      int64   `json:"reads"`
	Errors     int64   `json:"errors"`
	FirstError string  `json:"first_error"`
	OpsPerSec  float64 `json:"ops_per_sec"`
	Latency    struct {
		P50  float64 `json:"p50"`
		P90  float64 `json:"p90"`
		P99  float64 `json:"p99"`
		P999 float64 `json:"p999"`
		Max  float64 `json:"max"`
		Mean float64 `json:"mean"`
	} `json:"latency_us"`
	Fsyncs          uint64  `json:"fsyncs"`
	RecordsSynced   uint64  `json:"records_synced"`
	RecordsPerFsync float64 `json:"records_per_fsync"`
	DurationS       float64 `json:"duration_s"`
	Clients         int     `json:"clients"`
	Pipeline        int     `json:"pipeline"`
	ValueSize       int     `json:"value_size"`
	Keys            int     `json:"keys"`
	ReadRatio       float64 `json:"read_ratio"`
	Seed            uint64  `json:"seed"`
}

// parseBench decodes the output of "kvctl bench -o json", checking that
// every documented field is there.
func parseBench(t *testing.T, out string) []benchJSON {
	t.Helper()
	var raw []map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("output is not a JSON array: %v\n%s", err, out)
	}
	for _, obj := range raw {
		for _, k := range []string{"mode", "ops", "ops_per_sec", "errors", "latency_us", "fsyncs", "records_per_fsync",
			"duration_s", "clients", "pipeline", "value_size", "read_ratio", "seed"} {
			if _, ok := obj[k]; !ok {
				t.Errorf("field %q missing from %v", k, obj)
			}
		}
		lat, _ := obj["latency_us"].(map[string]any)
		for _, k := range []string{"p50", "p90", "p99", "p999", "max", "mean"} {
			if _, ok := lat[k]; !ok {
				t.Errorf("field latency_us.%s missing from %v", k, obj)
			}
		}
	}
	var res []benchJSON
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// checkPass checks what holds for any pass without errors.
func checkPass(t *testing.T, r benchJSON) {
	t.Helper()
	if r.Ops <= 0 || r.Errors != 0 || r.FirstError != "" {
		t.Errorf("%s: ops %d, errors %d (%s)", r.Mode, r.Ops, r.Errors, r.FirstError)
	}
	l := r.Latency
	if !(0 < l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
		t.Errorf("%s: latency quantiles out of order: %+v", r.Mode, l)
	}
	if !(0 < l.Mean && l.Mean <= l.Max) {
		t.Errorf("%s: mean latency %v, max %v", r.Mode, l.Mean, l.Max)
	}
	if r.DurationS <= 0 || math.Abs(r.OpsPerSec-float64(r.Ops)/r.DurationS) > 1e-6*r.OpsPerSec {
		t.Errorf("%s: %v ops/s, but %d ops in %vs", r.Mode, r.OpsPerSec, r.Ops, r.DurationS)
	}
	if r.CommitMode != "sync" {
		t.Errorf("%s: server_commit_mode %q, want the server's: sync", r.Mode, r.CommitMode)
	}
}

func TestBenchSyncAndAsync(t *testing.T) {
	addr := startKVD(t, server.Config{})
	start := time.Now()
	out, errOut, code := kvctl(t, "--addr", addr, "-o", "json", "bench", "--duration", "1s", "--clients", "4",
		"--pipeline", "4", "--durability", "both", "--value-size", "64")
	took := time.Since(start)
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	res := parseBench(t, out)
	if len(res) != 2 || res[0].Mode != "sync" || res[1].Mode != "async" {
		t.Fatalf("want a sync pass then an async pass, got %+v", res)
	}
	if took > 30*time.Second {
		t.Errorf("two passes of 1s took %v", took)
	}
	for _, r := range res {
		checkPass(t, r)
		if r.DurationS < 1 || r.DurationS > 10 {
			t.Errorf("%s: a 1s pass took %vs", r.Mode, r.DurationS)
		}
		if r.Clients != 4 || r.Pipeline != 4 || r.ValueSize != 64 || r.ReadRatio != 0 || r.Keys != 100_000 || r.Reads != 0 {
			t.Errorf("%s: settings reported as %+v", r.Mode, r)
		}
	}
	if res[0].Seed != res[1].Seed {
		t.Errorf("the passes report seeds %d and %d", res[0].Seed, res[1].Seed)
	}
	s, a := res[0], res[1]
	// Every write of the sync pass is fsynced before its reply, in a
	// record of one or more writes.
	if s.Fsyncs == 0 || s.RecordsPerFsync < 1 || s.RecordsSynced == 0 || s.RecordsSynced > uint64(s.Ops) {
		t.Errorf("sync pass: %d ops, %d fsyncs, %d records synced, %v records/fsync", s.Ops, s.Fsyncs, s.RecordsSynced, s.RecordsPerFsync)
	}
	if got := float64(s.RecordsSynced) / float64(s.Fsyncs); math.Abs(got-s.RecordsPerFsync) > 1e-9 {
		t.Errorf("sync pass: records_per_fsync %v, but %d records in %d fsyncs", s.RecordsPerFsync, s.RecordsSynced, s.Fsyncs)
	}
	if float64(a.Fsyncs)/float64(a.Ops) >= float64(s.Fsyncs)/float64(s.Ops) {
		t.Errorf("fsyncs per op: async %d/%d, not fewer than sync %d/%d", a.Fsyncs, a.Ops, s.Fsyncs, s.Ops)
	}
}

// TestBenchRequests checks that --requests stops at exactly that many
// requests, however they divide among clients and round trips.
func TestBenchRequests(t *testing.T) {
	addr := startKVD(t, server.Config{})
	tests := []struct {
		requests, clients, pipeline int
		readRatio                   float64
	}{
		{requests: 1, clients: 3, pipeline: 1},
		{requests: 501, clients: 4, pipeline: 1},
		{requests: 1000, clients: 3, pipeline: 7, readRatio: 0.5},
		{requests: 5, clients: 8, pipeline: 16},
	}
	for _, tc := range tests {
		name := fmt.Sprintf("%d/c%d/p%d/r%v", tc.requests, tc.clients, tc.pipeline, tc.readRatio)
		t.Run(name, func(t *testing.T) {
			out, errOut, code := kvctl(t, "--addr", addr, "-o", "json", "bench", "--durability", "sync",
				"--requests", fmt.Sprint(tc.requests), "--clients", fmt.Sprint(tc.clients),
				"--pipeline", fmt.Sprint(tc.pipeline), "--read-ratio", fmt.Sprint(tc.readRatio))
			if code != 0 {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			res := parseBench(t, out)
			if len(res) != 1 || res[0].Mode != "sync" {
				t.Fatalf("want one sync pass, got %+v", res)
			}
			r := res[0]
			checkPass(t, r)
			if r.Ops != int64(tc.requests) {
				t.Errorf("%d ops, want %d", r.Ops, tc.requests)
			}
			// Binomial: the bounds are over 9 standard deviations out.
			if tc.readRatio == 0 && r.Reads != 0 || tc.readRatio == 0.5 && (r.Reads < 350 || r.Reads > 650) {
				t.Errorf("%d reads of %d requests with --read-ratio %v", r.Reads, r.Ops, tc.readRatio)
			}
		})
	}
}

// TestBenchKeysAndValues checks what bench writes: keys of the prefix,
// zero-padded, below --keys, with values of --value-size.
func TestBenchKeysAndValues(t *testing.T) {
	addr := startKVD(t, server.Config{})
	for _, args := range [][]string{
		{"--keys", "10", "--key-prefix", "t:", "--value-size", "33", "--requests", "300"},
		{"--keys", "1000", "--key-prefix", "p/", "--value-size", "0", "--requests", "50", "--pipeline", "8"},
	} {
		_, errOut, code := kvctl(t, append([]string{"--addr", addr, "bench", "--durability", "async", "--clients", "2"}, args...)...)
		if code != 0 {
			t.Fatalf("bench %q: exit %d, stderr %q", args, code, errOut)
		}
	}
	cl, err := client.Dial(t.Context(), addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	all, err := cl.Scan(t.Context(), client.ScanOptions{Values: true})
	if err != nil {
		t.Fatal(err)
	}
	var small []string
	large := 0
	for _, kv := range all {
		switch {
		case strings.HasPrefix(kv.Key, "t:"):
			small = append(small, kv.Key)
			if len(kv.Value) != 33 {
				t.Errorf("%s has a value of %d bytes, want 33", kv.Key, len(kv.Value))
			}
		case regexp.MustCompile(`^p/[0-9]{3}$`).MatchString(kv.Key):
			large++
			if len(kv.Value) != 0 {
				t.Errorf("%s has a value of %d bytes, want 0", kv.Key, len(kv.Value))
			}
		default:
			t.Errorf("unexpected key %q", kv.Key)
		}
	}
	// 300 random writes miss one of 10 keys with probability 10 * 0.9^300.
	if want := []string{"t:0", "t:1", "t:2", "t:3", "t:4", "t:5", "t:6", "t:7", "t:8", "t:9"}; !slices.Equal(small, want) {
		t.Errorf("keys of --keys 10: %q, want %q", small, want)
	}
	if large < 40 || large > 50 {
		t.Errorf("50 writes over 1000 keys made %d keys", large)
	}
}

func TestBenchText(t *testing.T) {
	addr := startKVD(t, server.Config{})
	out, errOut, code := kvctl(t, "--addr", addr, "bench", "--requests", "200", "--clients", "2", "--seed", "42",
		"--read-ratio", "0.25")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	lines := strings.Split(out, "\n")
	rows := map[string][]string{}
	for _, l := range lines {
		if f := strings.Fields(l); len(f) > 0 {
			rows[f[0]] = f[1:]
		}
	}
	want := map[string][]string{
		"kvctl":  {"bench:", addr, "(server", "commit", "mode", "sync)"},
		"2":      {"clients,", "pipeline", "1,", "100-byte", "values,", "100,000", "keys,", "25%", "reads,", "200", "requests", "per", "pass,", "seed", "42"},
		"sync":   {"async"},
		"ops":    {"200", "200"},
		"errors": {"0", "0"},
	}
	for k, w := range want {
		if !slices.Equal(rows[k], w) {
			t.Errorf("line %q: %q, want %q", k, rows[k], w)
		}
	}
	latency := regexp.MustCompile(`^latency (p50|p90|p99|p99\.9|max|mean) +[0-9.]+(ns|µs|ms|s) +[0-9.]+(ns|µs|ms|s)$`)
	n := 0
	for _, l := range lines {
		if latency.MatchString(l) {
			n++
		}
	}
	if n != 6 {
		t.Errorf("%d latency rows, want 6:\n%s", n, out)
	}
	for _, label := range []string{"ops/s", "reads", "fsyncs", "records/fsync"} {
		if len(rows[label]) != 2 {
			t.Errorf("no row %q with two values:\n%s", label, out)
		}
	}
	if !regexp.MustCompile(`\nasync vs sync: [0-9.]+x the throughput \([0-9,]+ vs [0-9,]+ ops/s\), p50 \S+ vs \S+\n$`).MatchString(out) {
		t.Errorf("no comparison line at the end:\n%s", out)
	}

	// One pass: no comparison.
	out, errOut, code = kvctl(t, "--addr", addr, "bench", "--requests", "10", "--clients", "1", "--durability", "async")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if lines := strings.Split(out, "\n"); len(lines) < 4 || !strings.HasPrefix(lines[1], "1 client, pipeline 1,") ||
		strings.TrimSpace(lines[3]) != "async" || strings.Contains(out, "vs sync") {
		t.Errorf("one async pass with one client:\n%s", out)
	}
}

// TestBenchErrors checks that failed requests are counted, and that bench
// fails when all of them fail.
func TestBenchErrors(t *testing.T) {
	addr := startKVD(t, server.Config{MaxValueSize: 1024})
	// Writes fail (value too large); reads succeed.
	out, errOut, code := kvctl(t, "--addr", addr, "-o", "json", "bench", "--durability", "sync",
		"--requests", "400", "--clients", "3", "--pipeline", "3", "--value-size", "2000", "--read-ratio", "0.5")
	if code != 0 {
		t.Fatalf("half the requests failed: exit %d, want 0; stderr %q", code, errOut)
	}
	r := parseBench(t, out)[0]
	if r.Ops+r.Errors != 400 || r.Errors < 100 || r.Reads != r.Ops || !strings.Contains(r.FirstError, "value too large") {
		t.Errorf("%d ops, %d reads, %d errors (%q); want 400 in all, the writes failed", r.Ops, r.Reads, r.Errors, r.FirstError)
	}

	out, errOut, code = kvctl(t, "--addr", addr, "-o", "json", "bench", "--durability", "async",
		"--requests", "100", "--clients", "2", "--value-size", "2000")
	if code != 1 || !strings.Contains(errOut, "every request of the async pass failed: kvd: server: ERR value too large") {
		t.Errorf("every request failed: exit %d, want 1; stderr %q", code, errOut)
	}
	if r := parseBench(t, out)[0]; r.Ops != 0 || r.Errors != 100 {
		t.Errorf("every request failed: %d ops, %d errors reported", r.Ops, r.Errors)
	}
}

func TestBenchServerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	start := time.Now()
	out, errOut, code := kvctl(t, "--addr", addr, "bench", "--duration", "1h")
	if code != 1 || out != "" || !strings.Contains(errOut, "kvctl: kvd: dial "+addr) {
		t.Errorf("server down: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("server down: failing took %v", took)
	}
}

// TestBenchUsage checks that bad command lines exit 2 before dialing: the
// address has no server, which would exit 1.
func TestBenchUsage(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"bench", "--clients", "0"}, "--clients must be at least 1"},
		{[]string{"bench", "--clients", "many"}, `invalid argument "many" for "--clients"`},
		{[]string{"bench", "--pipeline", "0"}, "--pipeline must be at least 1"},
		{[]string{"bench", "--read-ratio", "1.5"}, "--read-ratio must be between 0 and 1"},
		{[]string{"bench", "--read-ratio", "-0.1"}, "--read-ratio must be between 0 and 1"},
		{[]string{"bench", "--read-ratio", "NaN"}, "--read-ratio must be between 0 and 1"},
		{[]string{"bench", "--duration", "0s"}, "--duration must be positive"},
		{[]string{"bench", "--requests", "0"}, "--requests must be at least 1"},
		{[]string{"bench", "--duration", "1s", "--requests", "5"}, "--duration and --requests exclude each other"},
		{[]string{"bench", "--keys", "0"}, "--keys must be at least 1"},
		{[]string{"bench", "--value-size", "-1"}, "--value-size must be between 0 and 67108864"},
		{[]string{"bench", "--warmup", "-1s"}, "--warmup must not be negative"},
		{[]string{"bench", "--durability", "later"}, `--durability must be sync, async, both or default, not "later"`},
		{[]string{"bench", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"bench", "extra"}, `bench takes no arguments (got ["extra"])`},
		{[]string{"bench", "--clients", "0", "--keys", "0"}, "--clients must be at least 1; --keys must be at least 1"},
		// "both" is bench's alone.
		{[]string{"--durability", "both", "put", "k", "v"}, `--durability must be sync, async or default, not "both"`},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, errOut, code := kvctl(t, append([]string{"--addr", "127.0.0.1:1"}, tc.args...)...)
			if code != 2 || out != "" || !strings.Contains(errOut, tc.wantErr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want 2 and %q", code, out, errOut, tc.wantErr)
			}
		})
	}
	out, _, code := kvctl(t, "bench", "--help")
	if code != 0 || !strings.HasPrefix(out, "kvctl bench: ") || !strings.Contains(out, "time of the\nwhole round trip") {
		t.Errorf("bench --help: exit %d, %q", code, out)
	}
}

// TestClaimIsExact checks that concurrent claims of a pass by requests add
// up to exactly the number asked for.
func TestClaimIsExact(t *testing.T) {
	for _, n := range []int64{1, 7, 1000, 12345} {
		var p benchPass
		p.limit(0, n)
		var mu sync.Mutex
		var total int64
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				var mine int64
				for {
					k := p.claim(time.Time{}, 1+g%5)
					if k == 0 {
						break
					}
					if k < 0 || k > 1+g%5 {
						t.Errorf("claim of %d granted %d", 1+g%5, k)
					}
					mine += int64(k)
				}
				mu.Lock()
				total += mine
				mu.Unlock()
			})
		}
		wg.Wait()
		if total != n {
			t.Errorf("claims granted %d requests, want %d", total, n)
		}
	}
	var p benchPass
	p.limit(time.Second, 0)
	p.end = time.Unix(100, 0)
	if p.claim(time.Unix(99, 0), 4) != 4 || p.claim(time.Unix(100, 0), 4) != 0 {
		t.Error("a pass by time does not stop at its end")
	}
}

// TestSummarize checks the arithmetic of a pass's results: merged
// histograms, rates and the deltas of the server's counters.
func TestSummarize(t *testing.T) {
	cfg := &benchConfig{clients: 2, pipeline: 4, valueSize: 10, keys: 5, readRatio: 0.5, seed: 9}
	a, b := &benchWorker{}, &benchWorker{}
	// a: 4 requests in one round trip of 100µs, one of them a read.
	for i := range 4 {
		a.record(i == 0, nil, 100*time.Microsecond)
	}
	// b: a read of a missing key (a success) in 1ms, 95 writes of 10µs, and
	// two failures.
	b.record(true, fmt.Errorf("get: %w", client.ErrNotFound), time.Millisecond)
	for range 95 {
		b.record(false, nil, 10*time.Microsecond)
	}
	b.record(false, errors.New("boom"), 0)
	b.record(true, errors.New("bang"), 0)
	before := client.Status{CommitMode: "async", Fsyncs: 10, RecordsSynced: 100}
	after := client.Status{CommitMode: "async", Fsyncs: 14, RecordsSynced: 130}
	r := summarize(cfg, client.DurabilitySync, []*benchWorker{a, b}, 2*time.Second, before, after)
	want := passResult{
		Mode: "sync", CommitMode: "async",
		Ops: 100, Reads: 2, Errors: 2, FirstError: "boom",
		OpsPerSec: 50,
		// 100 samples: 95 of 10µs, 4 of 100µs, 1 of 1ms.
		Latency: latencyUS{P50: 10, P90: 10, P99: 100, P999: 1000, Max: 1000, Mean: (95*10 + 4*100 + 1000) / 100.0},
		Fsyncs:  4, RecordsSynced: 30, RecordsPerFsync: 7.5,
		DurationS: 2, Clients: 2, Pipeline: 4, ValueSize: 10, Keys: 5, ReadRatio: 0.5, Seed: 9,
	}
	// Quantiles are within the histogram's 1/128 bucket width, above.
	near := func(got, want float64) bool { return got >= want && got <= want*(1+1.0/128) }
	l, wl := r.Latency, want.Latency
	if !near(l.P50, wl.P50) || !near(l.P90, wl.P90) || !near(l.P99, wl.P99) || !near(l.P999, wl.P999) ||
		l.Max != wl.Max || math.Abs(l.Mean-wl.Mean) > 0.001 {
		t.Errorf("latency %+v, want %+v", l, wl)
	}
	r.Latency = want.Latency
	if r != want {
		t.Errorf("summarize:\n got %+v\nwant %+v", r, want)
	}

	// A restarted server: its counters went back; report no fsyncs.
	r = summarize(cfg, client.DurabilityAsync, []*benchWorker{a}, time.Second, after, before)
	if r.Fsyncs != 0 || r.RecordsSynced != 0 || r.RecordsPerFsync != 0 || r.Mode != "async" {
		t.Errorf("counters that went back: %+v", r)
	}
}

func TestFormatting(t *testing.T) {
	for _, tc := range []struct {
		us   float64
		want string
	}{
		{0.25, "250ns"}, {1, "1.00µs"}, {61.23, "61.2µs"}, {99.96, "100µs"}, {612.4, "612µs"},
		{999.4, "999µs"}, {999.7, "1.00ms"}, {1934, "1.93ms"}, {999_600, "1.00s"}, {250_000, "250ms"}, {2_100_000, "2.10s"},
	} {
		if got := formatMicros(tc.us); got != tc.want {
			t.Errorf("formatMicros(%v) = %q, want %q", tc.us, got, tc.want)
		}
	}
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0"}, {999, "999"}, {1000, "1,000"}, {123456, "123,456"}, {1234567, "1,234,567"}, {-1234, "-1,234"},
	} {
		if got := group(tc.n); got != tc.want {
			t.Errorf("group(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
	cfg := &benchConfig{requests: 1000}
	var p benchPass
	p.cfg = cfg
	p.limit(0, 1000)
	if got, want := progressLine("sync", &p, time.Second, 234, 5, 6789.4), "sync: 234 of 1,000 requests, 6,789/s, 5 errors"; got != want {
		t.Errorf("progress line %q, want %q", got, want)
	}
	p.limit(5*time.Second, 0)
	if got, want := progressLine("async warm-up", &p, 2345*time.Millisecond, 99, 0, 40), "async warm-up: 2.3s of 5s, 99 requests, 40/s, 0 errors"; got != want {
		t.Errorf("progress line %q, want %q", got, want)
	}
}
