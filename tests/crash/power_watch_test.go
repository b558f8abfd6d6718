package crash_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	kvdclient "github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/internal/watchcheck"
)

// The watchers of TestPowerLoss. Three watches run beside the load of every
// cycle and record what they receive: the Go client's Watch of every key and
// an SSE stream of one client's prefix, both with the default durable
// delivery, and a CHANGES pull of every key with DURABILITY written. After
// the power loss each resumes from the revision after the last one it saw,
// as a client would (SSE with Last-Event-ID).
//
// The reference is the history the restarted kvd recovered (revisions from
// the previous recovered revision through the new one, read with CHANGES),
// checked first against the load's writes: every revision is one write of
// the cycle, whole, and every acknowledged write whose revision the client
// learnt and that was recovered is at that revision. Then:
//
//   - durable watchers (README "Watch": a power loss cannot take back a
//     revision a watcher has seen): no revision or progress mark they hold
//     is above the recovered revision, and what they received is ordered,
//     unique, atomic, complete and true to its progress marks against the
//     reference: each stretch between two restarts after the second, the
//     whole history across every resumption at the end;
//   - the written watcher may have seen revisions the power loss took back,
//     and its resumption may skip the new writes that reuse their numbers
//     (the documented risk), so each stretch between two restarts is
//     checked on its own: what it saw of the recovered revisions is true,
//     and each revision it saw above them was a whole write of the load, at
//     the revision the writer learnt when it learnt one.
//
// At the end every watcher catches up with the last recovered revision, so
// that completeness covers the whole run.

// watchers is the set of watches of one power-loss test, across its cycles.
type watchers struct {
	t    *testing.T
	row  *resultRow
	ws   []*watcher
	stop context.CancelFunc
	wg   sync.WaitGroup

	// ref is every revision of the data dir through refRev: what the
	// restarts recovered, checked against the writes.
	ref    map[uint64][]watchcheck.Change
	refRev uint64

	// Figures for the results table.
	cycles    int
	delivered int // revisions delivered to durable watchers (all checked)
	takenBack int // revisions the written watcher saw that a power loss took back
	ackedLost int // cycles in which a power loss took back an acknowledged revision
}

// watcher is one watch, resumed after every restart.
type watcher struct {
	name    string
	prefix  string
	written bool
	// run watches from revision from on until ctx ends, passing each
	// delivery to w.add. It tries again when the connection breaks (kvd
	// was killed) and returns an error only for a refusal.
	run func(ctx context.Context, k *kvd, w *watcher, from uint64) error

	mu        sync.Mutex
	h         watchcheck.History // everything received, from revision 1
	epoch     int                // index in h.Deliveries of the first delivery since the last start
	epochFrom uint64             // the revision the last start resumed from
	err       error              // a refusal
}

func newWatchers(t *testing.T, mode string) *watchers {
	ws := &watchers{
		t:   t,
		row: results.row("power loss, watchers", mode),
		ref: map[uint64][]watchcheck.Change{},
		ws: []*watcher{
			{name: "client.Watch of every key (durable)", run: runClientWatch},
			{name: "SSE of prefix c1/ (durable)", prefix: "c1/", run: runSSE},
			{name: "CHANGES of every key (DURABILITY written)", written: true, run: runChangesWatch},
		},
	}
	// A test that fails before it stops the watchers must not leave them
	// running into the next test.
	t.Cleanup(ws.halt)
	return ws
}

func (w *watcher) match(key string) bool { return strings.HasPrefix(key, w.prefix) }

func (w *watcher) add(d watchcheck.Delivery) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.h.Deliveries = append(w.h.Deliveries, d)
}

// start starts every watcher on k, from the revision after the last one it
// saw.
func (ws *watchers) start(k *kvd) {
	ctx, cancel := context.WithCancel(context.Background())
	ws.stop = cancel
	for _, w := range ws.ws {
		w.mu.Lock()
		w.h.From = 1
		w.epoch, w.epochFrom = len(w.h.Deliveries), w.h.Last()+1
		from := w.epochFrom
		w.mu.Unlock()
		ws.wg.Go(func() {
			if err := w.run(ctx, k, w, from); err != nil && ctx.Err() == nil {
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
			}
		})
	}
}

