package server

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/replication"
)

// HTTP API limits for GET /v1/kv.
const (
	initialBodyBuffer = 4 << 10
	defaultListLimit  = 100
	maxListLimit      = 10000
)

// ServeHTTPAPI serves the HTTP/JSON API (and /metrics, /healthz, and
// /debug/pprof/ when Config.Pprof is set) on ln until [Server.Shutdown] or
// [Server.Close] is called; it then returns ErrServerClosed. ln may be a
// TLS listener (tls.NewListener): see http_tls.go.
func (s *Server) ServeHTTPAPI(ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.cfg.HTTPReadHeaderTimeout,
		IdleTimeout:       s.cfg.HTTPIdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ConnContext:       markTLSConn,
	}
	ln = newLimitListener(ln, s.cfg.HTTPMaxConns)
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
//	GET    /v1/kv          ?prefix=&after=&limit=&values=text|base64|none (see listPageBytes)
//	POST   /v1/sync        durability barrier
//	GET    /v1/watch       change stream (SSE), GET /v1/changes long-poll (http_watch.go)
//	GET    /               the live page (http_watch_page.go)
//	GET    /v1/status      JSON status
//	GET    /healthz        200 ("degraded" once the state file was found damaged), or 503 once the log failed
//	GET    /metrics        Prometheus metrics
//
// With users configured, requests need credentials (authz_http.go).
//
// A key is the rest of the path after /v1/kv/ exactly as sent, then
// percent-decoded: it may contain '/', "//", "/./" or "/../", and any byte
// percent-encoded; no path is cleaned or redirected. Write responses carry
// X-Kvd-Revision and X-Kvd-Durable; GET (and HEAD) of a key carries
// X-Kvd-Mod-Revision and X-Kvd-Create-Revision. With ?cas=N a PUT or DELETE is a compare-and-set:
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
	// /v1/kv/{key} is routed by hand, on the path as sent: ServeMux
	// cleans paths ("a//b" to "a/b", "/./" and "/../" removed) and
	// redirects to the clean one, which would store such keys under
	// another key.
	keyHandlers := map[string]http.HandlerFunc{}
	keyRoute := func(method, name string, h http.HandlerFunc) {
		c := s.metrics.requests.WithLabelValues("http", name)
		keyHandlers[method] = func(w http.ResponseWriter, r *http.Request) {
			c.Inc()
			h(w, r)
		}
	}
	keyRoute(http.MethodPut, "put", s.handlePut)
	keyRoute(http.MethodGet, "get", s.handleGet)
	keyRoute(http.MethodHead, "get", s.handleGet)
	keyRoute(http.MethodDelete, "delete", s.handleDelete)
	keyNotAllowed := notAllowed("GET, HEAD, PUT, DELETE")
	route("GET /v1/kv", "list", s.handleList)
	mux.HandleFunc("/v1/kv", notAllowed("GET, HEAD"))
	route("POST /v1/sync", "sync", s.handleSync)
	mux.HandleFunc("/v1/sync", notAllowed("POST"))
	route("GET /{$}", "page", s.handlePage)
	route("GET /v1/watch", "watch", s.handleWatch)
	route("GET /v1/changes", "changes", s.handleChanges)
	route("GET /v1/status", "status", s.handleStatus)
	route("GET /healthz", "healthz", s.handleHealthz)
	s.clusterRoutes(route)
	s.jobRoutes(route)
	metrics := s.metrics.handler()
	route("GET /metrics", "metrics", metrics.ServeHTTP)
	if s.cfg.Pprof {
		mux.Handle("/debug/pprof/", PprofHandler())
	}
	notFound := func(w http.ResponseWriter, r *http.Request) {
		writeJSONError(w, &httpError{http.StatusNotFound, codeNotFound, "no such endpoint: " + r.URL.EscapedPath()})
	}
	mux.HandleFunc("/", notFound)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut && r.Body != http.NoBody {
			// Only PUT reads a body. net/http reads what is left of
			// another's after the handler (to reuse the connection):
			// that too must not drip for ever.
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.HTTPReadHeaderTimeout))
		}
		if !s.authorizeHTTP(w, r) {
			return
		}
		if strings.HasPrefix(r.URL.EscapedPath(), keyPathPrefix) {
			h := keyHandlers[r.Method]
			if h == nil {
				h = keyNotAllowed
			}
			h(w, r)
			return
		}
		if p := r.URL.Path; p != "/" && path.Clean(p) != strings.TrimSuffix(p, "/") {
			// ServeMux would redirect to the clean path: no endpoint
			// has such a path.
			notFound(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// keyPathPrefix starts the path of a key's endpoint: the rest of the path,
// percent-decoded, is the key.
const keyPathPrefix = "/v1/kv/"

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
	// EscapedPath is the path as the client sent it, when that is a valid
	// encoding of r.URL.Path (net/http refused the request otherwise).
	key, err := url.PathUnescape(strings.TrimPrefix(r.URL.EscapedPath(), keyPathPrefix))
	if err != nil {
		return nil, badRequest("bad percent-encoding in the key: %v", err)
	}
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
	if s.redirected(w, r) {
		return
	}
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
	// The buffer grows with what arrives, not with what the client
	// declares: slow clients that declare large bodies hold only what
	// they sent.
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(min(r.ContentLength, initialBodyBuffer)))
	}
	body := newMinRateReader(w, http.MaxBytesReader(w, r.Body, limit), int64(s.cfg.HTTPMinRate), s.cfg.HTTPRateWindow)
	_, err = buf.ReadFrom(body)
	body.done()
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			s.fail(w, engine.ErrValueTooLarge)
		case errors.Is(err, errBodyTooSlow):
			w.Header().Set("Connection", "close")
			s.fail(w, &httpError{http.StatusRequestTimeout, codeBodyTooSlow, fmt.Sprintf(
				"the request body came slower than %d bytes/s over %v", s.cfg.HTTPMinRate, s.cfg.HTTPRateWindow)})
		default:
			s.fail(w, badRequest("reading the body: %v", err))
		}
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
	if r.URL.Query().Has("index") && !s.blockOnKey(w, r, key) {
		return
	}
	reads, err := s.readsFor(w, r)
	if err != nil {
		s.fail(w, err)
		return
	}
	e, err := reads.GetEntry(key)
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
	if r.Method == http.MethodHead {
		return
	}
	newMinRateWriter(w, int64(s.cfg.HTTPMinRate), s.cfg.HTTPRateWindow).Write(e.Value)
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	if s.redirected(w, r) {
		return
	}
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

