// Package server serves a kvd store over two request-response protocols:
// RESP (the Redis protocol, so that redis-cli, redis-benchmark and any Redis
// client work) and HTTP/JSON.
//
// A [Server] is shaped like [net/http.Server]: create it with [New], call
// [Server.ServeRESP] and [Server.ServeHTTPAPI] with listeners (each blocks
// until the server stops), and stop it with [Server.Shutdown], which stops
// accepting connections, lets in-flight requests finish and then returns.
// The server does not own the store: close it after Shutdown returns.
//
// Errors from the store are translated into protocol errors at this
// boundary: RESP replies such as "-ERR value too large", HTTP responses with
// a status and a JSON body {"error":{"code":"value_too_large",...}}.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvdstore/kvd/auth"
	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/jobs"
	"github.com/kvdstore/kvd/replication"
	"github.com/kvdstore/kvd/watch"
)

// Store is what the server needs from a key-value store. *engine.DB
// implements it. Every method must be safe for concurrent use; the server
// may reuse key and value slices after a call returns, and owns the slices a
// call returns.
type Store interface {
	// GetEntry returns the value of key with its create and mod
	// revisions and its expiry, or an error wrapping engine.ErrNotFound.
	// Like every read, it does not find a key that has expired.
	GetEntry(key []byte) (engine.Entry, error)
	// GetEach looks keys up in one consistent state, without copying
	// their values (GET, MGET, EXISTS).
	GetEach(keys [][]byte, fn func(i int, value []byte, found bool)) error
	// Every write is a batch of operations (engine.Batch), applied
	// atomically at one revision; after it is acknowledged the batch's
	// Results hold the outcome of each operation (a conditional put, an
	// increment, whether a delete found its key), evaluated when the store
	// applied it. The store decides, from wo and its commit mode, whether
	// the write is acknowledged once durable or once written: the
	// returned Commit says which.
	//
	// WriteContext commits b and waits for its acknowledgement; ctx bounds
	// the wait before b is submitted. TrySubmit queues b without waiting
	// and returns its Commit, whose waits the caller runs: the event loop
	// commits many clients' writes this way, one log write and one fsync
	// for all. Over its memory bound the store returns engine.ErrThrottled
	// instead of blocking: the loop then commits the batch with
	// WriteContext on a worker goroutine and goes on serving reads.
	WriteContext(ctx context.Context, b *engine.Batch, wo engine.WriteOptions) (engine.Commit, error)
	TrySubmit(b *engine.Batch, wo engine.WriteOptions) (engine.Commit, error)
	// Scan returns pairs in ascending key order.
	Scan(o engine.ScanOptions) ([]engine.KV, error)
	// Count returns the number of live keys.
	Count() (int, error)
	// Sync returns once every write committed before the call is durable.
	Sync() error
	SetCommitMode(m engine.CommitMode)
	CommitMode() engine.CommitMode
	SetFlushInterval(d time.Duration) error
	FlushInterval() time.Duration
	// WrittenRevision is the last revision written: reads see its state
	// or a later one. DurableRevision is the last revision known to be
	// fsynced. Both are cheap, for every write response.
	WrittenRevision() uint64
	DurableRevision() uint64
	Stats() engine.Stats
}

