package server_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/server"
	"github.com/kvdstore/kvd/watch"
)

// respValue is a decoded RESP value: string (simple or bulk), int64, nil,
// respErr, or []any (an array, or a push frame if push is set on the
// frame read).
type respErr string

// readValue decodes one RESP2/RESP3 value; push reports a '>' frame.
func readValue(r *bufio.Reader) (v any, push bool, err error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, false, err
	}
	if len(line) < 3 || !strings.HasSuffix(line, "\r\n") {
		return nil, false, fmt.Errorf("bad line %q", line)
	}
	body := line[1 : len(line)-2]
	switch line[0] {
	case '+':
		return body, false, nil
	case '-':
		return respErr(body), false, nil
	case ':':
		n, err := strconv.ParseInt(body, 10, 64)
		return n, false, err
	case '_':
		return nil, false, nil
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, false, err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, false, err
		}
		return string(buf[:n]), false, nil
	case '*', '>':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, false, err
		}
		out := make([]any, n)
		for i := range out {
			if out[i], _, err = readValue(r); err != nil {
				return nil, false, err
			}
		}
		return out, line[0] == '>', nil
	}
	return nil, false, fmt.Errorf("unknown type in %q", line)
}

// frame reads the next value from c.
func (c *rawConn) frame() (any, bool) {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	v, push, err := readValue(c.r)
	if err != nil {
		c.t.Fatalf("reading a frame: %v", err)
	}
	return v, push
}

// isEvent reports whether v is a frame of a watch (kvchange, kvprogress,
// kvcompacted, kverror).
func isEvent(v any) bool {
	a, ok := v.([]any)
	if !ok || len(a) == 0 {
		return false
	}
	switch a[0] {
	case "kvchange", "kvprogress", "kvcompacted", "kverror":
		return true
	}
	return false
}

// replyAfterEvents reads frames until one that is not a watch's event (the
// reply of a command) and returns it and the events before it; wantPush
// says whether events must be push frames (RESP3) or arrays (RESP2).
func (c *rawConn) replyAfterEvents(wantPush bool) (any, []any) {
	c.t.Helper()
	var evs []any
	for {
		v, push := c.frame()
		if !isEvent(v) {
			if push {
				c.t.Fatalf("a reply as a push frame: %v", v)
			}
			return v, evs
		}
		if push != wantPush {
			c.t.Fatalf("event %v: push frame %v, want %v", v, push, wantPush)
		}
		evs = append(evs, v)
	}
}

// untilEvent reads events until stop says so; it fails on a frame that is
// not an event.
func (c *rawConn) untilEvent(wantPush bool, stop func(ev []any) bool) []any {
	c.t.Helper()
	var evs []any
	for {
		v, push := c.frame()
		if !isEvent(v) || push != wantPush {
			c.t.Fatalf("frame %v (push %v), want an event (push %v); events so far %v", v, push, wantPush, evs)
		}
		evs = append(evs, v)
		if stop(v.([]any)) {
			return evs
		}
	}
}

func change(id, rev int64, ops ...[]any) []any {
	list := make([]any, len(ops))
	for i, op := range ops {
		list[i] = op
	}
	return []any{"kvchange", id, rev, list}
}

func put(k, v string) []any { return []any{"put", k, v} }
func del(k string) []any    { return []any{"del", k, nil} }

