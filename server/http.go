package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/kvdstore/kvd/engine"
)

// HTTP API limits for GET /v1/kv.
const (
	defaultListLimit = 100
	maxListLimit     = 10000
)

// ServeHTTPAPI serves the HTTP/JSON API (and /metrics, /healthz, and
// /debug/pprof/ when Config.Pprof is set) on ln until [Server.Shutdown] or
// [Server.Close] is called; it then returns ErrServerClosed.
func (s *Server) ServeHTTPAPI(ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.https[hs] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.https, hs)
		s.mu.Unlock()
	}()
	err := hs.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return ErrServerClosed
	}
	return err
}

// Handler returns the HTTP API as an http.Handler:
//
//	PUT    /v1/kv/{key}    raw body; ?durability=sync|async, ?cas=N, ?ttl=DURATION
//	GET    /v1/kv/{key}    raw body; 404 if missing
//	DELETE /v1/kv/{key}    ?durability=sync|async, ?cas=N
//	GET    /v1/kv          ?prefix=&after=&limit=&values=text|base64
//	POST   /v1/sync        durability barrier
//	GET    /v1/status      JSON status
//	GET    /healthz        200 ("degraded" once the state file was found damaged), or 503 once the log failed
//	GET    /metrics        Prometheus metrics
//
// A key is the rest of the path after /v1/kv/, percent-decoded: it may
// contain '/'. Write responses carry X-Kvd-Revision and X-Kvd-Durable;
// GET (and HEAD) of a key carries X-Kvd-Mod-Revision and
// X-Kvd-Create-Revision. With ?cas=N a PUT or DELETE is a compare-and-set:
// it writes only if the key's mod revision is N (0: only if the key holds
// no value), checked when the store applies it; otherwise it answers 409
// revision_mismatch with the key's current mod revision in the error's
// mod_revision field and in X-Kvd-Mod-Revision (0 if it holds no value).
//
// ?ttl makes the key expire after a Go duration (30s, 1500ms, 2h45m; at
// least 1ms) from when the server reads the request; a PUT without it
// clears the key's expiry, as Redis's SET does. It cannot be combined with
// ?cas. GET of a key that has an expiry carries X-Kvd-Expires-At (Unix
// milliseconds) and X-Kvd-TTL-Ms (milliseconds left); the list gives it as
// expires_at. An expired key is not found.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	route := func(pattern, name string, h http.HandlerFunc) {
		c := s.metrics.requests.WithLabelValues("http", name)
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			c.Inc()
			h(w, r)
		})
	}
	notAllowed := func(allow string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeJSONError(w, &httpError{http.StatusMethodNotAllowed, codeMethodNotAllowed,
				r.Method + " is not allowed here; allowed: " + allow})
		}
	}
	route("PUT /v1/kv/{key...}", "put", s.handlePut)
	route("GET /v1/kv/{key...}", "get", s.handleGet)
	route("DELETE /v1/kv/{key...}", "delete", s.handleDelete)
	mux.HandleFunc("/v1/kv/{key...}", notAllowed("GET, HEAD, PUT, DELETE"))
	route("GET /v1/kv", "list", s.handleList)
	mux.HandleFunc("/v1/kv", notAllowed("GET, HEAD"))
	route("POST /v1/sync", "sync", s.handleSync)
	mux.HandleFunc("/v1/sync", notAllowed("POST"))
	route("GET /v1/status", "status", s.handleStatus)
	route("GET /healthz", "healthz", s.handleHealthz)
	metrics := s.metrics.handler()
	route("GET /metrics", "metrics", metrics.ServeHTTP)
	if s.cfg.Pprof {
		mux.Handle("/debug/pprof/", PprofHandler())
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSONError(w, &httpError{http.StatusNotFound, codeNotFound, "no such endpoint: " + r.URL.Path})
	})
	return mux
}

// PprofHandler serves net/http/pprof under /debug/pprof/, for a separate
// listener.
func PprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.Encode(v)
}

// errorBody is the "error" object of an error response.
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// ModRevision is the key's current mod revision in a
	// revision_mismatch (0: the key holds no value).
	ModRevision *uint64 `json:"mod_revision,omitempty"`
}

