package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/kvtest"
)

// TestChangesCommand checks CHANGES's replies exactly: the changes of a
// prefix or a key from a revision, COUNT keeping revisions whole, the
// progress revision moving past revisions that matched nothing, BLOCK
// waking on a write (and not blocking the other connections of the event
// loop meanwhile), and bad arguments.
func TestChangesCommand(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		c := dialRaw(t, ts.respAddr)
		c.do("MSET", "p/1", "a", "p/2", "b", "q", "c") // 1
		c.do("INCRBY", "n", "5")                       // 2
		c.do("DEL", "p/1")                             // 3
		entry := func(rev int64, op, key string, value *string) string {
			v := null
			if value != nil {
				v = bulk(*value)
			}
			return array(integer(rev), bulk(op), bulk(key), v)
		}
		s := func(v string) *string { return &v }
		want := array(integer(4), array(entry(1, "put", "p/1", s("a")), entry(1, "put", "p/2", s("b")), entry(3, "del", "p/1", nil)), integer(3))
		if got := c.do("CHANGES", "FROM", "1", "PREFIX", "p/"); got != want {
			t.Fatalf("CHANGES FROM 1 PREFIX p/:\n%q\nwant\n%q", got, want)
		}
		// COUNT 1 still gives revision 1 whole.
		want = array(integer(2), array(entry(1, "put", "p/1", s("a")), entry(1, "put", "p/2", s("b"))), integer(1))
		if got := c.do("CHANGES", "FROM", "1", "PREFIX", "p/", "COUNT", "1"); got != want {
			t.Fatalf("COUNT 1:\n%q\nwant\n%q", got, want)
		}
		want = array(integer(4), array(entry(2, "put", "n", s("5"))), integer(3))
		if got := c.do("CHANGES", "FROM", "2", "KEY", "n"); got != want {
			t.Fatalf("KEY n:\n%q\nwant\n%q", got, want)
		}
		// Nothing matches: the cursor still moves.
		if got, want := c.do("CHANGES", "FROM", "2", "KEY", "zz"), array(integer(4), array(), integer(3)); got != want {
			t.Fatalf("no match: %q, want %q", got, want)
		}
		// BLOCK: a write on another connection wakes it, and that
		// connection is served meanwhile.
		c.send("CHANGES", "FROM", "4", "KEY", "w", "BLOCK", "10000")
		other := dialRaw(t, ts.respAddr)
		other.do("SET", "x", "1")
		if got := other.do("GET", "x"); got != bulk("1") {
			t.Fatalf("another connection during a BLOCK: %q", got)
		}
		other.do("SET", "w", "now")
		if got, want := c.reply(), array(integer(6), array(entry(5, "put", "w", s("now"))), integer(5)); got != want {
			t.Fatalf("BLOCK: %q, want %q", got, want)
		}
		if got, want := c.do("CHANGES", "FROM", "6", "BLOCK", "50"), array(integer(6), array(), integer(5)); got != want {
			t.Fatalf("BLOCK timing out: %q, want %q", got, want)
		}
		for _, bad := range [][]string{
			{"CHANGES", "FROM", "x"},
			{"CHANGES", "KEY", "a"},
			{"CHANGES", "FROM", "1", "COUNT", "0"},
			{"CHANGES", "FROM", "1", "KEY", "a", "PREFIX", "b"},
			{"CHANGES", "FROM", "1", "BLOCK", "-1"},
			{"CHANGES", "FROM", "1", "DURABILITY", "maybe"},
			{"CHANGES", "FROM", "1", "COUNT"},
		} {
			if got := c.do(bad...); !strings.HasPrefix(got, "-ERR") {
				t.Errorf("%v: %q, want an error", bad, got)
			}
		}
	})
}

