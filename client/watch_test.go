package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/kvtest"
	"github.com/kvdstore/kvd/internal/watchcheck"
)

// cutProxy forwards connections to a server and can cut them all at once.
type cutProxy struct {
	ln       net.Listener
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	accepted int
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	p := &cutProxy{ln: kvtest.Listen(t), conns: map[net.Conn]struct{}{}}
	go func() {
		for {
			c, err := p.ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[s] = struct{}{}, struct{}{}
			p.accepted++
			p.mu.Unlock()
			go func() { io.Copy(s, c); s.Close(); c.Close() }()
			go func() { io.Copy(c, s); s.Close(); c.Close() }()
		}
	}()
	t.Cleanup(func() { p.ln.Close(); p.cut() })
	return p
}

// cut closes every connection through the proxy.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// reference returns the store's history: every revision's changes.
func reference(t *testing.T, db *engine.DB) map[uint64][]watchcheck.Change {
	t.Helper()
	sets, _, err := db.Changes(1, nil, 0, db.WrittenRevision())
	if err != nil {
		t.Fatal(err)
	}
	ref := map[uint64][]watchcheck.Change{}
	for _, cs := range sets {
		for _, c := range cs.Changes {
			ref[cs.Revision] = append(ref[cs.Revision], watchcheck.Change{Key: string(c.Key), Value: string(c.Value), Delete: c.Delete})
		}
	}
	return ref
}

// recordEvent appends a client event to a recorded history.
func recordEvent(h *watchcheck.History, e client.WatchEvent) {
	d := watchcheck.Delivery{Revision: e.Revision, Progress: e.Progress}
	for _, c := range e.Changes {
		d.Changes = append(d.Changes, watchcheck.Change{Key: c.Key, Value: string(c.Value), Delete: c.Deleted})
	}
	h.Deliveries = append(h.Deliveries, d)
}

// TestWatchResumes cuts the watch's connection 1,000 times (50 in the
// short run) at random
// moments while batches of writes and deletes run, and checks that the
// watch, resuming by itself each time, delivered every revision of its
// prefix exactly once, in order and whole (the validator of
// internal/watchcheck against the store's own history).
func TestWatchResumes(t *testing.T) {
	seed := rand.Uint64()
	if s := os.Getenv("KVD_WATCH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (set KVD_WATCH_SEED to repeat)", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	e := startServer(t, engine.Options{CommitMode: engine.CommitAsync})
	p := newCutProxy(t, e.addr)
	writer := dial(t, e.addr, client.Options{})
	watcher := dial(t, p.ln.Addr().String(), client.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	events := watcher.Watch(ctx, "w/", 1)

	// 1,000 cuts take about 20-50 s (go-redis waits 10-20 ms before it
	// reconnects): the long run (KVD_CRASH_LONG, as .ci/run sets) does
	// them, go test ./... 50.
	cuts := 50
	if os.Getenv("KVD_CRASH_LONG") != "" {
		cuts = 1000
	}
	stop := make(chan struct{})
	writeErr := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				writeErr <- nil
				return
			default:
			}
			var err error
			switch i % 4 {
			case 3:
				_, err = writer.Delete(ctx, fmt.Sprintf("w/%d", i%50))
			case 2:
				err = writer.Put(ctx, fmt.Sprintf("other/%d", i), []byte("x"))
			default:
				err = writer.PutMany(ctx, []client.KV{
					{Key: fmt.Sprintf("w/%d", i%50), Value: []byte(strconv.Itoa(i))},
					{Key: fmt.Sprintf("w/%d", (i+7)%50), Value: []byte(strconv.Itoa(i))},
				})
			}
			if err != nil {
				writeErr <- err
				return
			}
			time.Sleep(200 * time.Microsecond) // a load, not a flood
		}
	}()
	h := watchcheck.History{From: 1}
	cutDone := make(chan struct{})
	go func() {
		defer close(cutDone)
		seen := 0
		for range cuts {
			// Each cut breaks a connection: wait for the watch to have
			// reconnected, then cut at a random moment of its stream.
			for {
				p.mu.Lock()
				n := p.accepted
				p.mu.Unlock()
				if n > seen {
					seen = n
					break
				}
				time.Sleep(100 * time.Microsecond)
			}
			time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
			p.cut()
		}
	}()
	// Read while the cuts run.
	read := func(until func() bool) {
		for !until() {
			select {
			case ev, ok := <-events:
				if !ok || ev.Err != nil {
					t.Fatalf("the watch ended: %v", ev.Err)
				}
				recordEvent(&h, ev)
			case <-ctx.Done():
				t.Fatalf("timed out; last revision %d", h.Last())
			}
		}
	}
	read(func() bool {
		select {
		case <-cutDone:
			return true
		default:
			return false
		}
	})
	close(stop)
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	if err := writer.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	last := e.db.DurableRevision()
	read(func() bool { return h.Last() >= last })
	cancel()
	ref := reference(t, e.db)
	if errs := watchcheck.Check(h, ref, func(k string) bool { return strings.HasPrefix(k, "w/") }); len(errs) > 0 {
		t.Fatalf("watch history:\n%s", watchcheck.Summary(errs))
	}
	p.mu.Lock()
	accepted := p.accepted
	p.mu.Unlock()
	changes := 0
	for _, d := range h.Deliveries {
		changes += len(d.Changes)
	}
	t.Logf("%d revisions, %d deliveries (%d changes), %d connections through the proxy", last, len(h.Deliveries), changes, accepted)
	if accepted < cuts || changes < 1000 {
		t.Fatalf("only %d connections and %d changes: the cuts did not test resumption", accepted, changes)
	}
}

// TestWatchCompacted checks that a watch from a revision the server no
// longer keeps ends with a *CompactedError naming the oldest one.
func TestWatchCompacted(t *testing.T) {
	e := startServer(t, engine.Options{HistoryRevisions: 2, HistoryAge: time.Nanosecond, CheckpointLogBytes: 1 << 10})
	c := dial(t, e.addr, client.Options{})
	ctx := t.Context()
	kvtest.Eventually(t, 10*time.Second, "a checkpoint pruning the history", func() bool {
		if err := c.Put(ctx, "k", []byte(strings.Repeat("v", 200))); err != nil {
			t.Fatal(err)
		}
		return e.db.OldestRevision() > 1
	})
	var last client.WatchEvent
	for ev := range c.Watch(ctx, "", 1) {
		last = ev
	}
	var ce *client.CompactedError
	if !errors.As(last.Err, &ce) || !errors.Is(last.Err, client.ErrCompacted) || ce.Requested != 1 || ce.Oldest < 2 {
		t.Fatalf("a watch below the history ended with %+v, want a CompactedError", last)
	}
}