func writeJSONError(w http.ResponseWriter, he *httpError) {
	writeJSON(w, he.status, map[string]errorBody{"error": {Code: he.code, Message: he.message}})
}

// writeRevisionMismatch answers a compare-and-set that expected mod
// revision expected of a key whose mod revision was current: 409 with
// current in the body and in X-Kvd-Mod-Revision.
func writeRevisionMismatch(w http.ResponseWriter, expected, current uint64) {
	w.Header().Set("X-Kvd-Mod-Revision", strconv.FormatUint(current, 10))
	writeJSON(w, http.StatusConflict, map[string]errorBody{"error": {
		Code:        codeRevisionMismatch,
		Message:     fmt.Sprintf("the key's mod revision is %d, not %d", current, expected),
		ModRevision: &current,
	}})
}

func (s *Server) fail(w http.ResponseWriter, err error) {
	he := httpErrorFor(err)
	if he.status >= 500 {
		s.log.Warn("http request failed", "code", he.code, "err", err)
	}
	writeJSONError(w, he)
}

// pathKey returns the key of a /v1/kv/{key...} request, checked against
// the limits.
func (s *Server) pathKey(r *http.Request) ([]byte, error) {
	key := r.PathValue("key")
	switch {
	case key == "":
		return nil, engine.ErrEmptyKey
	case len(key) > s.cfg.MaxKeySize:
		return nil, engine.ErrKeyTooLarge
	}
	return []byte(key), nil
}

func durabilityParam(r *http.Request) (engine.Durability, error) {
	v := r.URL.Query().Get("durability")
	if v == "" {
		return engine.DurabilityDefault, nil
	}
	d, ok := parseDurability([]byte(v))
	if !ok {
		return 0, badRequest("durability must be sync, async or default, not %q", v)
	}
	return d, nil
}

// casParam returns the expected mod revision of a compare-and-set
// (?cas=N), and whether the request asks for one.
func casParam(r *http.Request) (uint64, bool, error) {
	q := r.URL.Query()
	if !q.Has("cas") {
		return 0, false, nil
	}
	v := q.Get("cas")
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, false, badRequest("cas must be a mod revision (an unsigned integer; 0: only if absent), not %q", v)
	}
	return n, true, nil
}

// ttlParam returns the expiry time (Unix ms) that ?ttl=DURATION asks for,
// or 0 without one.
func ttlParam(r *http.Request) (int64, error) {
	q := r.URL.Query()
	if !q.Has("ttl") {
		return 0, nil
	}
	v := q.Get("ttl")
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Millisecond {
		return 0, badRequest("ttl must be a duration of at least 1ms, such as 30s, 1500ms or 2h, not %q", v)
	}
	at, ok := expireTime(d.Milliseconds(), unitMillis)
	if !ok {
		return 0, badRequest("ttl %q is too long", v)
	}
	return at, nil
}

// writeResult is the JSON body of a write response.
type writeResult struct {
	Revision uint64 `json:"revision"`
	Durable  bool   `json:"durable"`
	Deleted  *bool  `json:"deleted,omitempty"`
}

// writeWritten answers a committed write with its revision and whether it
// is durable yet.
func (s *Server) writeWritten(w http.ResponseWriter, rev uint64, deleted *bool) {
	durable := s.store.DurableRevision() >= rev
	w.Header().Set("X-Kvd-Revision", strconv.FormatUint(rev, 10))
	w.Header().Set("X-Kvd-Durable", strconv.FormatBool(durable))
	writeJSON(w, http.StatusOK, writeResult{Revision: rev, Durable: durable, Deleted: deleted})
}

