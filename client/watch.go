package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrCompacted is wrapped by the *CompactedError a watch ends with when the
// revision it needs is older than the server's change history.
var ErrCompacted = errors.New("kvd: change history compacted")

// CompactedError ends a watch whose next revision, Requested, is older than
// the oldest the server keeps, Oldest. Changes between them are lost to the
// watch: read the state again (Scan) and watch from its revision.
type CompactedError struct {
	Oldest, Requested uint64
}

func (e *CompactedError) Error() string {
	return fmt.Sprintf("kvd: change history compacted: oldest revision %d, requested %d", e.Oldest, e.Requested)
}

// Unwrap returns ErrCompacted.
func (e *CompactedError) Unwrap() error { return ErrCompacted }

// Change is one key's change in a revision.
type Change struct {
	Key     string
	Value   []byte // nil for a deletion
	Deleted bool
}

// WatchEvent is what a watch delivers: the changes of one revision (whole:
// every change of the watched keys at that revision, in one event), or a
// progress mark (Progress set, no Changes: every change up to Revision has
// been delivered), or, last before the channel closes, the error that ended
// the watch (Err: a *CompactedError, or a protocol error).
type WatchEvent struct {
	Revision uint64
	Changes  []Change
	Progress bool
	Err      error
}

// WatchOption changes a watch.
type WatchOption func(*watchConfig)

type watchConfig struct {
	key     bool
	written bool
}

// WatchKey makes the watch's first argument a key to watch alone instead
// of a prefix.
func WatchKey() WatchOption { return func(w *watchConfig) { w.key = true } }

// WatchWritten delivers revisions once written instead of once durable:
// sooner, but in async commit mode a power loss can take back a revision
// the watch delivered (and the server then gives its number to another
// write).
func WatchWritten() WatchOption { return func(w *watchConfig) { w.written = true } }

// watchPoll is how long one CHANGES waits for a change (its BLOCK), below
// go-redis's read timeout.
const watchPoll = time.Second

// Watch streams the changes of the keys starting with prefix (every key if
// empty), from revision from on (0: from the next one), until ctx ends. It
// pulls them with CHANGES; when the connection breaks or the server
// restarts it reconnects and goes on from the revision after the last one
// delivered, so that no change is missed or repeated. It ends, after an
// event with Err, when the server no longer has the revision it needs
// (*CompactedError) or refuses the request; the channel is then closed, as
// it is when ctx ends. Revisions are delivered in order, each whole.
func (c *Client) Watch(ctx context.Context, prefix string, from uint64, opts ...WatchOption) <-chan WatchEvent {
	var cfg watchConfig
	for _, o := range opts {
		o(&cfg)
	}
	ch := make(chan WatchEvent, 64)
	go c.watch(ctx, prefix, from, cfg, ch)
	return ch
}

func (c *Client) watch(ctx context.Context, filter string, next uint64, cfg watchConfig, ch chan<- WatchEvent) {
	defer close(ch)
	send := func(e WatchEvent) bool {
		select {
		case ch <- e:
			return true
		case <-ctx.Done():
			return false
		}
	}
	kind := "prefix"
	if cfg.key {
		kind = "key"
	}
	durability := "durable"
	if cfg.written {
		durability = "written"
	}
	backoff := 10 * time.Millisecond
	var progress uint64 // last position delivered
	for ctx.Err() == nil {
		res, err := c.rdb.Do(ctx, "changes", "from", next, kind, filter, "count", 1000,
			"block", watchPoll.Milliseconds(), "durability", durability).Slice()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var re redis.Error
			if errors.As(err, &re) {
				if ce := parseCompacted(re.Error()); ce != nil {
					send(WatchEvent{Err: ce})
					return
				}
				send(WatchEvent{Err: mapError("watch", err)})
				return
			}
			// The connection broke: try again, from the same revision.
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 10 * time.Millisecond
		events, n, prog, err := parseChanges(res)
		if err != nil {
			send(WatchEvent{Err: &OpError{Op: "watch", Err: err}})
			return
		}
		for _, e := range events {
			if !send(e) {
				return
			}
			progress = e.Revision
		}
		next = n
		if len(events) == 0 && prog > progress {
			if !send(WatchEvent{Revision: prog, Progress: true}) {
				return
			}
			progress = prog
		}
	}
}

// parseChanges parses a CHANGES reply into events, one per revision.
func parseChanges(res []any) (events []WatchEvent, next, progress uint64, err error) {
	bad := errors.New("unexpected CHANGES reply")
	if len(res) != 3 {
		return nil, 0, 0, bad
	}
	n, ok1 := res[0].(int64)
	entries, ok2 := res[1].([]any)
	p, ok3 := res[2].(int64)
	if !ok1 || !ok2 || !ok3 {
		return nil, 0, 0, bad
	}
	for _, e := range entries {
		f, ok := e.([]any)
		if !ok || len(f) != 4 {
			return nil, 0, 0, bad
		}
		rev, ok1 := f[0].(int64)
		op, ok2 := f[1].(string)
		key, ok3 := f[2].(string)
		if !ok1 || !ok2 || !ok3 {
			return nil, 0, 0, bad
		}
		ch := Change{Key: key, Deleted: op == "del"}
		if !ch.Deleted {
			v, ok := f[3].(string)
			if !ok {
				return nil, 0, 0, bad
			}
			ch.Value = []byte(v)
		}
		if len(events) == 0 || events[len(events)-1].Revision != uint64(rev) {
			events = append(events, WatchEvent{Revision: uint64(rev)})
		}
		last := &events[len(events)-1]
		last.Changes = append(last.Changes, ch)
	}
	return events, uint64(n), uint64(p), nil
}

// parseCompacted parses "COMPACTED oldest=N requested=M", or returns nil.
func parseCompacted(msg string) *CompactedError {
	rest, ok := strings.CutPrefix(msg, "COMPACTED ")
	if !ok {
		return nil
	}
	var ce CompactedError
	for _, f := range strings.Fields(rest) {
		k, v, _ := strings.Cut(f, "=")
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil
		}
		switch k {
		case "oldest":
			ce.Oldest = n
		case "requested":
			ce.Requested = n
		}
	}
	return &ce
}