// halt stops every watcher and waits for them; call it once kvd is killed.
// Calling it again does nothing.
func (ws *watchers) halt() {
	if ws.stop != nil {
		ws.stop()
	}
	ws.wg.Wait()
}

// recovered checks the watchers after a power loss: k is the restarted
// kvd, which recovered revision kRev, baseRev the revision recovered before
// the cycle whose operations are ops.
func (ws *watchers) recovered(k *kvd, ops []*op, baseRev, kRev uint64) {
	t := ws.t
	t.Helper()
	ws.cycles++
	var bad []string
	hist, err := readHistory(k, baseRev+1, kRev)
	if err != nil {
		ws.row.fail("reading the recovered change history")
		t.Fatalf("reading the recovered change history: %v", err)
	}
	checked, errs := checkHistory(hist, ops, baseRev, kRev)
	bad = append(bad, errs...)
	for rev, cs := range hist {
		ws.ref[rev] = cs
	}
	ws.refRev = kRev
	if slices.ContainsFunc(ops, func(o *op) bool { return o.isWrite() && o.out == outOK && o.rev > kRev }) {
		ws.ackedLost++
	}
	for _, w := range ws.ws {
		bad = append(bad, ws.checkWatcher(w, ops, kRev, false)...)
	}
	ws.row.count(checked, len(bad))
	if len(bad) > 0 {
		t.Errorf("watchers across power loss %d (recovered revision %d, previous %d):\n  %s",
			ws.cycles, kRev, baseRev, report(bad))
	}
}

// checkWatcher checks what w received since its last start against the
// reference, after a restart that recovered kRev; ops are the operations
// of the cycle the power loss ended. With whole, a durable watcher's whole
// history is checked.
func (ws *watchers) checkWatcher(w *watcher, ops []*op, kRev uint64, whole bool) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var bad []string
	if w.err != nil {
		bad = append(bad, fmt.Sprintf("%s: %v", w.name, w.err))
	}
	epoch := w.h.Deliveries[w.epoch:]
	if !w.written {
		for _, d := range epoch {
			if d.Revision > kRev {
				what := "revision"
				if d.Progress {
					what = "progress mark"
				}
				bad = append(bad, fmt.Sprintf("%s: holds %s %d, which the power loss took back (recovered revision %d)", w.name, what, d.Revision, kRev))
				break
			}
			if !d.Progress {
				ws.delivered++
			}
		}
		// The stretch since the last start; finish checks the whole
		// history once, across every resumption.
		h := watchcheck.History{From: w.epochFrom, Deliveries: epoch}
		if whole {
			h = w.h
		}
		for _, e := range watchcheck.Check(h, ws.ref, w.match) {
			bad = append(bad, fmt.Sprintf("%s (from %d): %s", w.name, h.From, e))
		}
		return bad
	}
	// The written watcher's stretch since the last start: the recovered
	// revisions are the reference's; a revision above them must be one
	// whole write of the cycle.
	ref := ws.ref
	var lost []watchcheck.Delivery
	for _, d := range epoch {
		if !d.Progress && d.Revision > kRev {
			lost = append(lost, d)
		}
	}
	if len(lost) > 0 || slices.ContainsFunc(ops, func(o *op) bool { return o.isWrite() && o.rev > kRev }) {
		ref = make(map[uint64][]watchcheck.Change, len(ws.ref))
		for rev, cs := range ws.ref {
			ref[rev] = cs
		}
		idx := indexOps(ops)
		for _, o := range ops {
			if o.isWrite() && o.rev > kRev {
				ref[o.rev] = changesOf(o)
			}
		}
		for _, d := range lost {
			ws.takenBack++
			o := idx.find(d.Changes)
			switch {
			case o == nil:
				bad = append(bad, fmt.Sprintf("%s: revision %d, which the power loss took back, is no write of the load: %v", w.name, d.Revision, d.Changes))
			case o.rev != 0 && o.rev != d.Revision:
				bad = append(bad, fmt.Sprintf("%s: revision %d, which the power loss took back, holds %v, which the writer learnt was revision %d", w.name, d.Revision, o, o.rev))
			default:
				if _, ok := ref[d.Revision]; !ok {
					ref[d.Revision] = changesOf(o)
				}
			}
		}
	}
	h := watchcheck.History{From: w.epochFrom, Deliveries: epoch}
	for _, e := range watchcheck.Check(h, ref, w.match) {
		bad = append(bad, fmt.Sprintf("%s (since it resumed from %d): %s", w.name, w.epochFrom, e))
	}
	return bad
}

