package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/internal/kvtest"
	"github.com/kvdstore/kvd/internal/watchcheck"
)

// changesPage is the body of GET /v1/changes.
type changesPage struct {
	Events []struct {
		Rev   uint64  `json:"rev"`
		Op    string  `json:"op"`
		Key   string  `json:"key"`
		Value *string `json:"value"`
	} `json:"events"`
	Next, Progress, Oldest uint64
}

// storeHistory reads kvd's change history from revision 1 through last
// with /v1/changes: the reference a recorded watch is checked against.
func storeHistory(t *testing.T, httpAddr string, last uint64) map[uint64][]watchcheck.Change {
	t.Helper()
	ref := map[uint64][]watchcheck.Change{}
	for from := uint64(1); from <= last; {
		var page changesPage
		url := fmt.Sprintf("http://%s/v1/changes?from=%d&limit=100000&durability=written", httpAddr, from)
		if err := kvtest.GetJSON(t.Context(), http.DefaultClient, url, &page); err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Events {
			c := watchcheck.Change{Key: e.Key, Delete: e.Op == "del"}
			if e.Value != nil {
				c.Value = *e.Value
			}
			ref[e.Rev] = append(ref[e.Rev], c)
		}
		if page.Next <= from {
			t.Fatalf("/v1/changes from %d did not move (next %d)", from, page.Next)
		}
		from = page.Next
	}
	return ref
}

// readSSE reads a Server-Sent Events stream into a recorded watch history
// until stop says so (after each event).
func readSSE(r *bufio.Reader, h *watchcheck.History, stop func() bool) error {
	var id uint64
	var event, data string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case strings.HasPrefix(line, "id: "):
			id, _ = strconv.ParseUint(line[4:], 10, 64)
		case strings.HasPrefix(line, "event: "):
			event = line[7:]
		case strings.HasPrefix(line, "data: "):
			data = line[6:]
		case line == "" && event != "":
			switch event {
			case "progress":
				h.Deliveries = append(h.Deliveries, watchcheck.Delivery{Revision: id, Progress: true})
			case "change":
				var body struct {
					Events []struct {
						Op    string  `json:"op"`
						Key   string  `json:"key"`
						Value *string `json:"value"`
					} `json:"events"`
				}
				if err := json.Unmarshal([]byte(data), &body); err != nil {
					return err
				}
				d := watchcheck.Delivery{Revision: id}
				for _, e := range body.Events {
					c := watchcheck.Change{Key: e.Key, Delete: e.Op == "del"}
					if e.Value != nil {
						c.Value = *e.Value
					}
					d.Changes = append(d.Changes, c)
				}
				h.Deliveries = append(h.Deliveries, d)
			default:
				return fmt.Errorf("event %q: %s", event, data)
			}
			event = ""
			if stop() {
				return nil
			}
		}
	}
}

// metric reads one sample of kvd's /metrics.
func metric(t *testing.T, httpAddr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestWatchSlowConsumer opens an SSE watch and stops reading it while
// 20,000 writes run (pipelined): the writes go on (the watcher overflows its buffer of
// 64 changes into catch-up instead of holding them), and once it reads
// again it gets every revision, checked by the watch validator against
// kvd's history.
func TestWatchSlowConsumer(t *testing.T) {
	p := startKVD(t, "", "--commit-mode", "async", "--watch-buffer", "64")
	// A client whose socket buffer is small, so that not reading stops
	// kvd's writes soon.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			c.(*net.TCPConn).SetReadBuffer(64 << 10)
		}
		return c, err
	}}}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.HTTPAddr+"/v1/watch?prefix=s/&from=1", nil)
	resp, err := hc.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("watch: %v %v", resp, err)
	}
	defer resp.Body.Close()
	body := bufio.NewReader(resp.Body)

	c, err := client.Dial(t.Context(), p.RESPAddr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	value := []byte(strings.Repeat("v", 100))
	const writes = 20_000
	for i := 0; i < writes; i += 100 {
		pl := c.Pipeline()
		for j := i; j < i+100; j++ {
			pl.Put(fmt.Sprintf("s/%d", j%1000), value)
		}
		if _, err := pl.Exec(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := metric(t, p.HTTPAddr, "kvd_watch_overflows_total"); n < 1 {
		t.Fatalf("kvd_watch_overflows_total %v: the watcher that does not read held every change", n)
	}
	var st struct {
		Revisions struct {
			Durable uint64 `json:"durable"`
		} `json:"revisions"`
	}
	if err := kvtest.GetJSON(t.Context(), http.DefaultClient, "http://"+p.HTTPAddr+"/v1/status", &st); err != nil {
		t.Fatal(err)
	}
	last := st.Revisions.Durable
	if last < 100 { // a pipeline's run of SETs may commit as one revision
		t.Fatalf("durable revision %d after %d writes", last, writes)
	}
	h := watchcheck.History{From: 1}
	if err := readSSE(body, &h, func() bool { return h.Last() >= last }); err != nil {
		resp, _ := http.Get("http://" + p.HTTPAddr + "/metrics")
		b, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "watch") && !strings.HasPrefix(l, "#") {
				t.Log(l)
			}
		}
		t.Fatalf("reading the stream again: %v (at %d of %d)", err, h.Last(), last)
	}
	ref := storeHistory(t, p.HTTPAddr, last)
	if errs := watchcheck.Check(h, ref, func(k string) bool { return strings.HasPrefix(k, "s/") }); len(errs) > 0 {
		t.Fatalf("the slow watcher's history:\n%s", watchcheck.Summary(errs))
	}
}