func same(a, b any) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// TestKVWatchRESP2 checks KVWATCH on RESP2 exactly: the confirmation, a
// revision's matching changes as one kvchange, progress marks past
// revisions that matched nothing, subscribed mode (other commands refused
// as Redis refuses them, PING answered as in pub/sub), a second watch,
// KVUNWATCH of one and of all (after which no frame of the ended watch
// comes and other commands run again), RESET, and the hub's count of
// watchers going back to 0.
func TestKVWatchRESP2(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		w := dialRaw(t, ts.respAddr)
		w.do("MSET", "p/1", "a", "p/2", "b", "q", "c") // 1
		w.do("SET", "other", "x")                      // 2

		c := dialRaw(t, ts.respAddr)
		c.send("KVWATCH", "PREFIX", "p/", "FROM", "1", "PROGRESS", "50")
		if v, _ := c.frame(); !same(v, []any{"kvwatch", int64(1), int64(1), int64(1)}) {
			t.Fatalf("KVWATCH reply %v", v)
		}
		evs := c.untilEvent(false, func(ev []any) bool { return ev[0] == "kvprogress" })
		want := []any{change(1, 1, put("p/1", "a"), put("p/2", "b")), []any{"kvprogress", int64(1), int64(2)}}
		if !same(evs, want) {
			t.Fatalf("events %v, want %v", evs, want)
		}

		// Subscribed mode.
		for _, cmd := range [][]string{{"GET", "p/1"}, {"SET", "k", "v"}, {"MULTI"}, {"HELLO", "3"}} {
			c.send(cmd...)
			got, _ := c.replyAfterEvents(false)
			wantErr := respErr("ERR Can't execute '" + strings.ToLower(cmd[0]) + "': only KVWATCH / KVUNWATCH / PING / QUIT / RESET are allowed in this context")
			if got != wantErr {
				t.Errorf("%v in subscribed mode: %v, want %v", cmd, got, wantErr)
			}
		}
		c.send("PING")
		if got, _ := c.replyAfterEvents(false); !same(got, []any{"pong", ""}) {
			t.Errorf("PING in subscribed mode: %v", got)
		}
		c.send("PING", "hi")
		if got, _ := c.replyAfterEvents(false); !same(got, []any{"pong", "hi"}) {
			t.Errorf("PING hi in subscribed mode: %v", got)
		}

		w.do("DEL", "p/1") // 3
		evs = c.untilEvent(false, func(ev []any) bool { return ev[0] == "kvchange" })
		if got := evs[len(evs)-1]; !same(got, change(1, 3, del("p/1"))) {
			t.Fatalf("after DEL: %v", got)
		}

		c.send("KVWATCH", "KEY", "q")
		got, _ := c.replyAfterEvents(false)
		if !same(got, []any{"kvwatch", int64(2), int64(4), int64(2)}) {
			t.Fatalf("second KVWATCH: %v", got)
		}
		c.send("KVUNWATCH", "1", "7")
		if got, _ := c.replyAfterEvents(false); !same(got, []any{"kvunwatch", []any{int64(1)}, int64(1)}) {
			t.Fatalf("KVUNWATCH 1 7: %v", got)
		}
		w.do("SET", "p/9", "z") // 4: watch 1 ended
		w.do("SET", "q", "new") // 5
		evs = c.untilEvent(false, func(ev []any) bool { return ev[0] == "kvchange" })
		for _, ev := range evs {
			if ev.([]any)[1] == int64(1) {
				t.Fatalf("an event of the ended watch 1: %v", ev)
			}
		}
		if got := evs[len(evs)-1]; !same(got, change(2, 5, put("q", "new"))) {
			t.Fatalf("watch 2: %v", got)
		}
		c.send("KVUNWATCH")
		if got, _ := c.replyAfterEvents(false); !same(got, []any{"kvunwatch", []any{int64(2)}, int64(0)}) {
			t.Fatalf("KVUNWATCH: %v", got)
		}
		if got := c.do("GET", "q"); got != bulk("new") {
			t.Fatalf("GET after the last watch ended: %q", got)
		}

		// RESET ends watches and subscribed mode.
		c.send("KVWATCH")
		if got, _ := c.frame(); !same(got, []any{"kvwatch", int64(3), int64(6), int64(1)}) {
			t.Fatalf("KVWATCH: %v", got)
		}
		c.send("RESET")
		if got, _ := c.replyAfterEvents(false); got != "RESET" {
			t.Fatalf("RESET: %v", got)
		}
		if got := c.do("GET", "q"); got != bulk("new") {
			t.Fatalf("GET after RESET: %q", got)
		}
		waitWatchers(t, ts, 0)
	})
}

// TestKVWatchRESP3 checks that on RESP3 events are push frames and the
// connection runs any command between them, its replies ordinary ones.
func TestKVWatchRESP3(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		w := dialRaw(t, ts.respAddr)
		c := dialRaw(t, ts.respAddr)
		c.do("HELLO", "3")
		c.send("KVWATCH", "KEY", "k")
		if v, push := c.frame(); push || !same(v, []any{"kvwatch", int64(1), int64(1), int64(1)}) {
			t.Fatalf("KVWATCH reply %v (push %v)", v, push)
		}
		w.do("SET", "k", "1") // 1
		evs := c.untilEvent(true, func([]any) bool { return true })
		if !same(evs[0], change(1, 1, put("k", "1"))) {
			t.Fatalf("event %v", evs[0])
		}
		for i := range 5 {
			w.do("SET", "k", strconv.Itoa(i+2))
			c.send("SET", "mine", strconv.Itoa(i))
			if got, _ := c.replyAfterEvents(true); got != "OK" {
				t.Fatalf("SET between events: %v", got)
			}
			c.send("GET", "mine")
			if got, _ := c.replyAfterEvents(true); got != strconv.Itoa(i) {
				t.Fatalf("GET between events: %v", got)
			}
		}
		w.do("DEL", "k")
		evs = c.untilEvent(true, func(ev []any) bool { return same(ev, change(1, ev[2].(int64), del("k"))) })
		c.send("KVUNWATCH", "1")
		if got, _ := c.replyAfterEvents(true); !same(got, []any{"kvunwatch", []any{int64(1)}, int64(0)}) {
			t.Fatalf("KVUNWATCH: %v", got)
		}
	})
}