// TestChangesCompacted checks the errors of a pull below the history, over
// RESP and HTTP, after a checkpoint pruned it.
func TestChangesCompacted(t *testing.T) {
	ts := startServer(t, serverOpts{engine: engine.Options{HistoryRevisions: 3, HistoryAge: time.Nanosecond,
		CheckpointLogBytes: 1 << 10}})
	c := dialRaw(t, ts.respAddr)
	for i := range 100 {
		c.do("SET", fmt.Sprintf("k%d", i), strings.Repeat("v", 100))
	}
	deadline := time.Now().Add(10 * time.Second)
	for ts.db.OldestRevision() == 1 {
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint pruned the history")
		}
		c.do("SET", "more", "v")
		time.Sleep(10 * time.Millisecond)
	}
	// A checkpoint still running may prune more meanwhile: the error names
	// the oldest revision at the time it answered.
	oldest := ts.db.OldestRevision()
	got := c.do("CHANGES", "FROM", "1")
	after := ts.db.OldestRevision()
	var named uint64
	if _, err := fmt.Sscanf(got, "-COMPACTED oldest=%d requested=1\r\n", &named); err != nil || named < oldest || named > after {
		t.Fatalf("CHANGES below the history: %q, want -COMPACTED naming the oldest revision (%d to %d)", got, oldest, after)
	}
	for _, path := range []string{"/v1/changes?from=1", "/v1/watch?from=1"} {
		resp, err := http.Get("http://" + ts.httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Error struct {
				Code   string `json:"code"`
				Oldest uint64 `json:"oldest_revision"`
			} `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusGone || body.Error.Code != "compacted" || body.Error.Oldest < oldest {
			t.Errorf("GET %s: %d %+v, want 410 compacted with the oldest revision", path, resp.StatusCode, body)
		}
	}
}

// sseEvent is one Server-Sent Event.
type sseEvent struct{ id, event, data string }

// readSSE reads events from r until stop says so.
func readSSE(t *testing.T, r *bufio.Reader, stop func(sseEvent) bool) []sseEvent {
	t.Helper()
	var out []sseEvent
	var e sseEvent
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v (events so far %v)", err, out)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if e.event != "" {
				out = append(out, e)
				if stop(e) {
					return out
				}
			}
			e = sseEvent{}
		case strings.HasPrefix(line, "id: "):
			e.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			e.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			e.data = line[6:]
		}
	}
}

// TestWatchSSE checks the SSE stream: a change event per revision with its
// id, progress events, resumption with Last-Event-ID, and a long-poll and a
// blocking read that only their key wakes.
func TestWatchSSE(t *testing.T) {
	ts := startServer(t, serverOpts{})
	c := dialRaw(t, ts.respAddr)
	c.do("MSET", "p/1", "a", "p/2", "b") // 1
	c.do("SET", "q", "x")                // 2
	get := func(path string, hdr ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+ts.httpAddr+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	resp := get("/v1/watch?prefix=p/&from=1&progress=50ms")
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	r := bufio.NewReader(resp.Body)
	evs := readSSE(t, r, func(e sseEvent) bool { return e.event == "progress" && e.id == "2" })
	if len(evs) != 2 || evs[0].id != "1" || evs[0].event != "change" ||
		evs[0].data != `{"rev":1,"time_ms":`+strings.Split(strings.Split(evs[0].data, `"time_ms":`)[1], ",")[0]+`,"events":[{"op":"put","key":"p/1","value":"a"},{"op":"put","key":"p/2","value":"b"}]}` {
		t.Fatalf("stream start: %+v", evs)
	}
	c.do("DEL", "p/2") // 3
	evs = readSSE(t, r, func(e sseEvent) bool { return e.event == "change" })
	if e := evs[len(evs)-1]; e.id != "3" || !strings.Contains(e.data, `{"op":"del","key":"p/2"}`) {
		t.Fatalf("after a delete: %+v", evs)
	}
	// Resume as EventSource does: Last-Event-ID wins over from.
	r = bufio.NewReader(get("/v1/watch?prefix=p/&from=1", "Last-Event-ID", "2").Body)
	evs = readSSE(t, r, func(e sseEvent) bool { return e.event == "change" })
	if evs[0].id != "3" {
		t.Fatalf("resumed after 2: %+v", evs)
	}

	// Long-poll: waits for a change of its prefix, not of another key.
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := http.Get("http://" + ts.httpAddr + "/v1/changes?prefix=p/&from=4&wait=10s")
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	time.Sleep(50 * time.Millisecond) // not synchronization: the poll may start before or after
	c.do("SET", "other", "1")         // 4
	c.do("SET", "p/9", "z")           // 5
	lp := <-done
	var page struct {
		Events []struct {
			Rev uint64 `json:"rev"`
			Op  string `json:"op"`
			Key string `json:"key"`
		} `json:"events"`
		Next, Progress uint64
	}
	json.NewDecoder(lp.Body).Decode(&page)
	lp.Body.Close()
	if len(page.Events) != 1 || page.Events[0].Rev != 5 || page.Events[0].Key != "p/9" || page.Next != 6 {
		t.Fatalf("long-poll: %+v", page)
	}

	// A blocking read of q from its revision 2: other keys do not wake it.
	start := make(chan struct{})
	got := make(chan string, 1)
	go func() {
		close(start)
		resp, err := http.Get("http://" + ts.httpAddr + "/v1/kv/q?index=2&wait=20s")
		if err != nil {
			t.Error(err)
			got <- ""
			return
		}
		defer resp.Body.Close()
		var b strings.Builder
		bufio.NewReader(resp.Body).WriteTo(&b)
		got <- resp.Header.Get("X-Kvd-Index") + " " + b.String()
	}()
	<-start
	c.do("SET", "p/9", "again") // 6
	select {
	case g := <-got:
		t.Fatalf("a blocking read of q returned on a change of another key: %q", g)
	case <-time.After(300 * time.Millisecond):
	}
	c.do("SET", "q", "new") // 7
	if g := <-got; g != "7 new" {
		t.Fatalf("blocking read: %q, want index 7 and the new value", g)
	}
}

// TestLivePage checks the page at /: HTML that watches with EventSource
// and polls the status, with no outside assets; other paths stay 404.
func TestLivePage(t *testing.T) {
	ts := startServer(t, serverOpts{})
	resp, err := http.Get("http://" + ts.httpAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&b)
	resp.Body.Close()
	page := b.String()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{`new EventSource("/v1/watch?"`, `fetch("/v1/status")`, `fetch("/metrics")`, "kvd_commit_duration_seconds_sum"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page has no %s", want)
		}
	}
	for _, outside := range []string{"http://", "https://", `src="//`, `href="//`} {
		if strings.Contains(page, outside) {
			t.Errorf("the page refers to an outside asset (%s)", outside)
		}
	}
	resp, err = http.Get("http://" + ts.httpAddr + "/nothing")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /nothing: %d, want 404", resp.StatusCode)
	}
}

