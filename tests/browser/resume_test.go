package browser

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/kvtest"
	"github.com/kvdstore/kvd/internal/watchcheck"
)

// feedProxy is the origin of the test page: it serves the page, forwards
// GET /v1/watch to kvd, and cuts the first cuts streams off in the middle
// of an event, once each has passed cutAfter whole change events on. The
// page POSTs what it received to /result.
type feedProxy struct {
	kvd      string // kvd's HTTP address
	page     []byte
	cuts     int
	cutAfter int
	result   chan []byte

	mu      sync.Mutex
	streams []stream // one per /v1/watch request, in order
}

// stream is what the proxy saw of one /v1/watch request.
type stream struct {
	lastEventID string // the request's Last-Event-ID header ("" if none)
	changes     int    // whole change events forwarded
	cut         bool   // cut off in the middle of an event
	wholeID     string // the id of the last whole event forwarded
	cutID       string // the id of the event cut in the middle
}

func (p *feedProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/":
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(p.page)
	case r.Method == http.MethodGet && r.URL.Path == "/v1/watch":
		p.watch(w, r)
	case r.Method == http.MethodPost && r.URL.Path == "/result":
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case p.result <- b:
		default: // a second result is ignored; the first is checked
		}
	default:
		http.NotFound(w, r)
	}
}

// watch forwards one watch stream event by event, flushing each, and
// records what it passed on.
func (p *feedProxy) watch(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	i := len(p.streams)
	p.streams = append(p.streams, stream{lastEventID: r.Header.Get("Last-Event-ID")})
	p.mu.Unlock()
	update := func(f func(s *stream)) {
		p.mu.Lock()
		defer p.mu.Unlock()
		f(&p.streams[i])
	}

	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://"+p.kvd+"/v1/watch?"+r.URL.RawQuery, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		req.Header.Set("Last-Event-ID", id)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for _, h := range []string{"Content-Type", "Cache-Control"} {
		w.Header().Set(h, resp.Header.Get(h))
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	br := bufio.NewReader(resp.Body)
	for {
		block, id, event, err := readBlock(br)
		if err != nil {
			return
		}
		var cut bool
		update(func(s *stream) {
			cut = i < p.cuts && event == "change" && s.changes >= p.cutAfter
			if cut {
				s.cut, s.cutID = true, id
			}
		})
		if cut {
			// Half an event, then the connection closes: the browser
			// must drop the half and resume after the last whole one.
			w.Write(block[:len(block)/2])
			rc.Flush()
			panic(http.ErrAbortHandler)
		}
		if _, err := w.Write(block); err != nil || rc.Flush() != nil {
			return
		}
		update(func(s *stream) {
			if id != "" {
				s.wholeID = id
			}
			if event == "change" {
				s.changes++
			}
		})
	}
}

// readBlock reads one block of an event stream: its lines through the
// blank line that ends it, with the values of its id and event fields.
func readBlock(br *bufio.Reader) (block []byte, id, event string, err error) {
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return nil, "", "", err
		}
		block = append(block, line...)
		s := strings.TrimRight(string(line), "\r\n")
		switch {
		case s == "":
			return block, id, event, nil
		case strings.HasPrefix(s, "id: "):
			id = s[len("id: "):]
		case strings.HasPrefix(s, "event: "):
			event = s[len("event: "):]
		}
	}
}

// snapshot returns a copy of the streams seen so far.
func (p *feedProxy) snapshot() []stream {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]stream(nil), p.streams...)
}

// resumePage is the test page: an EventSource on the proxy's /v1/watch
// that records every event (its type, lastEventId and data) and POSTs them
// to /result once it has received the change of the last key.
const resumePage = `<!doctype html>
<meta charset="utf-8">
<title>watch resume</title>
<script>
"use strict";
const lastKey = %s;
const got = [];
let opens = 0, errors = 0;
const es = new EventSource("/v1/watch?" + new URLSearchParams({prefix: %s, from: "1", progress: "100ms"}));
es.onopen = () => { opens++; };
es.onerror = () => { errors++; };
for (const type of ["change", "progress", "compacted"]) {
  es.addEventListener(type, (ev) => {
    got.push({type: type, id: ev.lastEventId, data: ev.data});
    if (type === "compacted" || (type === "change" && JSON.parse(ev.data).events.some((e) => e.key === lastKey))) {
      es.close();
      fetch("/result", {method: "POST", body: JSON.stringify({opens: opens, errors: errors, events: got})});
    }
  });
}
</script>
`

// pageResult is what the page POSTs.
type pageResult struct {
	Opens  int `json:"opens"`
	Errors int `json:"errors"`
	Events []struct {
		Type string `json:"type"`
		ID   string `json:"id"`
		Data string `json:"data"`
	} `json:"events"`
}