// Config configures a [Server]. The zero value is valid: New fills in every
// zero field with its default.
type Config struct {
	// MaxKeySize and MaxValueSize bound keys and values (defaults 32 KiB,
	// the engine's limit, and 16 MiB). They should match the store's limits: the server refuses
	// larger arguments before reading them into memory.
	MaxKeySize   int
	MaxValueSize int
	// MaxRequestSize bounds the total size of the arguments of one RESP
	// command, such as an MSET (default: 64 MiB, and at least
	// MaxKeySize+MaxValueSize plus 1 MiB).
	MaxRequestSize int
	// MaxClients bounds the number of RESP connections (default 10000).
	// A connection over the limit gets "-ERR max number of clients reached"
	// and is closed, as Redis does.
	MaxClients int
	// RESPIdleTimeout closes a RESP connection that sent nothing and was
	// sent nothing for this long, as Redis's "timeout" does (CONFIG SET
	// timeout changes it at run time). Zero, the default as in Redis,
	// keeps idle connections open: connection pools hold them.
	RESPIdleTimeout time.Duration
	// RESPPendingBytes bounds the memory all RESP connections together
	// hold for requests not yet complete: a value being sent, a pipeline
	// cut mid-request (default 128 MiB, 8 values of the largest size;
	// negative: no bound). A connection whose partial request would pass
	// it is refused: it gets "-ERR incomplete requests hold too much
	// memory..." and is closed. It is the newcomer that is refused, not
	// the connections holding the budget, whose requests may be nearly
	// done; RESPIdleTimeout and the client's own timeouts free it from
	// clients that stall.
	RESPPendingBytes int
	// RESPIO chooses how RESP connections are served: "loop" (the default
	// on Linux) multiplexes them all on one event-loop goroutine over
	// epoll, so that unpipelined requests need no goroutine wake-ups and
	// the writes of many clients share one log write and one fsync. As
	// with Redis's appendfsync always, the loop serves nothing while it
	// fsyncs: on a slow disk, reads wait behind sync writes. Writes that
	// must wait for the store to free memory wait on worker goroutines,
	// not on the loop.
	// "goroutines" serves each connection in its own goroutine, so reads
	// never wait for another client's fsync, at a higher cost per request
	// (the default, and only choice, elsewhere).
	RESPIO string
	// HTTPMaxConns bounds the number of open HTTP connections (default
	// 4096). Past it the listener accepts no more until one closes; new
	// connections wait in the kernel's backlog.
	HTTPMaxConns int
	// HTTPReadHeaderTimeout bounds the time to read a request's line and
	// headers (default 10s), and for a request other than PUT, whose body
	// no handler reads, the time to receive the rest of it as well;
	// HTTPIdleTimeout the time a keep-alive connection waits for its next
	// request (default 2m).
	HTTPReadHeaderTimeout time.Duration
	HTTPIdleTimeout       time.Duration
	// HTTPMinRate is the slowest, in bytes per second, a client may send a
	// request body or read a response (default 1024; negative disables),
	// measured over each HTTPRateWindow (default 10s): a client that moves
	// fewer than HTTPMinRate*HTTPRateWindow bytes in a window is cut off;
	// a body that comes too slowly gets 408 body_too_slow.
	HTTPMinRate    int
	HTTPRateWindow time.Duration
	// MaxMemory is the memory budget the process was given (kvd's
	// --max-memory), which INFO memory, /v1/status and /metrics report
	// beside the memory in use. The server does not enforce it: whoever
	// sets it derives the store's memtable bound, RESPPendingBytes and the
	// Go runtime's memory limit from it. 0 (not set) is reported as 0.
	MaxMemory int64
	// Jobs runs the background jobs served by /v1/jobs, JOB, BGSAVE and
	// LASTSAVE (see http_jobs.go); nil: those answer that jobs are not
	// enabled. The server does not own it: close it after Shutdown.
	Jobs *jobs.Manager
	// Watch bounds the change feed's watchers (see package watch):
	// kvd's --watch-max and --watch-buffer.
	Watch watch.Options
	// Pprof serves net/http/pprof under /debug/pprof/ on the HTTP listener.
	Pprof bool
	// Version is reported by INFO, HELLO and /v1/status.
	Version string
	// Metrics collects Prometheus metrics; nil means New creates one.
	Metrics *Metrics
	// Logger receives connection and error logs; nil discards them.
	Logger *slog.Logger
	// Users are who may connect and what each may do (authz.go); nil:
	// everyone may do everything, unauthenticated. LoadUsers, if set,
	// loads them anew for ReloadUsers (ACL LOAD, kvd on SIGHUP).
	Users     *auth.Users
	LoadUsers func() (*auth.Users, error)
	// MetricsAuth puts /metrics behind authentication (any user may read
	// it) when Users are set; otherwise it is open, as /healthz and
	// /readyz always are.
	MetricsAuth bool
	// AuthFailDelay is how much longer each failed authentication from an
	// address waits before its answer than the one before it did, within
	// a minute, up to 20 times as long (default 100ms; negative: no wait).
	AuthFailDelay time.Duration
}

// Defaults for the zero fields of Config.
const (
	DefaultMaxKeySize   = engine.MaxKeyLimit
	DefaultMaxValueSize = 16 << 20
	DefaultMaxClients   = 10000

	DefaultRESPPendingBytes = 128 << 20

	DefaultHTTPMaxConns          = 4096
	DefaultHTTPReadHeaderTimeout = 10 * time.Second
	DefaultHTTPIdleTimeout       = 2 * time.Minute
	DefaultHTTPMinRate           = 1024
	DefaultHTTPRateWindow        = 10 * time.Second
	defaultMaxRequest            = 64 << 20
)

