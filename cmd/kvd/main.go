// Command kvd is the kvd server: a durable key-value store served over RESP
// (the Redis protocol) and HTTP/JSON.
//
// Run "kvd --help" for the flags, "kvd --version" for the version.
// SIGHUP reloads the users file and the TLS certificate files. On
// SIGINT or SIGTERM, or a client's SHUTDOWN, kvd stops accepting
// connections, lets in-flight requests finish, flushes and fsyncs the
// write-ahead log, checkpoints, and exits 0.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/buildinfo"
	"github.com/kvdstore/kvd/server"
	"github.com/kvdstore/kvd/wal"
	"github.com/kvdstore/kvd/watch"
)

// version, if set at build time with -ldflags "-X main.version=...",
// replaces the module version that buildinfo.Version reports.
var version string

// defaultGCPercent is the garbage collector's target (GOGC) unless the
// environment sets GOGC: the heap may grow to three times what is live
// before a collection, instead of Go's default of twice. Every write
// allocates its value, so under a heavy write load the default collects
// often: pipelined SETs measured slower and with a worse p99 than at 200,
// which still uses less than half the memory the log's in-memory segment
// copies used to (bench/RESULTS.md, "Memory").
const defaultGCPercent = 200

func main() {
	if _, ok := os.LookupEnv("GOGC"); !ok {
		debug.SetGCPercent(defaultGCPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// usageError is a bad command line: exit status 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func exitCode(err error, stderr io.Writer) int {
	var ue *usageError
	var es *exitStatus
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "kvd: %v\nRun 'kvd --help' for usage.\n", ue.err)
		return 2
	case errors.As(err, &es):
		fmt.Fprintf(stderr, "kvd: %v\n", es.err)
		return es.code
	default:
		fmt.Fprintf(stderr, "kvd: %v\n", err)
		if errors.Is(err, wal.ErrCorrupt) || errors.Is(err, engine.ErrCorruptState) {
			fmt.Fprintln(stderr, `kvd: the data directory is damaged and kvd changed nothing in it; see "When kvd refuses to start" in README.md`)
		}
		return 1
	}
}

