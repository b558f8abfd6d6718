package crash_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/kvtest"
	"github.com/redis/go-redis/v9"
)

// Time limits of process handling (kvd gets kvtest.DefaultStartTimeout to
// start). They are generous: a timeout is a failure, not a way to
// synchronize.
const (
	stopTimeout = 20 * time.Second
	httpTimeout = 20 * time.Second
)

// kvdConfig is the command line of one kvd start.
type kvdConfig struct {
	dataDir            string
	mode               string        // "sync" or "async"
	flushInterval      time.Duration // 0: kvd's default
	checkpointInterval time.Duration // 0: kvd's default
	walRetain          uint64
	segmentSize        int // bytes; 0: kvd's default
	checkpointBytes    int // bytes; 0: kvd's default
}

// options returns how kvtest runs kvd: on dataDir and free 127.0.0.1 ports,
// with the flags of c, and the suite's environment without the KVD_
// variables that would set kvd's flags.
func (c kvdConfig) options() kvtest.Options {
	return kvtest.Options{Bin: kvdBin, DataDir: c.dataDir, Args: c.args(), Env: kvdEnv()}
}

// args returns the flags of c besides the data dir and the addresses.
func (c kvdConfig) args() []string {
	a := []string{
		"--log-format", "json",
		"--commit-mode", c.mode,
	}
	if c.flushInterval > 0 {
		a = append(a, "--flush-interval", c.flushInterval.String())
	}
	if c.checkpointInterval > 0 {
		a = append(a, "--checkpoint-interval", c.checkpointInterval.String())
	}
	if c.walRetain > 0 {
		a = append(a, "--wal-retain", strconv.FormatUint(c.walRetain, 10))
	}
	if c.segmentSize > 0 {
		a = append(a, "--segment-size", strconv.Itoa(c.segmentSize))
	}
	if c.checkpointBytes > 0 {
		a = append(a, "--checkpoint-bytes", strconv.Itoa(c.checkpointBytes))
	}
	return a
}

// kvd is a kvd process of the suite, with an HTTP client for it.
type kvd struct {
	*kvtest.Proc
	t   testing.TB
	cfg kvdConfig
	hc  *http.Client
}

// launch starts kvd and waits until it listens or exits. Exactly one of the
// results is not nil.
func launch(t testing.TB, cfg kvdConfig) (*kvd, *kvtest.ExitError) {
	t.Helper()
	p, err := kvtest.Start(t, cfg.options())
	var exit *kvtest.ExitError
	if errors.As(err, &exit) {
		return nil, exit
	} else if err != nil {
		t.Fatalf("start kvd: %v", err)
	}
	k := &kvd{
		Proc: p,
		t:    t,
		cfg:  cfg,
		hc:   &http.Client{Timeout: httpTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: 4}},
	}
	t.Cleanup(k.kill)
	return k, nil
}

// kvdEnv is the environment of kvd: the suite's, without the KVD_*
// variables that would set kvd's flags.
func kvdEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KVD_") {
			env = append(env, kv)
		}
	}
	return env
}

// startAndKill starts kvd and kills it after d, whether or not it got
// ready: a crash during recovery. It returns what kvd logged.
func startAndKill(t testing.TB, cfg kvdConfig, d time.Duration) string {
	t.Helper()
	p := kvtest.Spawn(t, cfg.options())
	time.Sleep(d)
	p.Kill()
	return p.Log()
}

// cutMsg is the message of the Warn line kvd's log writes for each cut
// it makes at startup to recover the log (wal.Open; DESIGN.md §1).
const cutMsg = "wal: cut the log to recover from a crash or damage"

// logCut is one recovery cut that kvd logged.
type logCut struct {
	Level    string `json:"level"`
	Segment  string `json:"segment"`
	Offset   int64  `json:"offset"`
	Bytes    int64  `json:"bytes"`
	Records  int    `json:"records"`
	FirstRev uint64 `json:"first_rev"`
	LastRev  uint64 `json:"last_rev"`
	Reason   string `json:"reason"`
}