// Server serves a Store over RESP and HTTP. Its methods are safe for
// concurrent use.
type Server struct {
	store   Store
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
	started time.Time
	cmds    map[string]*respCommand
	setCmd  *respCommand // cmds["set"], counted once per batch of plain SETs
	cursors *cursorTable
	pending *pendingBudget
	// On a cluster: asyncWrites is the store, whose writes the event loop
	// commits without a goroutine waiting on each; localReads reads this
	// node's state as it is, for reads whose barrier the event loop has
	// waited for. Both are nil on a single node.
	asyncWrites asyncWriter
	localReads  Store
	// idleTimeout is RESPIdleTimeout, in nanoseconds, as CONFIG SET
	// timeout last set it.
	idleTimeout atomic.Int64

	closing atomic.Bool
	nextID  atomic.Int64

	// shutdownReq is closed, once, by SHUTDOWN (see ShutdownRequested).
	shutdownReq  chan struct{}
	shutdownOnce sync.Once

	// stats for INFO
	totalConns    atomic.Int64
	totalCommands atomic.Int64
	rejected      atomic.Int64

	mu        sync.Mutex
	listeners map[*net.Listener]struct{}
	conns     map[*respConn]struct{}
	https     map[*http.Server]struct{}
	connsDone *sync.Cond // signalled when a connection goes away
	// bg counts goroutines the server started outside connections
	// (WAITAOF waiters); Shutdown waits for them.
	bg sync.WaitGroup
	// loop serves RESP connections when cfg.RESPIO is "loop"; started by
	// the first ServeRESP, under mu.
	loop *eventLoop
	// watch is the change feed (watch.go).
	watch watchState
	// users are Config.Users, then what ReloadUsers loaded; authFails
	// slows down repeated failed authentications (authz.go).
	users atomic.Pointer[auth.Users]
	// usersReloaded fires on each reload of the users (authz.go).
	usersReloaded reloadNotice
	authFails     *authLimiter
}

// New returns a Server for store. It validates cfg and reports every bad
// field at once.
func New(store Store, cfg Config) (*Server, error) {
	if store == nil {
		return nil, errors.New("server: nil store")
	}
	var errs []error
	check := func(name string, v, def int) int { return orDefault(&errs, name, v, def) }
	cfg.MaxKeySize = check("MaxKeySize", cfg.MaxKeySize, DefaultMaxKeySize)
	cfg.MaxValueSize = check("MaxValueSize", cfg.MaxValueSize, DefaultMaxValueSize)
	cfg.MaxClients = check("MaxClients", cfg.MaxClients, DefaultMaxClients)
	if cfg.MaxMemory < 0 {
		errs = append(errs, fmt.Errorf("server: MaxMemory must not be negative (got %d)", cfg.MaxMemory))
	}
	if cfg.RESPIdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("server: RESPIdleTimeout must not be negative (got %v)", cfg.RESPIdleTimeout))
	}
	switch {
	case cfg.RESPPendingBytes == 0:
		cfg.RESPPendingBytes = DefaultRESPPendingBytes
	case cfg.RESPPendingBytes < 0:
		cfg.RESPPendingBytes = math.MaxInt
	}
	cfg.HTTPMaxConns = check("HTTPMaxConns", cfg.HTTPMaxConns, DefaultHTTPMaxConns)
	checkDur := func(name string, v, def time.Duration) time.Duration { return orDefault(&errs, name, v, def) }
	cfg.HTTPReadHeaderTimeout = checkDur("HTTPReadHeaderTimeout", cfg.HTTPReadHeaderTimeout, DefaultHTTPReadHeaderTimeout)
	cfg.HTTPIdleTimeout = checkDur("HTTPIdleTimeout", cfg.HTTPIdleTimeout, DefaultHTTPIdleTimeout)
	cfg.HTTPRateWindow = checkDur("HTTPRateWindow", cfg.HTTPRateWindow, DefaultHTTPRateWindow)
	switch {
	case cfg.HTTPMinRate == 0:
		cfg.HTTPMinRate = DefaultHTTPMinRate
	case cfg.HTTPMinRate < 0:
		cfg.HTTPMinRate = 0 // disabled
	}
	minRequest := cfg.MaxKeySize + cfg.MaxValueSize + 1<<20
	cfg.MaxRequestSize = check("MaxRequestSize", cfg.MaxRequestSize, max(defaultMaxRequest, minRequest))
	if cfg.MaxRequestSize < minRequest && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("server: MaxRequestSize %d is below MaxKeySize+MaxValueSize+1MiB (%d)",
			cfg.MaxRequestSize, minRequest))
	}
	switch cfg.RESPIO {
	case "":
		cfg.RESPIO = defaultRESPIO
	case "goroutines":
	case "loop":
		if !haveEventLoop {
			errs = append(errs, errors.New(`server: RESPIO "loop" needs Linux (epoll); use "goroutines"`))
		}
	default:
		errs = append(errs, fmt.Errorf(`server: RESPIO must be "loop" or "goroutines" (got %q)`, cfg.RESPIO))
	}
	if cfg.LoadUsers != nil && cfg.Users == nil {
		errs = append(errs, errors.New("server: LoadUsers needs Users, the users loaded first"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.Version == "" {
		cfg.Version = "devel"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := cfg.Metrics
	if m == nil {
		m = NewMetrics()
	}
	s := &Server{
		store:     store,
		cfg:       cfg,
		log:       log,
		metrics:   m,
		started:   time.Now(),
		cursors:   newCursorTable(maxCursors, maxCursorBytes, maxConnCursors, maxConnCursorBytes),
		listeners: make(map[*net.Listener]struct{}),
		conns:     make(map[*respConn]struct{}),
		https:     make(map[*http.Server]struct{}),

		shutdownReq: make(chan struct{}),
	}
	s.pending = &pendingBudget{limit: int64(cfg.RESPPendingBytes)}
	s.users.Store(cfg.Users)
	s.authFails = newAuthLimiter(cfg.AuthFailDelay)
	s.idleTimeout.Store(int64(cfg.RESPIdleTimeout))
	s.connsDone = sync.NewCond(&s.mu)
	s.cmds = s.commandTable()
	s.setCmd = s.cmds["set"]
	m.register(s)
	s.initWatch()
	if cr, ok := store.(clusterReads); ok {
		s.localReads = cr.At(replication.ReadOptions{Consistency: replication.Stale})
	}
	if aw, ok := store.(asyncWriter); ok {
		s.asyncWrites = aw
	}
	return s, nil
}

// trackListener adds or removes ln from the set Shutdown closes. Adding
// fails once the server is closing.
func (s *Server) trackListener(ln *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closing.Load() {
			return false
		}
		s.listeners[ln] = struct{}{}
	} else {
		delete(s.listeners, ln)
	}
	return true
}

// Shutdown stops the server gracefully: it closes every listener, closes
// idle RESP connections, waits for connections in the middle of a request
// (or pipeline) to send their replies and close, and shuts down the HTTP
// servers the same way. If ctx ends first, Shutdown closes the remaining
// connections and returns ctx's error. Serve methods then return
// ErrServerClosed. Shutdown does not close the store.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeWatch()
	s.mu.Lock()
	s.closing.Store(true)
	for ln := range s.listeners {
		(*ln).Close()
	}
	for c := range s.conns {
		c.closeIfIdle()
	}
	if s.loop != nil {
		s.loop.post(loopMsg{kind: msgShutdown})
	}
	https := make([]*http.Server, 0, len(s.https))
	for h := range s.https {
		https = append(https, h)
	}
	s.mu.Unlock()

	var errs []error
	for _, h := range https {
		if err := h.Shutdown(ctx); err != nil {
			errs = append(errs, err)
			h.Close()
		}
	}

	// Wait for RESP connections to drain; a watcher closes them all if ctx
	// ends first, which makes the wait finish.
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for c := range s.conns {
			if c.nc != nil {
				c.nc.Close()
			}
		}
		if s.loop != nil {
			s.loop.post(loopMsg{kind: msgCloseAll})
		}
		s.connsDone.Broadcast()
	})
	s.mu.Lock()
	for len(s.conns) > 0 && ctx.Err() == nil {
		s.connsDone.Wait()
	}
	s.mu.Unlock()
	stop()
	s.bg.Wait()
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Close stops the server at once: it closes every listener and connection
// without waiting for in-flight requests.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := s.Shutdown(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Clients returns the number of open RESP connections.
func (s *Server) Clients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// writeOptions turns a request's durability into engine write options.
func writeOptions(d engine.Durability) engine.WriteOptions {
	return engine.WriteOptions{Durability: d}
}