func (s *Server) handlePut(w http.ResponseWriter, r *http.Request) {
	key, err := s.pathKey(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	d, err := durabilityParam(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	expected, cas, err := casParam(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	expiresAt, err := ttlParam(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	if cas && expiresAt != 0 {
		s.fail(w, badRequest("ttl and cas cannot be combined"))
		return
	}
	limit := int64(s.cfg.MaxValueSize)
	if r.ContentLength > limit {
		// Refuse from the declared length, without reading the body.
		s.fail(w, engine.ErrValueTooLarge)
		return
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit)); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.fail(w, engine.ErrValueTooLarge)
			return
		}
		s.fail(w, badRequest("reading the body: %v", err))
		return
	}
	var b engine.Batch
	if cas {
		b.CompareAndPut(key, buf.Bytes(), expected)
		s.writeCAS(w, r, &b, expected, d, nil)
		return
	}
	if expiresAt != 0 {
		b.PutExpiresAt(key, buf.Bytes(), 0, expiresAt)
	} else {
		b.Put(key, buf.Bytes())
	}
	start := time.Now()
	c, err := s.store.WriteContext(r.Context(), &b, writeOptions(d))
	s.observeCommit(c, start)
	if err != nil {
		s.fail(w, err)
		return
	}
	s.writeWritten(w, c.Revision(), nil)
}

// writeCAS commits b, one compare-and-set expecting mod revision expected,
// and answers with the write response (deleted, if not nil, for a delete)
// or, if the key's mod revision was another, 409 revision_mismatch.
func (s *Server) writeCAS(w http.ResponseWriter, r *http.Request, b *engine.Batch, expected uint64, d engine.Durability, deleted *bool) {
	start := time.Now()
	c, err := s.store.WriteContext(r.Context(), b, writeOptions(d))
	s.observeCommit(c, start)
	if err != nil {
		s.fail(w, err)
		return
	}
	if res := b.Results()[0]; !res.Applied {
		writeRevisionMismatch(w, expected, res.ModRevision)
		return
	}
	s.writeWritten(w, c.Revision(), deleted)
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	key, err := s.pathKey(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	e, err := s.store.GetEntry(key)
	if err != nil {
		s.fail(w, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(len(e.Value)))
	h.Set("X-Kvd-Mod-Revision", strconv.FormatUint(e.ModRevision, 10))
	h.Set("X-Kvd-Create-Revision", strconv.FormatUint(e.CreateRevision, 10))
	if e.ExpiresAt != 0 {
		h.Set("X-Kvd-Expires-At", strconv.FormatInt(e.ExpiresAt, 10))
		h.Set("X-Kvd-TTL-Ms", strconv.FormatInt(max(e.ExpiresAt-time.Now().UnixMilli(), 0), 10))
	}
	w.Write(e.Value)
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	key, err := s.pathKey(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	d, err := durabilityParam(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	expected, cas, err := casParam(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	if cas {
		// Applied, it deleted the key unless it expected none.
		deleted := expected != 0
		var b engine.Batch
		b.CompareAndDelete(key, expected)
		s.writeCAS(w, r, &b, expected, d, &deleted)
		return
	}
	start := time.Now()
	// A missing key needs no write: the answer is the revision whose state
	// the lookup saw, at the latest.
	found := false
	if err := s.store.GetEach([][]byte{key}, func(_ int, _ []byte, f bool) { found = f }); err != nil {
		s.fail(w, err)
		return
	}
	if !found {
		deleted := false
		s.writeWritten(w, s.store.WrittenRevision(), &deleted)
		return
	}
	// The key may be gone by the time the delete applies: its result says.
	var b engine.Batch
	b.Delete(key)
	c, err := s.store.WriteContext(r.Context(), &b, writeOptions(d))
	s.observeCommit(c, start)
	if err != nil {
		s.fail(w, err)
		return
	}
	deleted := b.Results()[0].Applied
	s.writeWritten(w, c.Revision(), &deleted)
}

// listItem is one pair of GET /v1/kv. A key that is not valid UTF-8 comes
// as key_base64 instead of key.
type listItem struct {
	Key       string `json:"key,omitempty"`
	KeyBase64 []byte `json:"key_base64,omitempty"`
	Value     any    `json:"value"`
	Size      int    `json:"size"`
	ExpiresAt int64  `json:"expires_at,omitempty"` // Unix ms; absent: no expiry
}

type listResult struct {
	Items []listItem `json:"items"`
	// More is true when more keys follow; continue with after=<last key>.
	More bool `json:"more"`
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := defaultListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			s.fail(w, badRequest("limit must be an integer from 1 to %d", maxListLimit))
			return
		}
		limit = n
	}
	text := false
	switch v := q.Get("values"); v {
	case "", "base64":
	case "text":
		text = true
	default:
		s.fail(w, badRequest("values must be base64 or text, not %q", v))
		return
	}
	opts := engine.ScanOptions{Limit: limit + 1}
	if p := q.Get("prefix"); p != "" {
		opts.Prefix = []byte(p)
	}
	if a := q.Get("after"); a != "" {
		opts.Start = append([]byte(a), 0)
	}
	if opts.Prefix != nil && bytes.Compare(opts.Start, opts.Prefix) < 0 {
		opts.Start = opts.Prefix
	}
	kvs, err := s.store.Scan(opts)
	if err != nil {
		s.fail(w, err)
		return
	}
	res := listResult{Items: make([]listItem, 0, min(len(kvs), limit))}
	if len(kvs) > limit {
		kvs, res.More = kvs[:limit], true
	}
	for _, kv := range kvs {
		it := listItem{Size: len(kv.Value), ExpiresAt: kv.ExpiresAt}
		if utf8.Valid(kv.Key) {
			it.Key = string(kv.Key)
		} else {
			it.KeyBase64 = kv.Key
		}
		if text {
			it.Value = string(kv.Value)
		} else {
			it.Value = kv.Value
		}
		res.Items = append(res.Items, it)
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) handleSync(w http.ResponseWriter, _ *http.Request) {
	if _, err := s.syncWithin(0); err != nil {
		s.fail(w, err)
		return
	}
	rev := s.store.DurableRevision()
	w.Header().Set("X-Kvd-Revision", strconv.FormatUint(rev, 10))
	w.Header().Set("X-Kvd-Durable", "true")
	writeJSON(w, http.StatusOK, map[string]uint64{"durable_revision": rev})
}

// Status is the JSON body of GET /v1/status.
type Status struct {
	Version       string    `json:"version"`
	CommitMode    string    `json:"commit_mode"`
	FlushInterval string    `json:"flush_interval"`
	Revisions     Revisions `json:"revisions"`
	Fsync         FsyncStat `json:"fsync"`
	Unsynced      Unsynced  `json:"unsynced"`
	WALBytes      int64     `json:"wal_bytes"`
	WALSegments   int       `json:"wal_segments"`
	MemtableBytes int64     `json:"memtable_bytes"`
	Checkpoints   uint64    `json:"checkpoints"`
	// Recovery is what the start-up cut from the log to recover.
	Recovery         Recovery `json:"recovery"`
	UptimeSeconds    float64  `json:"uptime_seconds"`
	ConnectedClients int      `json:"connected_clients"`
	// LogError is set once the write-ahead log failed.
	LogError string `json:"log_error,omitempty"`
	// LogWriteFailures counts the log writes that failed and were refused
	// without failing the log (a full disk, say), LogRecordsRefused the
	// writes refused with them; LogLastWriteError is the latest such error.
	LogWriteFailures  uint64 `json:"log_write_failures"`
	LogRecordsRefused uint64 `json:"log_records_refused"`
	LogLastWriteError string `json:"log_last_write_error,omitempty"`
	// CheckpointFailures counts checkpoints that failed and will be tried
	// again; CheckpointError is set while the last one failed.
	CheckpointFailures uint64 `json:"checkpoint_failures"`
	CheckpointError    string `json:"checkpoint_error,omitempty"`
	// Degraded is set once a read found the state file damaged:
	// StateCorruptions counts those reads, StateLastCorruption and
	// StateLastCorruptionTime (RFC 3339) tell the last one. Reads of the
	// damaged keys fail; a restart does not repair them (see "When the
	// state file is damaged" in README.md).
	Degraded                bool   `json:"degraded"`
	StateCorruptions        uint64 `json:"state_corruptions"`
	StateLastCorruption     string `json:"state_last_corruption,omitempty"`
	StateLastCorruptionTime string `json:"state_last_corruption_time,omitempty"`
}

// Revisions are the store's revision counters: written (visible to
// reads) >= durable (fsynced) >= checkpointed (in the state file).
type Revisions struct {
	Written      uint64 `json:"written"`
	Durable      uint64 `json:"durable"`
	Checkpointed uint64 `json:"checkpointed"`
}

// Recovery reports what the start-up cut from the log: torn or unsynced
// records a crash left, or damaged records the state no longer needed.
type Recovery struct {
	Cuts    int    `json:"cuts"`
	Bytes   int64  `json:"bytes"`
	Records int    `json:"records"`
	Reason  string `json:"reason,omitempty"`
}

// FsyncStat counts the write-ahead log's fsyncs since the store opened.
type FsyncStat struct {
	Count           uint64  `json:"count"`
	Records         uint64  `json:"records"`
	RecordsPerFsync float64 `json:"records_per_fsync"`
	// MaxSeconds is the slowest fsync since the store opened.
	MaxSeconds float64 `json:"max_seconds"`
}

// Unsynced tells how long write-ahead log records stay written but not
// fsynced: what a power loss can take in async mode. Ages count from a
// record's write and include sync records, so they bound from above the age
// of the acknowledged async writes at risk.
type Unsynced struct {
	// OldestAgeSeconds is the age now of the oldest record not yet fsynced
	// (0 when every record is).
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	// MaxAgeLastMinuteSeconds is the longest a record stayed unsynced over
	// the last minute, the current OldestAgeSeconds included.
	MaxAgeLastMinuteSeconds float64 `json:"max_age_last_minute_seconds"`
	// MaxAgeSeconds is the same since the store opened.
	MaxAgeSeconds float64 `json:"max_age_seconds"`
}

// Status returns the server's status as GET /v1/status reports it.
func (s *Server) Status() Status {
	st := s.store.Stats()
	out := Status{
		Version:       s.cfg.Version,
		CommitMode:    st.CommitMode.String(),
		FlushInterval: s.store.FlushInterval().String(),
		Revisions: Revisions{
			Written:      st.WrittenRevision,
			Durable:      st.DurableRevision,
			Checkpointed: st.CheckpointedRevision,
		},
		Fsync: FsyncStat{Count: st.Fsyncs, Records: st.RecordsSynced, RecordsPerFsync: recordsPerFsync(st),
			MaxSeconds: st.MaxFsync.Seconds()},
		Unsynced: Unsynced{
			OldestAgeSeconds:        st.OldestUnsynced.Seconds(),
			MaxAgeLastMinuteSeconds: st.MaxUnsyncedLastMinute.Seconds(),
			MaxAgeSeconds:           st.MaxUnsyncedSinceOpen.Seconds(),
		},
		WALBytes:      st.WALBytes,
		WALSegments:   st.WALSegments,
		MemtableBytes: st.MemtableBytes,
		Checkpoints:   st.Checkpoints,
		Recovery: Recovery{Cuts: st.Recovery.Cuts, Bytes: st.Recovery.Bytes, Records: st.Recovery.Records,
			Reason: st.Recovery.Reason},
		UptimeSeconds:    time.Since(s.started).Seconds(),
		ConnectedClients: s.Clients(),

		LogWriteFailures:   st.LogWriteFailures,
		LogRecordsRefused:  st.LogRecordsRefused,
		CheckpointFailures: st.CheckpointFailures,
	}
	if st.Err != nil {
		out.LogError = st.Err.Error()
	}
	if st.LogWriteErr != nil {
		out.LogLastWriteError = st.LogWriteErr.Error()
	}
	if st.CheckpointErr != nil {
		out.CheckpointError = st.CheckpointErr.Error()
	}
	if st.Corruptions > 0 {
		out.Degraded = true
		out.StateCorruptions = st.Corruptions
		out.StateLastCorruption = st.CorruptionErr.Error()
		out.StateLastCorruptionTime = st.CorruptionTime.UTC().Format(time.RFC3339Nano)
	}
	return out
}

func (s *Server) handleStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Status())
}

// handleHealthz answers 503 once the log failed, which a restart cures.
// A damaged state file (Stats.Corruptions) a restart does not cure, and
// the keys elsewhere in it still read: it answers 200 then, its body
// "degraded" and the last damage, so that a liveness probe does not
// restart kvd in a loop; status and metrics report it for an alert.
func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	st := s.store.Stats()
	if err := st.Err; err != nil {
		s.fail(w, errors.Join(engine.ErrLogFailed, err))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if st.Corruptions > 0 {
		io.WriteString(w, "degraded: "+strconv.FormatUint(st.Corruptions, 10)+
			" reads found the state file damaged, the last: "+oneLine(st.CorruptionErr.Error())+"\n")
		return
	}
	io.WriteString(w, "ok\n")
}