// kind names the reason of a cut in a word: "torn" (a last record whose
// write did not complete), "hole" (a bad record with valid records after
// it that no fsync covered), "checkpointed" (damage below the state
// file's revision) or "other".
func (c logCut) kind() string {
	switch {
	case strings.HasPrefix(c.Reason, "torn write"):
		return "torn"
	case strings.HasPrefix(c.Reason, "a hole at revision"):
		return "hole"
	case strings.Contains(c.Reason, "below the checkpointed revision"):
		return "checkpointed"
	}
	return "other"
}

// cuts returns the recovery cuts in a JSON log of kvd.
func cuts(log string) []logCut {
	var cs []logCut
	for line := range strings.SplitSeq(log, "\n") {
		if !strings.Contains(line, cutMsg) {
			continue
		}
		var c struct {
			Msg string `json:"msg"`
			logCut
		}
		if json.Unmarshal([]byte(line), &c) == nil && c.Msg == cutMsg {
			cs = append(cs, c.logCut)
		}
	}
	return cs
}

// startKVD starts kvd and fails the test if it does not get ready.
func startKVD(t testing.TB, cfg kvdConfig) *kvd {
	t.Helper()
	k, exit := launch(t, cfg)
	if exit != nil {
		t.Fatalf("kvd exited before listening (%v); stderr:\n%s", exit.Err, tail(exit.Log, 4000))
	}
	return k
}

// kill sends SIGKILL and waits until the process is gone. It is idempotent.
func (k *kvd) kill() {
	k.Kill()
	k.hc.CloseIdleConnections()
}

// stop sends SIGTERM and waits for the exit. It returns the exit error, or
// an error wrapping kvtest.ErrNotStopped if kvd did not stop within
// stopTimeout (it is then killed).
func (k *kvd) stop() error {
	err := k.Stop(syscall.SIGTERM, stopTimeout)
	k.hc.CloseIdleConnections()
	return err
}

// redis returns a RESP client of one connection that never retries: a
// retried write would be a second write.
func (k *kvd) redis() *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:            k.RESPAddr,
		Protocol:        2,
		MaxRetries:      -1,
		PoolSize:        1,
		DisableIdentity: true,
		DialTimeout:     5 * time.Second,
		DialerRetries:   1, // a dead server is news, not something to wait out
		ReadTimeout:     httpTimeout,
		WriteTimeout:    httpTimeout,
	})
}

func (k *kvd) url(path string) string { return "http://" + k.HTTPAddr + path }

// kvdStatus is the part of GET /v1/status the suite reads.
type kvdStatus struct {
	CommitMode    string `json:"commit_mode"`
	FlushInterval string `json:"flush_interval"`
	Revisions     struct {
		Written      uint64 `json:"written"`
		Durable      uint64 `json:"durable"`
		Checkpointed uint64 `json:"checkpointed"`
	} `json:"revisions"`
	Fsync struct {
		Count      uint64   `json:"count"`
		MaxSeconds *float64 `json:"max_seconds"`
	} `json:"fsync"`
	LogError string `json:"log_error"`
}

func getStatus(ctx context.Context, hc *http.Client, base string) (kvdStatus, error) {
	var st kvdStatus
	err := kvtest.GetJSON(ctx, hc, base+"/v1/status", &st)
	return st, err
}

func (k *kvd) status() kvdStatus {
	k.t.Helper()
	st, err := getStatus(context.Background(), k.hc, "http://"+k.HTTPAddr)
	if err != nil {
		k.t.Fatalf("kvd status: %v", err)
	}
	return st
}

// info returns the fields of INFO section.
func (k *kvd) info(section string) map[string]string {
	k.t.Helper()
	rdb := k.redis()
	defer rdb.Close()
	s, err := rdb.Info(context.Background(), section).Result()
	if err != nil {
		k.t.Fatalf("INFO %s: %v", section, err)
	}
	fields := map[string]string{}
	for line := range strings.SplitSeq(s, "\r\n") {
		if key, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(line, "#") {
			fields[key] = v
		}
	}
	return fields
}