// TestChangesDurableOnly checks that a pull sees only durable revisions by
// default: with the log's fsync held back, an async write is visible to
// DURABILITY written and not to the default until the fsync completes
// (and a BLOCK then wakes on it).
func TestChangesDurableOnly(t *testing.T) {
	var held atomic.Bool
	release := make(chan struct{})
	ts := startServer(t, serverOpts{engine: engine.Options{CommitMode: engine.CommitAsync}, syncFile: func(f *os.File) error {
		if held.Load() {
			<-release
		}
		return f.Sync()
	}})
	var once sync.Once
	unhold := func() { once.Do(func() { held.Store(false); close(release) }) }
	t.Cleanup(unhold) // before the server's cleanup, which waits for the fsync
	c := dialRaw(t, ts.respAddr)
	c.do("SET", "a", "1") // 1
	if err := ts.db.Sync(); err != nil {
		t.Fatal(err)
	}
	held.Store(true)
	c.do("SET", "b", "2") // 2: written, its fsync held
	put := array(integer(3), array(array(integer(2), bulk("put"), bulk("b"), bulk("2"))), integer(2))
	if got := c.do("CHANGES", "FROM", "2", "DURABILITY", "written"); got != put {
		t.Fatalf("DURABILITY written: %q, want %q", got, put)
	}
	if got, want := c.do("CHANGES", "FROM", "2"), array(integer(2), array(), integer(1)); got != want {
		t.Fatalf("durable, before the fsync: %q, want %q", got, want)
	}
	c.send("CHANGES", "FROM", "2", "BLOCK", "10000")
	unhold()
	if got := c.reply(); got != put {
		t.Fatalf("durable, after the fsync: %q, want %q", got, put)
	}
}

// TestLongPollEndsWhenClientGoes: a long-poll (GET /v1/changes?wait=)
// whose client goes away stops waiting at once, rather than holding its
// goroutine until its wait ends.
func TestLongPollEndsWhenClientGoes(t *testing.T) {
	ts := startServer(t, serverOpts{})
	waiting := func() bool {
		buf := make([]byte, 1<<20)
		return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "server.(*Server).pullChanges")
	}
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+ts.httpAddr+"/v1/changes?prefix=none&wait=60s", nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	kvtest.Eventually(t, 5*time.Second, "the long-poll to wait", waiting)
	cancel()
	<-done
	kvtest.Eventually(t, 5*time.Second, "the long-poll to stop waiting once its client went away", func() bool { return !waiting() })
}