// finish makes every watcher catch up with k, which nothing writes to, and
// checks them once more, so that completeness covers every revision of the
// run; then it writes the results row.
func (ws *watchers) finish(k *kvd) {
	t := ws.t
	t.Helper()
	target := k.status().Revisions.Written
	if target != ws.refRev {
		t.Fatalf("kvd is at revision %d, but recovered %d and nothing wrote since", target, ws.refRev)
	}
	ws.start(k)
	deadline := time.Now().Add(2 * time.Minute)
	for _, w := range ws.ws {
		for {
			w.mu.Lock()
			last, err := w.h.Last(), w.err
			w.mu.Unlock()
			if last >= target || err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: still at revision %d of %d after 2 minutes of catching up", w.name, last, target)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	ws.halt()
	var bad []string
	for _, w := range ws.ws {
		bad = append(bad, ws.checkWatcher(w, nil, target, true)...)
	}
	ws.row.violated(len(bad))
	if len(bad) > 0 {
		t.Errorf("watchers after catching up with revision %d:\n  %s", target, report(bad))
	}
	if ws.delivered == 0 {
		t.Errorf("the durable watchers received no revision: they tested nothing")
	}
	ws.row.setNote("%d revisions delivered to durable watchers, none taken back; the written watcher saw %d revisions that a power loss took back; %d of %d power losses took back acknowledged revisions",
		ws.delivered, ws.takenBack, ws.ackedLost, ws.cycles)
}

// report formats violations for a failure: the first 25, each cut to a
// few hundred bytes (values run to kilobytes).
func report(bad []string) string {
	lines := first(bad, 25)
	for i, l := range lines {
		if len(l) > 400 {
			lines[i] = l[:400] + "…"
		}
	}
	return strings.Join(lines, "\n  ")
}

// readHistory reads the change history of revisions from through to, every
// key, and checks that each of them is there.
func readHistory(k *kvd, from, to uint64) (map[uint64][]watchcheck.Change, error) {
	hist := map[uint64][]watchcheck.Change{}
	if from > to {
		return hist, nil
	}
	rdb := k.redis()
	defer rdb.Close()
	for next := from; next <= to; {
		ds, n, err := pullChanges(context.Background(), rdb, next, "", "durability", "written")
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			if !d.Progress && d.Revision <= to {
				hist[d.Revision] = d.Changes
			}
		}
		if n <= next {
			return nil, fmt.Errorf("CHANGES FROM %d answered next %d", next, n)
		}
		next = n
	}
	return hist, nil
}

// opIndex finds the write of a cycle that a revision's changes belong to:
// keys are created once and deleted at most once.
type opIndex struct{ created, deleted map[string]*op }

func indexOps(ops []*op) opIndex {
	idx := opIndex{created: map[string]*op{}, deleted: map[string]*op{}}
	for _, o := range ops {
		for _, key := range o.keys {
			switch o.kind {
			case opSet, opMSet:
				idx.created[key] = o
			case opDel:
				idx.deleted[key] = o
			}
		}
	}
	return idx
}

// find returns the write whose changes are exactly cs, or nil.
func (idx opIndex) find(cs []watchcheck.Change) *op {
	if len(cs) == 0 {
		return nil
	}
	o := idx.created[cs[0].Key]
	if cs[0].Delete {
		o = idx.deleted[cs[0].Key]
	}
	if o == nil || !sameChanges(cs, changesOf(o)) {
		return nil
	}
	return o
}

// changesOf returns the changes a write makes.
func changesOf(o *op) []watchcheck.Change {
	cs := make([]watchcheck.Change, len(o.keys))
	for i, key := range o.keys {
		if o.kind == opDel {
			cs[i] = watchcheck.Change{Key: key, Delete: true}
		} else {
			cs[i] = watchcheck.Change{Key: key, Value: o.vals[i]}
		}
	}
	return cs
}

func sameChanges(a, b []watchcheck.Change) bool {
	key := func(c watchcheck.Change) string { return fmt.Sprintf("%q %q %v", c.Key, c.Value, c.Delete) }
	as, bs := make([]string, len(a)), make([]string, len(b))
	for i := range a {
		as[i] = key(a[i])
	}
	for i := range b {
		bs[i] = key(b[i])
	}
	slices.Sort(as)
	slices.Sort(bs)
	return slices.Equal(as, bs)
}

// checkHistory checks the recovered history of revisions baseRev+1 through
// kRev against the operations of the cycle: every revision is there, each
// is exactly one write, no write is there twice, and every write whose
// revision the client learnt is at that revision if it is at most kRev. It
// returns how many acknowledged writes it found at their revision.
func checkHistory(hist map[uint64][]watchcheck.Change, ops []*op, baseRev, kRev uint64) (int, []string) {
	var bad []string
	idx := indexOps(ops)
	at := map[*op]uint64{}
	for rev := baseRev + 1; rev <= kRev; rev++ {
		cs, ok := hist[rev]
		if !ok {
			bad = append(bad, fmt.Sprintf("recovered revision %d is not in the change history", rev))
			continue
		}
		o := idx.find(cs)
		switch {
		case o == nil:
			bad = append(bad, fmt.Sprintf("revision %d of the change history, %v, is no write of the load", rev, cs))
		case at[o] != 0:
			bad = append(bad, fmt.Sprintf("%v is revision %d and %d of the change history", o, at[o], rev))
		default:
			at[o] = rev
		}
	}
	checked := 0
	for _, o := range ops {
		if !o.isWrite() || o.rev == 0 || o.rev <= baseRev || o.rev > kRev {
			continue
		}
		switch {
		case at[o] == 0:
			bad = append(bad, fmt.Sprintf("%v is not in the change history, though it is at most the recovered revision", o))
		case at[o] != o.rev:
			bad = append(bad, fmt.Sprintf("%v is revision %d of the change history", o, at[o]))
		case o.out == outOK:
			checked++
		}
	}
	return checked, bad
}

// runClientWatch watches with the Go client's Watch, which reconnects by
// itself when the connection breaks.
func runClientWatch(ctx context.Context, k *kvd, w *watcher, from uint64) error {
	var c *kvdclient.Client
	for {
		var err error
		c, err = kvdclient.Dial(ctx, k.RESPAddr, kvdclient.Options{PoolSize: 1})
		if err == nil {
			break
		}
		if !pause(ctx) {
			return nil
		}
	}
	defer c.Close()
	// A CHANGES BLOCK in flight does not end with ctx: closing the client
	// ends it.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	var opts []kvdclient.WatchOption
	if w.written {
		opts = append(opts, kvdclient.WatchWritten())
	}
	for e := range c.Watch(ctx, w.prefix, from, opts...) {
		if e.Err != nil {
			return e.Err
		}
		d := watchcheck.Delivery{Revision: e.Revision, Progress: e.Progress}
		for _, ch := range e.Changes {
			d.Changes = append(d.Changes, watchcheck.Change{Key: ch.Key, Value: string(ch.Value), Delete: ch.Deleted})
		}
		w.add(d)
	}
	return nil
}

// runChangesWatch pulls with CHANGES, BLOCK 100.
func runChangesWatch(ctx context.Context, k *kvd, w *watcher, from uint64) error {
	rdb := k.redis()
	defer rdb.Close()
	stop := context.AfterFunc(ctx, func() { rdb.Close() })
	defer stop()
	dur := "durable"
	if w.written {
		dur = "written"
	}
	for next := from; ; {
		ds, n, err := pullChanges(ctx, rdb, next, w.prefix, "block", 100, "durability", dur)
		var rerr redis.Error
		switch {
		case errors.As(err, &rerr):
			return err
		case err != nil:
			if !pause(ctx) {
				return nil
			}
			continue
		}
		for _, d := range ds {
			w.add(d)
		}
		next = n
	}
}

// runSSE reads GET /v1/watch, and after a broken stream connects again
// with Last-Event-ID, as a browser's EventSource does.
func runSSE(ctx context.Context, k *kvd, w *watcher, from uint64) error {
	hc := &http.Client{Transport: &http.Transport{}} // no timeout: a stream lasts
	defer hc.CloseIdleConnections()
	last := from - 1
	q := url.Values{"prefix": {w.prefix}, "progress": {"50ms"}}
	if w.written {
		q.Set("durability", "written")
	}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url("/v1/watch?"+q.Encode()), nil)
		if err != nil {
			return err
		}
		req.Header.Set("Last-Event-ID", strconv.FormatUint(last, 10))
		resp, err := hc.Do(req)
		if err == nil {
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
				resp.Body.Close()
				return fmt.Errorf("GET /v1/watch: %s: %s", resp.Status, bytes.TrimSpace(b))
			}
			err = readSSE(resp, w, &last)
			resp.Body.Close()
			if err != nil {
				return err
			}
		}
		if !pause(ctx) {
			return nil
		}
	}
}