// TestKVWatchBadArgs checks the errors of malformed KVWATCH and KVUNWATCH,
// KVWATCH in a transaction, and --watch-max.
func TestKVWatchBadArgs(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model, cfg: server.Config{Watch: watch.Options{MaxWatchers: 1}}})
		c := dialRaw(t, ts.respAddr)
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"KVWATCH", "KEY"}, "-ERR KVWATCH option 'KEY' needs a value"},
			{[]string{"KVWATCH", "KEY", ""}, "-ERR empty key"},
			{[]string{"KVWATCH", "KEY", "a", "PREFIX", "b"}, "-ERR give one KEY or PREFIX"},
			{[]string{"KVWATCH", "FROM", "-1"}, "-ERR FROM must be a revision"},
			{[]string{"KVWATCH", "FROM", "x"}, "-ERR FROM must be a revision"},
			{[]string{"KVWATCH", "DURABILITY", "maybe"}, "-ERR DURABILITY must be durable or written"},
			{[]string{"KVWATCH", "PROGRESS", "10"}, "-ERR PROGRESS must be milliseconds, 50 to 86400000"},
			{[]string{"KVWATCH", "PROGRESS", "x"}, "-ERR PROGRESS must be milliseconds"},
			{[]string{"KVWATCH", "COUNT", "1"}, "-ERR unknown KVWATCH option 'COUNT'"},
			{[]string{"KVUNWATCH", "x"}, "-ERR KVUNWATCH takes watch ids"},
			{[]string{"KVUNWATCH", "0"}, "-ERR KVUNWATCH takes watch ids"},
		} {
			if got := c.do(tc.args...); !strings.HasPrefix(got, tc.want) {
				t.Errorf("%v: %q, want %q...", tc.args, got, tc.want)
			}
		}
		c.do("MULTI")
		if got := c.do("KVWATCH"); !strings.HasPrefix(got, "-ERR KVWATCH is not allowed in a transaction") {
			t.Errorf("KVWATCH in MULTI: %q", got)
		}
		c.do("DISCARD")
		// The connection still works, and is not subscribed.
		if got := c.do("PING"); got != "+PONG\r\n" {
			t.Fatalf("PING: %q", got)
		}
		c.do("HELLO", "3")
		if got := c.do("KVWATCH"); !strings.HasPrefix(got, "*4\r\n$7\r\nkvwatch\r\n") {
			t.Fatalf("KVWATCH: %q", got)
		}
		if got := c.do("KVWATCH"); got != "-ERR too many watchers (--watch-max)\r\n" {
			t.Fatalf("KVWATCH past --watch-max: %q", got)
		}
	})
}

