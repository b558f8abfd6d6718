package server

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/watch"
)

// The change feed over HTTP:
//
//	GET /v1/watch    Server-Sent Events: ?key= or ?prefix=, ?from=REV (or the
//	                 Last-Event-ID header), ?durability=durable|written,
//	                 ?values=text|base64, ?progress=DURATION
//	GET /v1/changes  long-poll JSON batch: the same filters, ?limit=, ?wait=
//	GET /v1/kv/{key}?index=N&wait=DURATION  blocks until the key's mod
//	                 revision passes N (see blockOnKey)

// Bounds of the HTTP feed.
const (
	sseRetry         = time.Second      // the client's reconnection delay
	sseKeepAlive     = 15 * time.Second // a comment when nothing else was sent
	sseDefaultProg   = 10 * time.Second
	sseMinProgress   = 50 * time.Millisecond
	sseWriteTimeout  = 30 * time.Second // a reader that takes none of a write for this long is cut off
	sseBatch         = 1000             // changes read from a watcher at a time
	defaultWait      = 5 * time.Minute
	maxWait          = 10 * time.Minute
	codeCompacted    = "compacted"
	codeTooMany      = "too_many_watchers"
	codeNotSupported = "not_supported"
	valuesText       = "text"
	valuesBase64     = "base64"
)

// watchEvent is one change in JSON.
type watchEvent struct {
	Rev       uint64  `json:"rev,omitempty"`
	Op        string  `json:"op"`
	Key       string  `json:"key"`
	Value     *string `json:"value,omitempty"`
	ExpiresAt int64   `json:"expires_at,omitempty"`
}

// jsonChanges renders a revision's changes; rev is set on each when the
// events of several revisions share a list.
func jsonChanges(cs engine.ChangeSet, values string, withRev bool) []watchEvent {
	out := make([]watchEvent, len(cs.Changes))
	for i, c := range cs.Changes {
		e := watchEvent{Op: "put", Key: string(c.Key), ExpiresAt: c.ExpiresAt}
		if withRev {
			e.Rev = cs.Revision
		}
		if c.Delete {
			e.Op = "del"
		} else {
			v := string(c.Value)
			if values == valuesBase64 {
				v = base64.StdEncoding.EncodeToString(c.Value)
			}
			e.Value = &v
		}
		out[i] = e
	}
	return out
}

// feedParams parses the filter and options a watch request shares with a
// long-poll: key= or prefix= (neither: every key), durability=, values=.
func feedParams(q url.Values) (f watch.Filter, written bool, values string, err error) {
	f.Prefix = true
	switch {
	case q.Has("key") && q.Has("prefix"):
		return f, false, "", badRequest("give key or prefix, not both")
	case q.Has("key"):
		f = watch.Filter{Key: []byte(q.Get("key"))}
		if len(f.Key) == 0 {
			return f, false, "", engine.ErrEmptyKey
		}
	case q.Has("prefix"):
		f.Key = []byte(q.Get("prefix"))
	}
	switch d := q.Get("durability"); d {
	case "", "durable":
	case "written":
		written = true
	default:
		return f, false, "", badRequest("durability must be durable or written, not %q", d)
	}
	switch values = q.Get("values"); values {
	case "":
		values = valuesText
	case valuesText, valuesBase64:
	default:
		return f, false, "", badRequest("values must be text or base64, not %q", values)
	}
	return f, written, values, nil
}

// revParam parses an unsigned revision parameter (absent: 0).
func revParam(q url.Values, name string) (uint64, error) {
	if !q.Has(name) {
		return 0, nil
	}
	n, err := strconv.ParseUint(q.Get(name), 10, 64)
	if err != nil {
		return 0, badRequest("%s must be a revision (an unsigned integer), not %q", name, q.Get(name))
	}
	return n, nil
}

// waitParam parses ?wait= (a Go duration, at most maxWait); absent: def.
func waitParam(q url.Values, def time.Duration) (time.Duration, error) {
	if !q.Has("wait") {
		return def, nil
	}
	d, err := time.ParseDuration(q.Get("wait"))
	if err != nil || d < 0 || d > maxWait {
		return 0, badRequest("wait must be a duration from 0 to %v, such as 30s, not %q", maxWait, q.Get("wait"))
	}
	return d, nil
}