// TestWatchCompactionRace asks for the changes from exactly the oldest
// revision kvd reports, over and over, while writes run and checkpoints
// prune the history to 20 revisions: each answer must be either 410
// compacted naming a newer oldest revision, or the changes from exactly that
// revision on, without a gap (every write here is one put, so every
// revision has a change).
func TestWatchCompactionRace(t *testing.T) {
	p := startKVD(t, "", "--commit-mode", "async", "--watch-history-revisions", "20", "--watch-history-age", "1ms",
		"--checkpoint-interval", "10ms")
	// The writer stops between requests, never in the middle of one: a
	// write canceled after the server applied it would be in the history
	// the probes read but missing from the reference.
	ctx := t.Context()
	var stop atomic.Bool
	var mu sync.Mutex
	ref := map[uint64][]watchcheck.Change{}
	done := make(chan error, 1)
	go func() {
		hc := &http.Client{}
		for i := 0; !stop.Load(); i++ {
			key, val := fmt.Sprintf("r/%d", i), strconv.Itoa(i)
			req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+p.HTTPAddr+"/v1/kv/"+key, strings.NewReader(val))
			resp, err := hc.Do(req)
			if err != nil {
				done <- err
				return
			}
			var w struct{ Revision uint64 }
			err = json.NewDecoder(resp.Body).Decode(&w)
			resp.Body.Close()
			if err != nil || w.Revision == 0 {
				done <- fmt.Errorf("PUT %s: revision %d, %v", key, w.Revision, err)
				return
			}
			mu.Lock()
			ref[w.Revision] = []watchcheck.Change{{Key: key, Value: val}}
			mu.Unlock()
		}
		done <- nil
	}()
	type probe struct {
		from uint64
		page changesPage
	}
	var probes []probe
	compacted := 0
	for len(probes) < 200 {
		var page changesPage
		if err := kvtest.GetJSON(ctx, http.DefaultClient, "http://"+p.HTTPAddr+"/v1/changes?limit=1&durability=written", &page); err != nil {
			t.Fatal(err)
		}
		from := page.Oldest
		resp, err := http.Get(fmt.Sprintf("http://%s/v1/changes?from=%d&limit=50&durability=written", p.HTTPAddr, from))
		if err != nil {
			t.Fatal(err)
		}
		switch resp.StatusCode {
		case http.StatusGone:
			var e struct {
				Error struct {
					Oldest uint64 `json:"oldest_revision"`
				} `json:"error"`
			}
			json.NewDecoder(resp.Body).Decode(&e)
			if e.Error.Oldest <= from {
				t.Fatalf("410 for revision %d naming oldest %d", from, e.Error.Oldest)
			}
			compacted++
		case http.StatusOK:
			var pg changesPage
			json.NewDecoder(resp.Body).Decode(&pg)
			if len(pg.Events) > 0 {
				probes = append(probes, probe{from, pg})
			}
		default:
			t.Fatalf("status %d", resp.StatusCode)
		}
		resp.Body.Close()
	}
	stop.Store(true)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, pr := range probes {
		h := watchcheck.History{From: pr.from}
		for i, e := range pr.page.Events {
			if i == 0 && e.Rev != pr.from {
				t.Fatalf("from the oldest revision %d the first change is of %d: a silent gap", pr.from, e.Rev)
			}
			h.Deliveries = append(h.Deliveries, watchcheck.Delivery{Revision: e.Rev,
				Changes: []watchcheck.Change{{Key: e.Key, Value: *e.Value}}})
		}
		if errs := watchcheck.Check(h, ref, func(string) bool { return true }); len(errs) > 0 {
			t.Fatalf("from %d:\n%s", pr.from, watchcheck.Summary(errs))
		}
	}
	t.Logf("%d answers from the oldest revision checked, %d compacted", len(probes), compacted)
}