// TestBrowserWatchResumes opens an EventSource in headless Chromium on a
// prefix while writes run, through a proxy that cuts its first three
// streams off in the middle of an event. Each time the browser must
// reconnect by itself with Last-Event-ID set to the last whole event it
// received, and in the end hold every revision of the prefix exactly once,
// in order and whole: the watch validator checks what the page received
// against the acknowledged writes.
func TestBrowserWatchResumes(t *testing.T) {
	chromium := needChromium(t)
	k := startKVD(t, "--commit-mode", "async")
	const prefix, lastKey = "b/", "b/last"
	page := fmt.Sprintf(resumePage, jsString(lastKey), jsString(prefix))
	p := &feedProxy{kvd: k.HTTPAddr, page: []byte(page), cuts: 3, cutAfter: 50, result: make(chan []byte, 1)}
	ln := kvtest.Listen(t)
	srv := &http.Server{Handler: p}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	ctx := waitCtx(t, browserTimeout)
	b := startBrowser(t, chromium, append(chromiumArgs(t.TempDir()), "http://"+ln.Addr().String()+"/"))
	// The writes start once the page watches, so that the cuts fall in a
	// live stream (the watch starts from revision 1 in any case).
	waitStreams := func(what string, cond func([]stream) bool) {
		t.Helper()
		ok := kvtest.WaitFor(browserTimeout, 20*time.Millisecond, func() bool {
			select {
			case <-b.Exited():
				t.Fatalf("chromium exited while waiting for %s\n%s", what, b.Output())
			default:
			}
			return cond(p.snapshot())
		})
		if !ok {
			t.Fatalf("timed out waiting for %s; streams %+v\n%s", what, p.snapshot(), b.Output())
		}
	}
	waitStreams("the page's watch", func(s []stream) bool { return len(s) > 0 })
	l := startLoad(t, k.RESPAddr, prefix, 2)
	// Every cut, its resumption, and a stream that goes on after the last
	// one while the writes run.
	waitStreams("the cuts and resumptions", func(s []stream) bool {
		return len(s) > p.cuts && s[len(s)-1].changes >= p.cutAfter
	})
	last, err := l.Last(ctx, lastKey)
	if err != nil {
		t.Fatal(err)
	}

	var body []byte
	select {
	case body = <-p.result:
	case <-b.Exited():
		t.Fatalf("chromium exited before the page sent its result\n%s", b.Output())
	case <-ctx.Done():
		t.Fatalf("no result from the page within %v; streams %+v\n%s", browserTimeout, p.snapshot(), b.Output())
	}
	b.Stop()

	checkResumes(t, p.snapshot(), p.cuts)
	var res pageResult
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatalf("the page's result: %v\n%.500s", err, body)
	}
	h := pageHistory(t, res)
	if got := h.Last(); got != last {
		t.Fatalf("the page's last revision is %d, want %d (the last write)", got, last)
	}
	if errs := watchcheck.Check(h, l.Reference(), func(k string) bool { return strings.HasPrefix(k, prefix) }); len(errs) > 0 {
		t.Fatalf("the browser's watch history:\n%s", watchcheck.Summary(errs))
	}
	changes := 0
	for _, d := range h.Deliveries {
		if !d.Progress {
			changes++
		}
	}
	if res.Opens < p.cuts+1 || res.Errors < p.cuts {
		t.Errorf("the page saw %d opens and %d errors, want at least %d and %d", res.Opens, res.Errors, p.cuts+1, p.cuts)
	}
	t.Logf("the browser received %d revisions of %s and %d progress marks through revision %d over %d streams (%d opens, %d errors)",
		changes, prefix, len(h.Deliveries)-changes, last, len(p.snapshot()), res.Opens, res.Errors)
}

// checkResumes checks what the proxy saw: the first cuts streams were cut
// in the middle of an event, and each stream after the first resumed with
// Last-Event-ID set to the id of the last whole event of the one before.
func checkResumes(t *testing.T, streams []stream, cuts int) {
	t.Helper()
	if len(streams) <= cuts {
		t.Fatalf("%d watch streams, want more than %d: %+v", len(streams), cuts, streams)
	}
	if streams[0].lastEventID != "" {
		t.Errorf("the first stream carries Last-Event-ID %q", streams[0].lastEventID)
	}
	for i, s := range streams {
		if i < cuts && (!s.cut || s.wholeID == "") {
			t.Errorf("stream %d was not cut after a whole event: %+v", i, s)
		}
		if i == 0 {
			continue
		}
		prev := streams[i-1]
		if s.lastEventID == "" || s.lastEventID != prev.wholeID {
			t.Errorf("stream %d resumed with Last-Event-ID %q, want %q, the last whole event of stream %d (cut in event %q)",
				i, s.lastEventID, prev.wholeID, i-1, prev.cutID)
		}
	}
	t.Logf("streams: %+v", streams)
}

// pageHistory turns the page's events into a watch history from revision
// 1, checking that each change's id is its revision.
func pageHistory(t *testing.T, res pageResult) watchcheck.History {
	t.Helper()
	h := watchcheck.History{From: 1}
	for i, e := range res.Events {
		rev, err := strconv.ParseUint(e.ID, 10, 64)
		if err != nil {
			t.Fatalf("event %d (%s): lastEventId %q is not a revision", i, e.Type, e.ID)
		}
		switch e.Type {
		case "progress":
			h.Deliveries = append(h.Deliveries, watchcheck.Delivery{Revision: rev, Progress: true})
		case "change":
			var body struct {
				Rev    uint64 `json:"rev"`
				Events []struct {
					Op    string  `json:"op"`
					Key   string  `json:"key"`
					Value *string `json:"value"`
				} `json:"events"`
			}
			if err := json.Unmarshal([]byte(e.Data), &body); err != nil {
				t.Fatalf("event %d: %v: %s", i, err, e.Data)
			}
			if body.Rev != rev {
				t.Fatalf("event %d: id %d but revision %d: %s", i, rev, body.Rev, e.Data)
			}
			d := watchcheck.Delivery{Revision: rev}
			for _, c := range body.Events {
				ch := watchcheck.Change{Key: c.Key, Delete: c.Op == "del"}
				if c.Value != nil {
					ch.Value = *c.Value
				}
				d.Changes = append(d.Changes, ch)
			}
			h.Deliveries = append(h.Deliveries, d)
		default:
			t.Fatalf("event %d: %s %s: %s", i, e.Type, e.ID, e.Data)
		}
	}
	return h
}

// jsString returns s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s) // a string always encodes
	return string(b)
}