// failFeed answers a feed error: 410 compacted with the oldest revision,
// 503 when too many watch, 501 for a store without a history.
func (s *Server) failFeed(w http.ResponseWriter, err error) {
	var ce *engine.CompactedError
	switch {
	case errors.As(err, &ce):
		writeJSON(w, http.StatusGone, map[string]any{"error": map[string]any{
			"code":               codeCompacted,
			"message":            fmt.Sprintf("revision %d is older than the change history, which starts at %d: read the state again and watch from its revision", ce.Requested, ce.Oldest),
			"oldest_revision":    ce.Oldest,
			"requested_revision": ce.Requested,
		}})
	case errors.Is(err, watch.ErrTooManyWatchers):
		writeJSONError(w, &httpError{http.StatusServiceUnavailable, codeTooMany, "too many watchers (--watch-max)"})
	case errors.Is(err, errNoFeed):
		writeJSONError(w, &httpError{http.StatusNotImplemented, codeNotSupported, err.Error()})
	default:
		s.fail(w, err)
	}
}

// handleWatch streams changes as Server-Sent Events: one event per
// revision ("id: REV", "event: change", data {"rev","time","events"}), a
// progress event ("id: REV", "event: progress") when the position moved
// with nothing to send (every ?progress=, default 10s), a keep-alive
// comment every 15s of silence, and "event: compacted" before it ends if
// the watcher falls behind the history. A request older than the history
// gets 410 compacted. Last-Event-ID (sent by EventSource when it
// reconnects) resumes after that revision and wins over ?from=.
func (s *Server) handleWatch(w http.ResponseWriter, r *http.Request) {
	if s.watch.hub == nil {
		s.failFeed(w, errNoFeed)
		return
	}
	q := r.URL.Query()
	f, written, values, err := feedParams(q)
	if err != nil {
		s.fail(w, err)
		return
	}
	from, err := revParam(q, "from")
	if err != nil {
		s.fail(w, err)
		return
	}
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		n, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			s.fail(w, badRequest("Last-Event-ID must be a revision, not %q", id))
			return
		}
		from = n + 1
	}
	every := sseDefaultProg
	if q.Has("progress") {
		if every, err = time.ParseDuration(q.Get("progress")); err != nil || every < sseMinProgress {
			s.fail(w, badRequest("progress must be a duration of at least %v, not %q", sseMinProgress, q.Get("progress")))
			return
		}
	}
	wt, err := s.watch.hub.Watch(f, from, written)
	if err != nil {
		s.failFeed(w, err)
		return
	}
	defer wt.Close()
	sets, progress, err := wt.Next(sseBatch)
	if err != nil {
		s.failFeed(w, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	bw := bufio.NewWriterSize(w, 32<<10)
	fmt.Fprintf(bw, "retry: %d\n\n", sseRetry.Milliseconds())
	lastID := uint64(0)
	if from > 0 {
		lastID = from - 1
	}
	progressT := time.NewTicker(every)
	defer progressT.Stop()
	keepAlive := time.NewTimer(sseKeepAlive)
	defer keepAlive.Stop()
	reloaded := s.usersReloaded.wait() // a reload ends the stream of a user it removed
	progressDue := true                // the first position goes out at once
	dirty := true                      // written since the last flush (bw may have passed it on to w)
	for {
		dirty = dirty || len(sets) > 0
		for _, cs := range sets {
			data, _ := json.Marshal(struct {
				Rev    uint64       `json:"rev"`
				Time   int64        `json:"time_ms,omitempty"`
				Events []watchEvent `json:"events"`
			}{cs.Revision, cs.Time, jsonChanges(cs, values, false)})
			fmt.Fprintf(bw, "id: %d\nevent: change\ndata: %s\n\n", cs.Revision, data)
			lastID = cs.Revision
		}
		if len(sets) == 0 && progressDue && progress > lastID {
			fmt.Fprintf(bw, "id: %d\nevent: progress\ndata: {\"rev\":%d}\n\n", progress, progress)
			lastID = progress
			progressDue = false
			dirty = true
		}
		if dirty {
			rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
			if bw.Flush() != nil || rc.Flush() != nil {
				return
			}
			dirty = false
			keepAlive.Reset(sseKeepAlive)
		}
		if len(sets) == 0 {
			select {
			case <-wt.Ready():
			case <-reloaded:
				reloaded = s.usersReloaded.wait()
				if !s.httpStillAllowed(r) {
					// The user was removed, or lost what the stream needs.
					fmt.Fprintf(bw, "event: error\ndata: {\"code\":%q,\"error\":%q}\n\n", codeUnauthorized,
						"the users were reloaded and this stream's user may no longer read it")
					rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
					bw.Flush()
					rc.Flush()
					return
				}
			case <-progressT.C:
				progressDue = true
			case <-keepAlive.C:
				bw.WriteString(": keep-alive\n\n")
				dirty = true
			case <-r.Context().Done():
				return
			case <-s.watch.done:
				return
			}
		}
		sets, progress, err = wt.Next(sseBatch)
		if err != nil {
			var ce *engine.CompactedError
			if errors.As(err, &ce) {
				fmt.Fprintf(bw, "event: compacted\ndata: {\"oldest_revision\":%d,\"requested_revision\":%d}\n\n", ce.Oldest, ce.Requested)
				rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
				bw.Flush()
				rc.Flush()
			}
			return
		}
	}
}

// changesPage is the body of GET /v1/changes.
type changesPage struct {
	Events   []watchEvent `json:"events"`
	Next     uint64       `json:"next"`
	Progress uint64       `json:"progress"`
	Oldest   uint64       `json:"oldest"`
}

// handleChanges answers a long-poll: the changes from ?from= (0 or absent:
// the next revision), at most ?limit= (default 1000; whole revisions),
// waiting up to ?wait= (absent: no wait) for one if there are none yet.
// "next" is the from of the following request, "progress" the revision
// through which every matching change has been returned.
func (s *Server) handleChanges(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f, written, values, err := feedParams(q)
	if err != nil {
		s.fail(w, err)
		return
	}
	req := changesRequest{filter: f, written: written, count: defaultChangesCount}
	if req.from, err = revParam(q, "from"); err != nil {
		s.fail(w, err)
		return
	}
	if q.Has("limit") {
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 1 || n > maxChangesCount {
			s.fail(w, badRequest("limit must be 1 to %d, not %q", maxChangesCount, q.Get("limit")))
			return
		}
		req.count = n
	}
	if req.block, err = waitParam(q, 0); err != nil {
		s.fail(w, err)
		return
	}
	req.blocks = req.block > 0
	req.stillAllowed = func() bool { return s.httpStillAllowed(r) }
	req.gone = r.Context().Done()
	sets, next, progress, err := s.pullChanges(req)
	if err != nil {
		s.failFeed(w, err)
		return
	}
	if req.blocks && !s.stillAllowedAfterWait(w, r) {
		return
	}
	page := changesPage{Events: []watchEvent{}, Next: next, Progress: progress, Oldest: s.watch.feed.OldestRevision()}
	for _, cs := range sets {
		page.Events = append(page.Events, jsonChanges(cs, values, true)...)
	}
	writeJSON(w, http.StatusOK, page)
}

// blockOnKey serves the blocking form of GET /v1/kv/{key}, ?index=N with
// ?wait= (default 5m, at most 10m, plus up to a sixteenth of it at random,
// as Consul does): it returns once the key's mod revision passes N (a
// deletion counts), or the wait ends, and sets X-Kvd-Index to the index to
// pass next: the key's mod revision, or, for a key that holds no value, the
// revision read. Only a change of that key wakes it; index 0 does not
// block. An index older than the change history returns at once. It
// reports false if it answered the request itself (an error).
func (s *Server) blockOnKey(w http.ResponseWriter, r *http.Request, key []byte) bool {
	q := r.URL.Query()
	index, err := revParam(q, "index")
	if err != nil {
		s.fail(w, err)
		return false
	}
	wait, err := waitParam(q, defaultWait)
	if err != nil {
		s.fail(w, err)
		return false
	}
	if wait > 0 {
		wait += rand.N(wait/16 + 1)
	}
	current := func() uint64 {
		if e, err := s.store.GetEntry(key); err == nil {
			return e.ModRevision
		}
		return 0
	}
	if s.watch.hub != nil && wait > 0 && index > 0 {
		// The key's changes after index, from the history: a deletion
		// too, and one made between the request's read and this one.
		if wt, err := s.watch.hub.Watch(watch.Filter{Key: key}, index+1, true); err == nil {
			defer wt.Close()
			t := time.NewTimer(wait)
			defer t.Stop()
			reloaded := s.usersReloaded.wait()
		wait:
			for {
				if sets, _, err := wt.Next(0); err != nil || len(sets) > 0 {
					break // changed, or compacted: answer now
				}
				select {
				case <-wt.Ready():
				case <-reloaded:
					if !s.httpStillAllowed(r) {
						break wait // answered 401 below
					}
					reloaded = s.usersReloaded.wait()
				case <-t.C:
					break wait
				case <-r.Context().Done():
					break wait
				case <-s.watch.done:
					break wait
				}
			}
		}
	}
	if !s.stillAllowedAfterWait(w, r) {
		return false
	}
	idx := current()
	if idx == 0 {
		idx = s.store.WrittenRevision()
	}
	w.Header().Set("X-Kvd-Index", strconv.FormatUint(idx, 10))
	return true
}

// stillAllowedAfterWait answers 401 to a request that waited (a long-poll,
// a blocking read) while a reload of the users removed its user or took
// what it needs, and reports whether it may still be answered.
func (s *Server) stillAllowedAfterWait(w http.ResponseWriter, r *http.Request) bool {
	if s.httpStillAllowed(r) {
		return true
	}
	writeJSONError(w, &httpError{http.StatusUnauthorized, codeUnauthorized,
		"the users were reloaded while this request waited, and its user may no longer make it"})
	return false
}