// readSSE records the events of an SSE stream until it breaks, keeping in
// last the last event id. It returns an error for what only a misbehaving
// server sends.
func readSSE(resp *http.Response, w *watcher, last *uint64) error {
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	var id, event, data string
	for sc.Scan() {
		line := sc.Text()
		if line != "" {
			field, val, _ := strings.Cut(line, ":")
			val = strings.TrimPrefix(val, " ")
			switch field {
			case "id":
				id = val
			case "event":
				event = val
			case "data":
				data = val
			}
			continue
		}
		switch event {
		case "change", "progress":
			rev, err := strconv.ParseUint(id, 10, 64)
			if err != nil {
				return fmt.Errorf("SSE %s event with id %q", event, id)
			}
			d := watchcheck.Delivery{Revision: rev, Progress: event == "progress"}
			if event == "change" {
				var body struct {
					Rev    uint64 `json:"rev"`
					Events []struct {
						Op    string  `json:"op"`
						Key   string  `json:"key"`
						Value *string `json:"value"`
					} `json:"events"`
				}
				if err := json.Unmarshal([]byte(data), &body); err != nil || body.Rev != rev {
					return fmt.Errorf("SSE change event id %d, data %s: %v", rev, tail(data, 200), err)
				}
				for _, e := range body.Events {
					c := watchcheck.Change{Key: e.Key, Delete: e.Op == "del"}
					if e.Value != nil {
						c.Value = *e.Value
					}
					d.Changes = append(d.Changes, c)
				}
			}
			w.add(d)
			*last = rev
		case "compacted":
			return fmt.Errorf("SSE compacted: %s", data)
		}
		id, event, data = "", "", ""
	}
	return nil // the stream broke: kvd was killed
}

// pause waits a little before a watcher tries again; it reports false when
// ctx ended.
func pause(ctx context.Context) bool {
	select {
	case <-time.After(10 * time.Millisecond):
		return true
	case <-ctx.Done():
		return false
	}
}