// orDefault returns v, or def if v is zero; a negative v adds an error
// naming the Config field name to *errs.
func orDefault[T int | time.Duration](errs *[]error, name string, v, def T) T {
	switch {
	case v < 0:
		*errs = append(*errs, fmt.Errorf("server: %s must not be negative (got %v)", name, v))
	case v == 0:
		return def
	}
	return v
}

// observeCommit records the latency of commit c, started at start, by the
// mode the store acknowledged it in. A write that was never submitted (its
// Commit is the zero one) is not a commit.
func (s *Server) observeCommit(c engine.Commit, start time.Time) {
	if c == (engine.Commit{}) {
		return
	}
	mode := engine.CommitAsync
	if c.Sync() {
		mode = engine.CommitSync
	}
	s.metrics.commitSeconds[mode].Observe(time.Since(start).Seconds())
}

// parseDurability parses "sync", "async" or "default" (any case).
func parseDurability(b []byte) (engine.Durability, bool) {
	switch {
	case equalFold(b, "sync"):
		return engine.DurabilitySync, true
	case equalFold(b, "async"):
		return engine.DurabilityAsync, true
	case equalFold(b, "default"):
		return engine.DurabilityDefault, true
	}
	return 0, false
}

func durabilityName(d engine.Durability, mode engine.CommitMode) string {
	switch d {
	case engine.DurabilitySync:
		return "sync"
	case engine.DurabilityAsync:
		return "async"
	}
	return mode.String()
}

// equalFold reports whether b equals the lower-case ASCII string s, ignoring
// ASCII case, without allocating.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