// GET /v1/kv answers
//
//	{"items":[{"key":"a","value":"...","size":3,"expires_at":1700000000000},...],"more":false}
//
// A key that is not valid UTF-8 comes as key_base64 instead of key; with
// values=none an item has only its key (and expiry). expires_at, in Unix
// milliseconds, is there for a key that has an expiry. A page ends after limit items or
// once its keys and values pass listPageBytes, whichever comes first (it
// always holds at least one item); "more" is true when more keys follow:
// continue with after=<the last key>. The reply is streamed as it is
// encoded, one value in memory at a time, so a page of large values costs
// the server one value, not the page. Values are read one key at a time, so
// a page is not one snapshot: a key written meanwhile may show its old or
// new value, a key deleted meanwhile is left out. A store error after the
// first item ends the reply early, as not valid JSON.
const (
	listPageBytes = 4 << 20
	listScanBatch = 256      // keys read per scan of the store
	listChunk     = 64 << 10 // bytes of a value escaped at a time (values=text)
	listBuffer    = 64 << 10 // reply bytes buffered before a write
)

type listMode uint8

const (
	listBase64 listMode = iota
	listText
	listKeysOnly
)

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	reads, err := s.readsFor(w, r)
	if err != nil {
		s.fail(w, err)
		return
	}
	limit := defaultListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			s.fail(w, badRequest("limit must be an integer from 1 to %d", maxListLimit))
			return
		}
		limit = n
	}
	var mode listMode
	switch v := q.Get("values"); v {
	case "", "base64":
	case "text":
		mode = listText
	case "none":
		mode = listKeysOnly
	default:
		s.fail(w, badRequest("values must be base64, text or none, not %q", v))
		return
	}
	opts := engine.ScanOptions{Limit: listScanBatch, KeysOnly: true}
	if p := q.Get("prefix"); p != "" {
		opts.Prefix = []byte(p)
	}
	if a := q.Get("after"); a != "" {
		opts.Start = append([]byte(a), 0)
	}
	if opts.Prefix != nil && bytes.Compare(opts.Start, opts.Prefix) < 0 {
		opts.Start = opts.Prefix
	}
	keys, err := reads.Scan(opts)
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(newMinRateWriter(w, int64(s.cfg.HTTPMinRate), s.cfg.HTTPRateWindow), listBuffer)
	bw.WriteString(`{"items":[`)
	items, size, more := 0, 0, false
