package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/server"
)

type httpResp struct {
	status int
	header http.Header
	body   string
}

func doHTTP(t *testing.T, method, u string, body io.Reader, header map[string]string) httpResp {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return httpResp{res.StatusCode, res.Header, string(b)}
}

func errorCode(t *testing.T, body string) string {
	t.Helper()
	var e struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Message == "" {
		t.Fatalf("error body %q is not {\"error\":{\"code\",\"message\"}}: %v", body, err)
	}
	return e.Error.Code
}

func TestHTTPAPI(t *testing.T) {
	ts := startServer(t, serverOpts{
		cfg:    server.Config{MaxKeySize: 100, MaxValueSize: 1000},
		engine: engine.Options{CommitMode: engine.CommitAsync, FlushInterval: 1 << 62},
	})
	base := "http://" + ts.httpAddr
	kv := base + "/v1/kv/"

	tests := []struct {
		name       string
		method     string
		url        string
		body       string
		header     map[string]string
		wantStatus int
		wantBody   string // exact, or the error code for JSON errors
		wantHeader map[string]string
	}{
		{name: "put async", method: "PUT", url: kv + "a", body: "hello", wantStatus: 200,
			wantHeader: map[string]string{"X-Kvd-Durable": "false", "X-Kvd-Revision": "1"}},
		{name: "put sync", method: "PUT", url: kv + "b?durability=sync", body: "\x00bin", wantStatus: 200,
			wantHeader: map[string]string{"X-Kvd-Durable": "true", "X-Kvd-Revision": "2"}},
		{name: "put slash key", method: "PUT", url: kv + "dir/sub%2Fkey", body: "s", wantStatus: 200},
		{name: "get", method: "GET", url: kv + "a", wantStatus: 200, wantBody: "hello",
			wantHeader: map[string]string{"Content-Type": "application/octet-stream"}},
		{name: "get binary", method: "GET", url: kv + "b", wantStatus: 200, wantBody: "\x00bin"},
		{name: "get slash key", method: "GET", url: kv + "dir/sub/key", wantStatus: 200, wantBody: "s"},
		{name: "get missing", method: "GET", url: kv + "nope", wantStatus: 404, wantBody: "not_found"},
		{name: "bad durability", method: "PUT", url: kv + "c?durability=later", body: "x", wantStatus: 400, wantBody: "bad_request"},
		{name: "empty key", method: "PUT", url: kv, body: "x", wantStatus: 400, wantBody: "empty_key"},
		{name: "key too large", method: "PUT", url: kv + strings.Repeat("k", 101), body: "x", wantStatus: 414, wantBody: "key_too_large"},
		{name: "value too large", method: "PUT", url: kv + "big", body: strings.Repeat("v", 1001), wantStatus: 413, wantBody: "value_too_large"},
		{name: "value at the limit", method: "PUT", url: kv + "max", body: strings.Repeat("v", 1000), wantStatus: 200},
		{name: "delete", method: "DELETE", url: kv + "a?durability=sync", wantStatus: 200, wantBody: `{"revision":5,"durable":true,"deleted":true}` + "\n",
			wantHeader: map[string]string{"X-Kvd-Durable": "true", "X-Kvd-Revision": "5"}},
		{name: "delete missing", method: "DELETE", url: kv + "a", wantStatus: 200, wantBody: `{"revision":5,"durable":true,"deleted":false}` + "\n"},
		{name: "get deleted", method: "GET", url: kv + "a", wantStatus: 404, wantBody: "not_found"},
		{name: "method not allowed", method: "POST", url: kv + "a", wantStatus: 405, wantBody: "method_not_allowed",
			wantHeader: map[string]string{"Allow": "GET, HEAD, PUT, DELETE"}},
		{name: "sync", method: "POST", url: base + "/v1/sync", wantStatus: 200, wantBody: `{"durable_revision":5}` + "\n",
			wantHeader: map[string]string{"X-Kvd-Durable": "true"}},
		{name: "sync wrong method", method: "GET", url: base + "/v1/sync", wantStatus: 405, wantBody: "method_not_allowed"},
		{name: "unknown path", method: "GET", url: base + "/v2/nothing", wantStatus: 404, wantBody: "not_found"},
		{name: "healthz", method: "GET", url: base + "/healthz", wantStatus: 200, wantBody: "ok\n"},
		{name: "pprof off", method: "GET", url: base + "/debug/pprof/", wantStatus: 404, wantBody: "not_found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.body != "" {
				body = strings.NewReader(tc.body)
			}
			r := doHTTP(t, tc.method, tc.url, body, tc.header)
			if r.status != tc.wantStatus {
				t.Fatalf("status %d, want %d (body %q)", r.status, tc.wantStatus, r.body)
			}
			switch {
			case r.status >= 400:
				if code := errorCode(t, r.body); code != tc.wantBody {
					t.Errorf("error code %q, want %q", code, tc.wantBody)
				}
			case tc.wantBody != "" && r.body != tc.wantBody:
				t.Errorf("body %q, want %q", r.body, tc.wantBody)
			}
			for k, v := range tc.wantHeader {
				if got := r.header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

// TestHTTPBodyLimit checks that an oversized body is refused from its
// declared length without being read, and that a body without a length
// (chunked) is cut off at the limit.
func TestHTTPBodyLimit(t *testing.T) {
	ts := startServer(t, serverOpts{cfg: server.Config{MaxValueSize: 1000}})
	u := "http://" + ts.httpAddr + "/v1/kv/big"

	// Declares 1 GB but sends only 10 bytes: the server must answer from
	// the header alone.
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte("0123456789"))
	req, err := http.NewRequestWithContext(t.Context(), "PUT", u, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = 1 << 30
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("PUT with 1 GB Content-Length: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 413 || errorCode(t, string(b)) != "value_too_large" {
		t.Errorf("declared 1 GB: %d %s", res.StatusCode, b)
	}

	// Chunked, no length: read up to the limit only.
	r := doHTTP(t, "PUT", u, io.MultiReader(strings.NewReader(strings.Repeat("x", 2000))), nil)
	if r.status != 413 || errorCode(t, r.body) != "value_too_large" {
		t.Errorf("chunked 2000 bytes: %d %s", r.status, r.body)
	}
	if _, err := ts.db.Get([]byte("big")); err == nil {
		t.Errorf("refused value was stored")
	}
}

func TestHTTPList(t *testing.T) {
	ts := startServer(t, serverOpts{})
	base := "http://" + ts.httpAddr
	for _, k := range []string{"a1", "a2", "a3", "b1", "\xff\xfe"} {
		if r := doHTTP(t, "PUT", base+"/v1/kv/"+url.PathEscape(k), strings.NewReader("v-"+k), nil); r.status != 200 {
			t.Fatalf("PUT %q: %d %s", k, r.status, r.body)
		}
	}
	type item struct {
		Key       string `json:"key"`
		KeyBase64 []byte `json:"key_base64"`
		Value     any    `json:"value"`
		Size      int    `json:"size"`
	}
	list := func(query string) ([]item, bool) {
		t.Helper()
		r := doHTTP(t, "GET", base+"/v1/kv?"+query, nil, nil)
		if r.status != 200 {
			t.Fatalf("list %q: %d %s", query, r.status, r.body)
		}
		var res struct {
			Items []item `json:"items"`
			More  bool   `json:"more"`
		}
		if err := json.Unmarshal([]byte(r.body), &res); err != nil {
			t.Fatalf("list %q: %v in %s", query, err, r.body)
		}
		return res.Items, res.More
	}
	keys := func(items []item) string {
		var ks []string
		for _, it := range items {
			if it.KeyBase64 != nil {
				ks = append(ks, "b64:"+string(it.KeyBase64))
			} else {
				ks = append(ks, it.Key)
			}
		}
		return strings.Join(ks, ",")
	}
	tests := []struct {
		query    string
		wantKeys string
		wantMore bool
	}{
		{"", "a1,a2,a3,b1,b64:\xff\xfe", false},
		{"prefix=a", "a1,a2,a3", false},
		{"prefix=a&limit=2", "a1,a2", true},
		{"prefix=a&limit=2&after=a2", "a3", false},
		{"after=a3&limit=1", "b1", true},
		{"prefix=zzz", "", false},
	}
	for _, tc := range tests {
		items, more := list(tc.query)
		if got := keys(items); got != tc.wantKeys || more != tc.wantMore {
			t.Errorf("list %q = %q more=%v, want %q more=%v", tc.query, got, more, tc.wantKeys, tc.wantMore)
		}
	}
	items, _ := list("prefix=b&values=text")
	if len(items) != 1 || items[0].Value != "v-b1" || items[0].Size != 4 {
		t.Errorf("values=text: %+v", items)
	}
	items, _ = list("prefix=b")
	if len(items) != 1 || items[0].Value != "di1iMQ==" { // base64 of "v-b1"
		t.Errorf("values base64: %+v", items)
	}
	for _, q := range []string{"limit=0", "limit=x", "limit=10001", "values=hex"} {
		if r := doHTTP(t, "GET", base+"/v1/kv?"+q, nil, nil); r.status != 400 || errorCode(t, r.body) != "bad_request" {
			t.Errorf("list %q: %d %s", q, r.status, r.body)
		}
	}
}

func TestHTTPStatusAndMetrics(t *testing.T) {
	metrics := server.NewMetrics()
	ts := startServer(t, serverOpts{
		cfg: server.Config{Metrics: metrics, Pprof: true, Version: "1.2.3"},
	})
	base := "http://" + ts.httpAddr
	for _, k := range []string{"x", "y"} {
		doHTTP(t, "PUT", base+"/v1/kv/"+k, strings.NewReader("1"), nil)
	}
	r := doHTTP(t, "GET", base+"/v1/status", nil, nil)
	var st server.Status
	if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		t.Fatalf("status: %v in %s", err, r.body)
	}
	if st.Version != "1.2.3" || st.CommitMode != "sync" || st.Revisions.Written != 2 || st.Revisions.Durable != 2 ||
		st.Fsync.Count == 0 || st.Fsync.RecordsPerFsync <= 0 || st.UptimeSeconds <= 0 || st.FlushInterval != "10ms" {
		t.Errorf("status = %+v", st)
	}
	// Sync writes: each record stayed unsynced until its fsync, none is now.
	if u := st.Unsynced; u.OldestAgeSeconds != 0 || u.MaxAgeLastMinuteSeconds <= 0 || u.MaxAgeSeconds < u.MaxAgeLastMinuteSeconds {
		t.Errorf("status unsynced = %+v", u)
	}
	var raw struct {
		Unsynced map[string]float64 `json:"unsynced"`
	}
	if err := json.Unmarshal([]byte(r.body), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"oldest_age_seconds", "max_age_last_minute_seconds", "max_age_seconds"} {
		if _, ok := raw.Unsynced[k]; !ok {
			t.Errorf("status lacks unsynced.%s: %s", k, r.body)
		}
	}

	m := doHTTP(t, "GET", base+"/metrics", nil, nil).body
	for _, want := range []string{
		`kvd_requests_total{command="put",protocol="http"} 2`,
		`kvd_commit_duration_seconds_count{mode="sync"} 2`,
		`kvd_wal_fsync_duration_seconds_count`,
		`kvd_wal_records_per_fsync_bucket`,
		`kvd_written_revision 2`,
		`kvd_durable_revision 2`,
		"kvd_wal_unsynced_oldest_age_seconds 0\n",
		`kvd_wal_unsynced_max_age_last_minute_seconds `,
		`go_goroutines`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// Two sync writes, two fsyncs at least (the directory's too, perhaps).
	for _, name := range []string{"kvd_wal_fsync_duration_seconds_count", "kvd_wal_records_per_fsync_count"} {
		if n := metricValue(t, m, name); n < 2 {
			t.Errorf("%s = %v after two sync writes, want at least 2", name, n)
		}
	}
	if n := metricValue(t, m, "kvd_wal_records_per_fsync_sum"); n != float64(st.Fsync.Records) || n < 2 {
		t.Errorf("kvd_wal_records_per_fsync_sum = %v, status says %d records synced", n, st.Fsync.Records)
	}
	if r := doHTTP(t, "GET", base+"/debug/pprof/", nil, nil); r.status != 200 || !strings.Contains(r.body, "goroutine") {
		t.Errorf("pprof: %d", r.status)
	}
}

// metricValue returns the value of the unlabelled sample name in the
// Prometheus text exposition m.
func metricValue(t *testing.T, m, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(m, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