// run is kvd: it parses args, opens the store, serves until ctx ends, then
// shuts down cleanly. "kvd check ..." runs the offline check instead
// (check.go), "kvd recover ..." the recovery of a cluster node
// (cluster.go).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "check" {
		return runCheck(args[1:], stdout)
	}
	if len(args) > 0 && args[0] == "recover" {
		return runRecover(args[1:], stdout)
	}
	if len(args) > 0 && args[0] == "passwd" {
		return runPasswd(args[1:], os.Stdin, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "token" {
		return runToken(args[1:], stdout, stderr)
	}
	var cfg config
	fs := pflag.NewFlagSet("kvd", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.addFlags(fs)
	showVersion := fs.Bool("version", false, "print kvd's version (module version, VCS revision and time) and exit")
	if err := cfg.parse(fs, args, os.LookupEnv); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(stdout, usage(fs))
			return nil
		}
		return &usageError{err}
	}
	version := buildinfo.Version(version)
	if *showVersion {
		fmt.Fprintln(stdout, "kvd", version)
		return nil
	}
	log, err := cfg.logger(stderr)
	if err != nil {
		return &usageError{err}
	}
	if err := protectedMode(&cfg, log); err != nil {
		return err
	}
	users, loadUsers, err := cfg.auth.users()
	if err != nil {
		return err
	}
	switch {
	case cfg.auth.authFile != "":
		log.Info("users loaded", "auth_file", cfg.auth.authFile, "users", len(users.Names()))
	case users != nil:
		log.Info("one user, default, with --requirepass's password")
		if _, fromEnv := os.LookupEnv(envName("requirepass")); cfg.auth.requirePass != "" && !fromEnv {
			log.Warn("--requirepass on the command line is visible to every local user (ps): prefer KVD_REQUIREPASS or --requirepass-file")
		}
	default:
		log.Warn("no users configured: every client may do anything (--auth-file or --requirepass-file to require credentials)")
	}

	// The budget is the runtime's soft limit, so that garbage does not pile
	// up to GOGC's multiple of the live heap; GOMEMLIMIT, if set, wins.
	limitFrom := "GOMEMLIMIT"
	if os.Getenv("GOMEMLIMIT") == "" { // as the runtime reads it
		debug.SetMemoryLimit(int64(cfg.maxMemory))
		limitFrom = "max-memory"
	}
	metrics := server.NewMetrics()
	opts := cfg.engineOptions(log)
	log.Info("memory budget", "max_memory", int64(cfg.maxMemory),
		"memtable_max_bytes", opts.MaxMemtableBytes, "checkpoint_bytes", opts.CheckpointBytes,
		"resp_pending_bytes", int64(cfg.respPendingBytes),
		"go_memory_limit", debug.SetMemoryLimit(-1), "go_memory_limit_from", limitFrom)
	tlss, err := cfg.tls.load(log)
	if err != nil {
		return err
	}
	store, closeStore, err := openStore(&cfg, opts, tlss, log, stderr)
	if err != nil {
		return err
	}
	defer func() {
		if closeStore != nil {
			closeStore()
		}
	}()
	jm, err := openJobs(cfg, store, log)
	if err != nil {
		return err
	}
	defer jm.Close() // before the store's close, deferred above: a running job stops first

	srv, err := server.New(store, server.Config{
		MaxKeySize:   opts.MaxKeySize,
		MaxValueSize: opts.MaxValueSize,
		MaxClients:   cfg.maxClients,
		Watch:        watch.Options{MaxWatchers: cfg.watchMax, Buffer: cfg.watchBuffer},

		RESPIdleTimeout:       cfg.respIdleTimeout,
		RESPPendingBytes:      int(cfg.respPendingBytes),
		MaxMemory:             int64(cfg.maxMemory),
		HTTPMaxConns:          cfg.httpMaxConns,
		HTTPReadHeaderTimeout: cfg.httpReadHeaderTimeout,
		HTTPIdleTimeout:       cfg.httpIdleTimeout,
		HTTPMinRate:           httpMinRate(cfg.httpMinRate),
		HTTPRateWindow:        cfg.httpRateWindow,
		RESPIO:                cfg.respIOFor(),
		Pprof:                 cfg.pprof == pprofOnHTTP,
		Version:               version,
		Metrics:               metrics,
		Jobs:                  jm,
		Logger:                log,
		Users:                 users,
		LoadUsers:             loadUsers,
		MetricsAuth:           cfg.auth.metricsAuth,
	})
	if err != nil {
		return err
	}
	// SIGHUP reloads the users file and the TLS files, each that is in use.
	var reloads []func()
	if loadUsers != nil {
		reloads = append(reloads, func() { srv.ReloadUsers() })
	}
	if tlss.enabled() {
		reloads = append(reloads, tlss.Reload)
	}
	if len(reloads) > 0 {
		stopReload := reloadOnSIGHUP(reloads...)
		defer stopReload()
	}

	// Listen on everything before serving anything, so that a bad address
	// fails startup as a whole.
	var lns []net.Listener
	listen := func(addr string) (net.Listener, error) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("listen: %w", err)
		}
		lns = append(lns, ln)
		return ln, nil
	}
	respLn, err := listen(cfg.listen)
	if err != nil {
		return err
	}
	var httpLn, pprofLn net.Listener
	if cfg.httpListen != "" {
		if httpLn, err = listen(cfg.httpListen); err != nil {
			return err
		}
	}
	if cfg.pprof != "" && cfg.pprof != pprofOnHTTP {
		if pprofLn, err = listen(cfg.pprof); err != nil {
			return err
		}
	}

	announceClientAddrs(store, respLn, httpLn)
	respLn, httpLn = tlss.listener(respLn), tlss.listener(httpLn)

	errc := make(chan error, 3)
	serve := func(name string, f func() error) {
		go func() {
			err := f()
			if errors.Is(err, server.ErrServerClosed) || errors.Is(err, http.ErrServerClosed) {
				err = nil
			} else if err != nil {
				err = fmt.Errorf("%s: %w", name, err)
			}
			errc <- err
		}()
	}
	n := 0
	serve("resp", func() error { return srv.ServeRESP(respLn) })
	n++
	httpAddr := "off"
	if httpLn != nil {
		serve("http", func() error { return srv.ServeHTTPAPI(httpLn) })
		n++
		httpAddr = httpLn.Addr().String()
	}
	var pprofSrv *http.Server
	if pprofLn != nil {
		pprofSrv = &http.Server{Handler: server.PprofHandler(), ReadHeaderTimeout: 10 * time.Second}
		serve("pprof", func() error { return pprofSrv.Serve(pprofLn) })
		n++
	}

	attrs := []any{
		"resp", respLn.Addr().String(),
		"http", httpAddr,
		"data_dir", cfg.dataDir,
		"commit_mode", opts.CommitMode.String(),
		"version", version,
	}
	if pprofLn != nil {
		attrs = append(attrs, "pprof", pprofLn.Addr().String())
	}
	attrs = append(attrs, tlss.logAttrs(&cfg.tls)...)
	log.Info("kvd listening", attrs...)

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "cause", context.Cause(ctx))
	case <-srv.ShutdownRequested():
		log.Info("shutting down", "cause", "SHUTDOWN command")
	case serveErr = <-errc:
		n--
		log.Error("server failed; shutting down", "err", serveErr)
	}

	// In-flight requests get the grace period to finish; then the
	// connections still open are closed. That is a clean stop too: what
	// those clients were sending was not acknowledged.
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	var errs []error
	if serveErr != nil {
		errs = append(errs, serveErr)
	}
	if err := srv.Shutdown(sctx); errors.Is(err, context.DeadlineExceeded) {
		log.Warn("grace period over: closed the connections still open", "grace", cfg.shutdownTimeout)
	} else if err != nil {
		errs = append(errs, fmt.Errorf("shutdown: %w", err))
	}
	if pprofSrv != nil && pprofSrv.Shutdown(sctx) != nil {
		pprofSrv.Close()
	}
	for range n {
		if err := <-errc; err != nil {
			errs = append(errs, err)
		}
	}
	if jm != nil {
		jm.Close()
	}
	err = closeStore()
	closeStore = nil
	if err != nil {
		errs = append(errs, fmt.Errorf("close store: %w", err))
	}
	if len(errs) == 0 {
		log.Info("kvd stopped")
	}
	return errors.Join(errs...)
}

// reloadOnSIGHUP calls each of reloads on each SIGHUP until the returned
// function is called (it waits for a reload under way): the users file's
// and the TLS files'. A failed reload keeps what was loaded before (and
// logs why).
func reloadOnSIGHUP(reloads ...func()) func() {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-hup:
				for _, r := range reloads {
					r()
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		wg.Wait()
	}
}