// scanAll reads the whole keyspace through GET /v1/kv.
func (k *kvd) scanAll() map[string]string {
	k.t.Helper()
	got := map[string]string{}
	after := ""
	for {
		q := url.Values{"limit": {"10000"}, "values": {"text"}}
		if after != "" {
			q.Set("after", after)
		}
		resp, err := k.hc.Get(k.url("/v1/kv?" + q.Encode()))
		if err != nil {
			k.t.Fatalf("list keys: %v", err)
		}
		var page struct {
			Items []struct {
				Key       string `json:"key"`
				KeyBase64 []byte `json:"key_base64"`
				Value     string `json:"value"`
			} `json:"items"`
			More bool `json:"more"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			k.t.Fatalf("list keys: %s: %v", resp.Status, err)
		}
		for _, it := range page.Items {
			key := it.Key
			if it.KeyBase64 != nil {
				key = string(it.KeyBase64)
			}
			got[key] = it.Value
			after = key
		}
		if !page.More {
			return got
		}
	}
}

// fsyncBound returns an upper bound of the slowest log fsync so far: the
// server's own figure when /v1/status reports it, else the upper edge of
// the highest non-empty bucket of kvd_wal_fsync_duration_seconds.
func fsyncBound(ctx context.Context, hc *http.Client, base string) (time.Duration, error) {
	st, err := getStatus(ctx, hc, base)
	if err != nil {
		return 0, err
	}
	if st.Fsync.MaxSeconds != nil {
		return time.Duration(*st.Fsync.MaxSeconds * float64(time.Second)), nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return maxFromHistogram(resp.Body, "kvd_wal_fsync_duration_seconds")
}

// maxFromHistogram reads a Prometheus text exposition and returns the
// smallest bucket edge that holds every observation of histogram name.
func maxFromHistogram(r io.Reader, name string) (time.Duration, error) {
	type bucket struct {
		le    float64
		count float64
	}
	var buckets []bucket
	total := -1.0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, name+"_bucket{le=\""):
			rest := strings.TrimPrefix(line, name+"_bucket{le=\"")
			le, val, ok := strings.Cut(rest, "\"} ")
			if !ok {
				continue
			}
			edge, err1 := strconv.ParseFloat(le, 64)
			n, err2 := strconv.ParseFloat(strings.TrimSpace(val), 64)
			if err1 == nil && err2 == nil {
				buckets = append(buckets, bucket{edge, n})
			}
		case strings.HasPrefix(line, name+"_count "):
			n, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, name+"_count ")), 64)
			if err == nil {
				total = n
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	if total < 0 {
		return 0, fmt.Errorf("no histogram %s in /metrics", name)
	}
	if total == 0 {
		return 0, nil
	}
	for _, b := range buckets { // cumulative, in increasing order of le
		if b.count >= total {
			if math.IsInf(b.le, 1) {
				return time.Hour, nil // beyond the last bucket: unbounded
			}
			return time.Duration(b.le * float64(time.Second)), nil
		}
	}
	return time.Hour, nil
}

// quietLogger drops go-redis's own log lines (failed dials after a kill
// are expected).
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// excerpt returns the first and last n/2 bytes of s: the start of a crash
// report and the end of a log.
func excerpt(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n/2] + "\n…\n" + s[len(s)-n/2:]
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// scratchDir returns a temporary directory on a memory file system when
// there is one (/dev/shm), else t.TempDir(): for files whose fsyncs should
// cost nothing (the corruption tests start kvd hundreds of times; powerfs
// passes fsyncs on to its backing directory).
func scratchDir(t testing.TB) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "kvd-crash-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

// syncPath fsyncs a file or directory.
func syncPath(t testing.TB, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync %s: %v", path, err)
	}
}