page:
	for {
		for _, kv := range keys {
			if items == limit || size >= listPageBytes {
				more = true
				break page
			}
			value, expiresAt := []byte(nil), kv.ExpiresAt
			if mode != listKeysOnly {
				var e engine.Entry
				e, err = reads.GetEntry(kv.Key)
				value, expiresAt = e.Value, e.ExpiresAt
				if errors.Is(err, engine.ErrNotFound) {
					continue // deleted since the scan
				}
				if err != nil {
					s.log.Warn("http list failed mid-reply", "err", err)
					panic(http.ErrAbortHandler)
				}
			}
			if items > 0 {
				bw.WriteByte(',')
			}
			writeListItem(bw, kv.Key, value, expiresAt, mode)
			items++
			size += len(kv.Key) + len(value)
			if _, err := bw.Write(nil); err != nil {
				return // the client is gone or too slow
			}
		}
		if len(keys) < listScanBatch {
			break
		}
		opts.Start = append(bytes.Clone(keys[len(keys)-1].Key), 0)
		if keys, err = reads.Scan(opts); err != nil {
			s.log.Warn("http list failed mid-reply", "err", err)
			panic(http.ErrAbortHandler)
		}
	}
	bw.WriteString(`],"more":`)
	bw.WriteString(strconv.FormatBool(more))
	bw.WriteString("}\n")
	bw.Flush()
}

// writeListItem writes one item of a GET /v1/kv reply, encoding the value
// as it goes.
func writeListItem(bw *bufio.Writer, key, value []byte, expiresAt int64, mode listMode) {
	if utf8.Valid(key) {
		bw.WriteString(`{"key":`)
		writeJSONString(bw, key)
	} else {
		bw.WriteString(`{"key_base64":"`)
		enc := base64.NewEncoder(base64.StdEncoding, bw)
		enc.Write(key)
		enc.Close()
		bw.WriteByte('"')
	}
	if expiresAt != 0 {
		bw.WriteString(`,"expires_at":`)
		bw.WriteString(strconv.FormatInt(expiresAt, 10))
	}
	switch mode {
	case listKeysOnly:
		bw.WriteByte('}')
		return
	case listText:
		bw.WriteString(`,"value":`)
		writeJSONString(bw, value)
	default:
		bw.WriteString(`,"value":"`)
		enc := base64.NewEncoder(base64.StdEncoding, bw)
		enc.Write(value)
		enc.Close()
		bw.WriteByte('"')
	}
	bw.WriteString(`,"size":`)
	bw.WriteString(strconv.Itoa(len(value)))
	bw.WriteByte('}')
}

// writeJSONString writes b as a JSON string, as encoding/json would (bytes
// that are not UTF-8 become U+FFFD), a chunk at a time: a large value
// costs no copy of its size.
func writeJSONString(bw *bufio.Writer, b []byte) {
	bw.WriteByte('"')
	for len(b) > 0 {
		n := min(len(b), listChunk)
		for i := 1; i < utf8.UTFMax && n < len(b) && !utf8.RuneStart(b[n]); i++ {
			n-- // end the chunk on a character boundary
		}
		q, _ := json.Marshal(string(b[:n]))
		bw.Write(q[1 : len(q)-1])
		b = b[n:]
	}
	bw.WriteByte('"')
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
	// Memory is the memory budget and the process's memory.
	Memory MemoryStatus `json:"memory"`
	// Disk is the state file's size against the data it holds.
	Disk DiskStatus `json:"disk"`
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
	// Cluster is the node's view of its cluster, in cluster mode.
	Cluster *replication.Status `json:"cluster,omitempty"`
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
		Memory:        s.memoryStatus(st.MemtableBytes, st.MaxMemtableBytes),
		Disk:          s.diskStatus(),
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
	if cs, ok := s.clusterStatus(); ok {
		out.Cluster = &cs
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