// waitWatchers polls /metrics until the hub has n watchers open.
func waitWatchers(t *testing.T, ts *testServer, n int) {
	t.Helper()
	re := regexp.MustCompile(`(?m)^kvd_watchers\{state="(live|catchup)"\} (\d+)$`)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + ts.httpAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		total := 0
		for _, m := range re.FindAllStringSubmatch(string(body), -1) {
			k, _ := strconv.Atoi(m[2])
			total += k
		}
		if total == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d watchers open, want %d", total, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// omem returns the omem field of connection id in CLIENT LIST.
func omem(t *testing.T, c *rawConn, id string) int {
	t.Helper()
	list := c.do("CLIENT", "LIST", "ID", id)
	m := regexp.MustCompile(`id=` + id + ` .* sub=(\d+) omem=(\d+) `).FindStringSubmatch(list)
	if m == nil {
		t.Fatalf("CLIENT LIST ID %s: %q", id, list)
	}
	n, _ := strconv.Atoi(m[2])
	return n
}

// metric returns the value of a counter or gauge line of /metrics.
func metric(t *testing.T, ts *testServer, name string) int {
	t.Helper()
	resp, err := http.Get("http://" + ts.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\d+)$`).FindStringSubmatch(string(body))
	if m == nil {
		t.Fatalf("no %s in /metrics", name)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestKVWatchSlowSubscriber checks subscribers that stop reading while
// others write 20 MB of changes: the writes all complete, the output the
// server holds for each stays bounded (CLIENT LIST omem) while the hub drops
// what they cannot take (an overflow), and once the history has moved past
// them, the one that reads again gets what is left of its position, then
// kvcompacted naming the oldest revision, after which the watch is over
// (RESP2 subscribed mode ends) and a KVWATCH from there is refused with
// -COMPACTED. Closing the other, never read, leaves no watcher behind.
func TestKVWatchSlowSubscriber(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model,
			cfg:    server.Config{Watch: watch.Options{Buffer: 64}},
			engine: engine.Options{HistoryRevisions: 3, HistoryAge: time.Nanosecond, CheckpointLogBytes: 1 << 20}})
		subscribe := func() (*rawConn, string) {
			c := dialRaw(t, ts.respAddr)
			id := strings.TrimSuffix(strings.TrimPrefix(c.do("CLIENT", "ID"), ":"), "\r\n")
			c.send("KVWATCH", "FROM", "1")
			if v, _ := c.frame(); !same(v, []any{"kvwatch", int64(1), int64(1), int64(1)}) {
				t.Fatalf("KVWATCH: %v", v)
			}
			return c, id
		}
		sub, subID := subscribe()
		idle, idleID := subscribe()

		w := dialRaw(t, ts.respAddr)
		args := []string{"MSET"}
		for k := range 20 {
			args = append(args, fmt.Sprintf("k%02d", k), strings.Repeat(string(rune('a'+k)), 1000))
		}
		const revisions = 500 // 20 MB of changes
		maxOmem := 0
		for i := range revisions {
			args[2] = fmt.Sprintf("%d-%s", i, args[2][len(strconv.Itoa(i))+1:])
			if got := w.do(args...); got != ok {
				t.Fatalf("MSET %d: %q", i, got)
			}
			if i%50 == 49 {
				maxOmem = max(maxOmem, omem(t, w, subID), omem(t, w, idleID))
			}
		}
		if err := ts.db.Sync(); err != nil {
			t.Fatal(err)
		}
		// Wait for the history to be pruned past the subscribers.
		deadline := time.Now().Add(30 * time.Second)
		for ts.db.OldestRevision() < revisions/2 {
			if time.Now().After(deadline) {
				t.Fatalf("the history was not pruned: oldest revision %d", ts.db.OldestRevision())
			}
			w.do("SET", "more", "v")
			time.Sleep(10 * time.Millisecond)
		}
		held := omem(t, w, subID)
		maxOmem = max(maxOmem, held)
		// The bound is maxPushOut (256 KiB) and one batch of 100
		// changes of 1 KB; 20 MB went by. (What the server holds at the
		// moments sampled depends on the kernel's socket buffers and on
		// when the hub gave up on the subscriber: it may be 0.)
		if maxOmem > 1<<20 {
			t.Fatalf("output held for a subscriber that does not read: %d bytes now, at most %d, want at most 1 MiB", held, maxOmem)
		}
		t.Logf("output held for a subscriber: %d bytes now, at most %d seen", held, maxOmem)
		if n := metric(t, ts, "kvd_watch_overflows_total"); n == 0 {
			t.Fatal("no watcher overflowed its buffer: the hub held what they did not take")
		}

		// Read again: revisions in order, then kvcompacted.
		var last int64
		var end []any
		for end == nil {
			v, _ := sub.frame()
			ev, ok := v.([]any)
			switch {
			case ok && ev[0] == "kvchange" && ev[1] == int64(1):
				rev := ev[2].(int64)
				if rev <= last || len(ev[3].([]any)) != 20 {
					t.Fatalf("revision %d after %d, %d changes", rev, last, len(ev[3].([]any)))
				}
				last = rev
			case ok && ev[0] == "kvprogress":
			case ok && ev[0] == "kvcompacted":
				end = ev
			default:
				t.Fatalf("frame %v", v)
			}
		}
		oldest := ts.db.OldestRevision()
		if end[1] != int64(1) || end[2].(int64) <= last+1 || end[2].(int64) > int64(oldest) || end[3] != last+1 {
			t.Fatalf("%v after revision %d (oldest now %d), want [kvcompacted 1 oldest %d]", end, last, oldest, last+1)
		}
		// The watch is over: RESP2 subscribed mode too.
		if got := sub.do("GET", "k00"); !strings.HasPrefix(got, "$1000\r\n") {
			t.Fatalf("GET after kvcompacted: %q", got)
		}
		want := fmt.Sprintf("-COMPACTED oldest=%d requested=%d\r\n", ts.db.OldestRevision(), last+1)
		if got := sub.do("KVWATCH", "FROM", strconv.FormatInt(last+1, 10)); got != want {
			t.Fatalf("KVWATCH from the compacted revision: %q, want %q", got, want)
		}
		waitWatchers(t, ts, 1)
		idle.nc.Close()
		waitWatchers(t, ts, 0)
	})
}

// TestKVWatchDurableOnly checks that a watch sees only durable revisions by
// default: with the log's fsync held back, an async write is pushed to a
// DURABILITY written watch and not to a default one, which gets it once the
// fsync completes.
func TestKVWatchDurableOnly(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		var held atomic.Bool
		release := make(chan struct{})
		ts := startServer(t, serverOpts{io: model, engine: engine.Options{CommitMode: engine.CommitAsync}, syncFile: func(f *os.File) error {
			if held.Load() {
				<-release
			}
			return f.Sync()
		}})
		var once sync.Once
		unhold := func() { once.Do(func() { held.Store(false); close(release) }) }
		t.Cleanup(unhold) // before the server's cleanup, which waits for the fsync
		w := dialRaw(t, ts.respAddr)
		w.do("SET", "a", "1") // 1
		if err := ts.db.Sync(); err != nil {
			t.Fatal(err)
		}
		watcher := func(args ...string) *rawConn {
			c := dialRaw(t, ts.respAddr)
			c.do("HELLO", "3")
			c.send(append([]string{"KVWATCH", "KEY", "b"}, args...)...)
			if v, _ := c.frame(); !same(v, []any{"kvwatch", int64(1), int64(2), int64(1)}) {
				t.Fatalf("KVWATCH %v: %v", args, v)
			}
			return c
		}
		durable := watcher()
		written := watcher("DURABILITY", "written")
		held.Store(true)
		w.do("SET", "b", "2") // 2: written, its fsync held
		// The store wakes the hub as it applies a write, which can be just
		// before the log counts it as written: then the hub sees revision 2
		// at its next wake-up, which a later write gives.
		w.do("SET", "c", "3") // 3
		if evs := written.untilEvent(true, func([]any) bool { return true }); !same(evs[0], change(1, 2, put("b", "2"))) {
			t.Fatalf("DURABILITY written: %v", evs[0])
		}
		// The durable watch has nothing before the fsync: PING's reply
		// comes first.
		durable.send("PING")
		if got, evs := durable.replyAfterEvents(true); got != "PONG" || len(evs) != 0 {
			t.Fatalf("durable watch before the fsync: %v after %v, want PONG alone", got, evs)
		}
		unhold()
		if evs := durable.untilEvent(true, func([]any) bool { return true }); !same(evs[0], change(1, 2, put("b", "2"))) {
			t.Fatalf("durable, after the fsync: %v", evs[0])
		}
	})
}

// TestKVWatchNotIdle checks that the idle timeout (CONFIG SET timeout)
// spares connections with watches, as Redis spares its subscribers: a
// silent subscriber outlives a plain connection that was silent for less
// time, and ends its watch to become an ordinary connection again.
func TestKVWatchNotIdle(t *testing.T) {
	forEachIO(t, func(t *testing.T, model string) {
		ts := startServer(t, serverOpts{io: model})
		admin := dialRaw(t, ts.respAddr)
		if got := admin.do("CONFIG", "SET", "timeout", "1"); got != ok {
			t.Fatalf("CONFIG SET timeout 1 = %q", got)
		}
		sub := dialRaw(t, ts.respAddr)
		sub.send("KVWATCH", "KEY", "k", "PROGRESS", "86400000")
		if v, _ := sub.frame(); !same(v, []any{"kvwatch", int64(1), int64(1), int64(1)}) {
			t.Fatalf("KVWATCH: %v", v)
		}
		plain := dialRaw(t, ts.respAddr)
		plain.do("PING")
		if rest := plain.expectClosed(); rest != "" {
			t.Fatalf("the idle plain connection sent %q before closing", rest)
		}
		sub.send("PING")
		if got, _ := sub.replyAfterEvents(false); !same(got, []any{"pong", ""}) {
			t.Fatalf("PING on the silent subscriber: %v", got)
		}
	})
}
