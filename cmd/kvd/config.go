package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/server"
)

// pprofOnHTTP is the value of --pprof given without an address: serve
// /debug/pprof/ on the HTTP listener.
const pprofOnHTTP = "http"

// config is kvd's configuration, from flags and KVD_* environment variables.
type config struct {
	dataDir            string
	backupDir          string        // jobs: backups, restore and import files; default DATA_DIR/backups
	jobsRetain         time.Duration // jobs: how long finished job records are kept
	listen             string
	httpListen         string
	commitMode         string
	flushInterval      time.Duration
	flushBytes         byteSize
	groupCommitDelay   time.Duration
	checkpointInterval time.Duration
	walRetain          uint64
	watchMax           int
	watchBuffer        int
	historyRevisions   uint64
	historyAge         time.Duration
	historyBytes       byteSize
	segmentSize        byteSize
	walPreallocate     byteSize
	checkpointBytes    byteSize
	checkpointLogBytes byteSize
	maxMemory          byteSize
	maxValueSize       byteSize
	maxClients         int
	respIO             string
	tls                tlsConfig
	logLevel           string
	logFormat          string
	pprof              string
	shutdownTimeout    time.Duration
	cluster            clusterConfig
	auth               authConfig

	respIdleTimeout       time.Duration
	respPendingBytes      byteSize
	httpMaxConns          int
	httpReadHeaderTimeout time.Duration
	httpIdleTimeout       time.Duration
	httpMinRate           byteSize
	httpRateWindow        time.Duration

	// Whether --checkpoint-bytes and --resp-pending-bytes were given (on
	// the command line or in the environment): if not, they are derived
	// from --max-memory.
	checkpointBytesSet  bool
	respPendingBytesSet bool
}

// defaultMaxMemory is --max-memory's default. Its shares (below) are
// the sizes kvd used before it had a budget: 256 MiB of memtables,
// checkpoints from 64 MiB, 128 MiB of pending requests.
const defaultMaxMemory = 1 << 30

// minMaxMemory is the smallest --max-memory: 4 MiB of memtables.
const minMaxMemory = 16 << 20

// The shares of --max-memory, as divisors: the memtables get a quarter of
// the budget, a checkpoint starts at a quarter of that, and the requests
// RESP connections hold before they are complete get at most an eighth of
// the budget. The rest is for what the budget does not bound by itself:
// garbage between collections, the log's segment in memory, connection and
// read buffers.
const (
	memtableShare    = 4
	checkpointShare  = 4 // of the memtables' share
	respPendingShare = 8
)

func (c *config) addFlags(fs *pflag.FlagSet) {
	c.flushBytes = 1 << 20
	c.maxValueSize = server.DefaultMaxValueSize
	fs.StringVar(&c.dataDir, "data-dir", "./kvd-data", "directory of the store (created if missing)")
	fs.StringVar(&c.backupDir, "backup-dir", "", "directory of backups and of the files restore and import jobs read (default DATA_DIR/backups)")
	fs.DurationVar(&c.jobsRetain, "jobs-retain", 7*24*time.Hour, "how long finished job records are kept (at most 1000 are)")
	fs.StringVar(&c.listen, "listen", "127.0.0.1:6380", "RESP (Redis protocol) listen address")
	fs.StringVar(&c.httpListen, "http-listen", "127.0.0.1:8380", "HTTP/JSON listen address; empty disables HTTP")
	fs.StringVar(&c.commitMode, "commit-mode", "sync",
		"default commit mode: sync (ack after fsync) or async (ack after write, fsync in the background)")
	fs.DurationVar(&c.flushInterval, "flush-interval", 10*time.Millisecond,
		"async mode: fsync the log at least this often")
	fs.Var(&c.flushBytes, "flush-bytes", "async mode: fsync early once this much is pending (e.g. 1MiB)")
	fs.DurationVar(&c.groupCommitDelay, "group-commit-delay", 0,
		"sync mode: wait this long before an fsync to gather more commits (0: none)")
	fs.DurationVar(&c.checkpointInterval, "checkpoint-interval", 5*time.Second,
		"how often committed writes are checkpointed into the state file (sooner under load: --checkpoint-bytes, --checkpoint-log-bytes)")
	fs.Uint64Var(&c.walRetain, "wal-retain", 0, "revisions of log history kept after a checkpoint")
	fs.IntVar(&c.watchMax, "watch-max", 10000, "most watchers (SSE streams, blocking reads) open at once")
	fs.IntVar(&c.watchBuffer, "watch-buffer", 1024, "changes a watcher holds undelivered before it falls back to reading the history")
	fs.Uint64Var(&c.historyRevisions, "watch-history-revisions", 100000, "change history kept for watches: at least this many revisions...")
	fs.DurationVar(&c.historyAge, "watch-history-age", 5*time.Minute, "...or this much time, whichever keeps more...")
	c.historyBytes = 512 << 20
	fs.Var(&c.historyBytes, "watch-history-bytes", "...within this size")
	c.segmentSize = 8 << 20
	c.checkpointBytes = 64 << 20
	c.checkpointLogBytes = 128 << 20
	fs.Var(&c.segmentSize, "segment-size", "size of a write-ahead log segment file; the log keeps about one in memory")
	c.walPreallocate = 1 << 20
	fs.Var(&c.walPreallocate, "wal-preallocate",
		"keep this much of the log's tail segment zero-filled ahead of its records, so fsyncs commit no file size; 0 disables")
	fs.Var(&c.checkpointBytes, "checkpoint-bytes",
		"checkpoint early once this much is held in memory (default: a sixteenth of --max-memory, a quarter of the memtables' share); at most the memtables' share")
	fs.Var(&c.checkpointLogBytes, "checkpoint-log-bytes",
		"checkpoint early once this much log was written since the last checkpoint (bounds the replay after a crash)")
	c.maxMemory = defaultMaxMemory
	fs.Var(&c.maxMemory, "max-memory",
		"memory budget: the memtables get a quarter (writes wait for a checkpoint past it), pending RESP requests at most an eighth, "+
			"and it is the Go runtime's soft memory limit unless GOMEMLIMIT is set; the state file's pages are page cache, outside it")
	fs.Var(&c.maxValueSize, "max-value-size", "largest value accepted (e.g. 16MiB)")
	fs.IntVar(&c.maxClients, "max-clients", server.DefaultMaxClients, "most RESP connections at once")
	fs.DurationVar(&c.respIdleTimeout, "resp-idle-timeout", 0,
		"close a RESP connection idle this long, as Redis's timeout (0: never; CONFIG SET timeout changes it)")
	c.respPendingBytes = server.DefaultRESPPendingBytes
	fs.Var(&c.respPendingBytes, "resp-pending-bytes",
		"most memory all RESP connections together may hold for requests not yet complete; a client past it is refused (default: at most an eighth of --max-memory)")
	fs.IntVar(&c.httpMaxConns, "http-max-conns", server.DefaultHTTPMaxConns,
		"most HTTP connections at once; more wait in the listen backlog until one closes")
	fs.DurationVar(&c.httpReadHeaderTimeout, "http-read-header-timeout", server.DefaultHTTPReadHeaderTimeout,
		"time allowed to read an HTTP request's headers")
	fs.DurationVar(&c.httpIdleTimeout, "http-idle-timeout", server.DefaultHTTPIdleTimeout,
		"how long an idle keep-alive HTTP connection stays open")
	c.httpMinRate = server.DefaultHTTPMinRate
	fs.Var(&c.httpMinRate, "http-min-rate",
		"slowest an HTTP client may send a body or read a response, in bytes per second over each --http-rate-window (0: no minimum)")
	fs.DurationVar(&c.httpRateWindow, "http-rate-window", server.DefaultHTTPRateWindow,
		"the window --http-min-rate is measured over")
	fs.StringVar(&c.respIO, "resp-io", "",
		"how RESP connections are served: loop (one epoll event loop; the default on Linux) or goroutines (one per connection; the default with TLS and off Linux)")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.pprof, "pprof", "",
		"serve net/http/pprof: on the HTTP listener with --pprof alone, or on the given address")
	fs.Lookup("pprof").NoOptDefVal = pprofOnHTTP
	c.tls.addFlags(fs)
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second,
		"on SIGINT or SIGTERM, how long in-flight requests may take to finish before their connections are closed")
	c.cluster.addFlags(fs)
	c.auth.addFlags(fs)
	fs.VisitAll(func(f *pflag.Flag) {
		f.Usage += " (env " + envName(f.Name) + ")"
	})
}

// envName is the environment variable of a flag: --data-dir is KVD_DATA_DIR.
func envName(flag string) string {
	return "KVD_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// parse parses args, then fills every flag not given on the command line from
// its environment variable, then validates the whole configuration.
func (c *config) parse(fs *pflag.FlagSet, args []string, lookupEnv func(string) (string, bool)) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "version" {
			return
		}
		if v, ok := lookupEnv(envName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", envName(f.Name), err))
			}
		}
	})
	c.checkpointBytesSet = fs.Changed("checkpoint-bytes")
	c.respPendingBytesSet = fs.Changed("resp-pending-bytes")
	errs = append(errs, c.validate()...)
	if len(errs) == 0 {
		errs = append(errs, c.derive()...)
	}
	return errors.Join(errs...)
}

// memtableMax is the memtables' share of --max-memory.
func (c *config) memtableMax() int64 { return int64(c.maxMemory) / memtableShare }

// derive fills --checkpoint-bytes and --resp-pending-bytes, unless given,
// from --max-memory, and checks that a given --checkpoint-bytes fits in the
// memtables' share.
func (c *config) derive() []error {
	if !c.checkpointBytesSet {
		c.checkpointBytes = byteSize(c.memtableMax() / checkpointShare)
	} else if int64(c.checkpointBytes) > c.memtableMax() {
		mt := byteSize(c.memtableMax())
		return []error{fmt.Errorf("--checkpoint-bytes %s is over the memtables' share of --max-memory (%s, a quarter of %s): raise --max-memory",
			c.checkpointBytes.String(), mt.String(), c.maxMemory.String())}
	}
	if !c.respPendingBytesSet {
		c.respPendingBytes = min(server.DefaultRESPPendingBytes, c.maxMemory/respPendingShare)
	}
	return nil
}

func (c *config) validate() []error {
	var errs []error
	if c.dataDir == "" {
		errs = append(errs, errors.New("--data-dir must not be empty"))
	}
	if c.listen == "" {
		errs = append(errs, errors.New("--listen must not be empty"))
	}
	if _, err := engine.ParseCommitMode(c.commitMode); err != nil {
		errs = append(errs, fmt.Errorf("--commit-mode must be sync or async, not %q", c.commitMode))
	}
	if c.flushInterval < server.MinFlushInterval || c.flushInterval > server.MaxFlushInterval {
		errs = append(errs, fmt.Errorf("--flush-interval must be between %v and %v, not %v",
			server.MinFlushInterval, server.MaxFlushInterval, c.flushInterval))
	}
	if c.groupCommitDelay < 0 {
		errs = append(errs, errors.New("--group-commit-delay must not be negative"))
	}
	if c.checkpointInterval <= 0 {
		errs = append(errs, errors.New("--checkpoint-interval must be positive"))
	}
	if c.flushBytes <= 0 {
		errs = append(errs, errors.New("--flush-bytes must be positive"))
	}
	if c.segmentSize < 4<<10 || c.segmentSize > 1<<30 {
		errs = append(errs, errors.New("--segment-size must be from 4KiB to 1GiB"))
	}
	if c.walPreallocate < 0 || c.walPreallocate > 1<<30 {
		errs = append(errs, errors.New("--wal-preallocate must be from 0 to 1GiB"))
	}
	if c.checkpointBytes < 1<<10 {
		errs = append(errs, errors.New("--checkpoint-bytes must be at least 1KiB"))
	}
	if c.checkpointLogBytes < 1<<10 {
		errs = append(errs, errors.New("--checkpoint-log-bytes must be at least 1KiB"))
	}
	if c.maxMemory < minMaxMemory {
		errs = append(errs, errors.New("--max-memory must be at least 16MiB"))
	}
	if c.maxValueSize <= 0 || c.maxValueSize > 512<<20 {
		errs = append(errs, errors.New("--max-value-size must be from 1 byte to 512MiB"))
	}
	if c.watchMax < 1 || c.watchBuffer < 1 {
		errs = append(errs, errors.New("--watch-max and --watch-buffer must be at least 1"))
	}
	if c.historyRevisions < 1 || c.historyAge <= 0 || c.historyBytes < 1<<10 {
		errs = append(errs, errors.New("--watch-history-revisions must be at least 1, --watch-history-age positive, --watch-history-bytes at least 1KiB"))
	}
	if c.maxClients < 1 {
		errs = append(errs, errors.New("--max-clients must be at least 1"))
	}
	if _, err := parseLevel(c.logLevel); err != nil {
		errs = append(errs, err)
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format must be text or json, not %q", c.logFormat))
	}
	if c.respIO != "" && c.respIO != "loop" && c.respIO != "goroutines" {
		errs = append(errs, fmt.Errorf("--resp-io must be loop or goroutines, not %q", c.respIO))
	}
	errs = append(errs, c.tls.validate(c.respIO, c.cluster.enabled())...)
	if c.respIdleTimeout < 0 {
		errs = append(errs, errors.New("--resp-idle-timeout must not be negative"))
	}
	if c.respPendingBytes < 1<<20 {
		errs = append(errs, errors.New("--resp-pending-bytes must be at least 1MiB"))
	}
	if c.httpMaxConns < 1 {
		errs = append(errs, errors.New("--http-max-conns must be at least 1"))
	}
	if c.httpReadHeaderTimeout <= 0 || c.httpIdleTimeout <= 0 || c.httpRateWindow <= 0 {
		errs = append(errs, errors.New("--http-read-header-timeout, --http-idle-timeout and --http-rate-window must be positive"))
	}
	if c.shutdownTimeout < 0 {
		errs = append(errs, errors.New("--shutdown-timeout must not be negative"))
	}
	errs = append(errs, c.cluster.validate()...)
	errs = append(errs, c.auth.validate()...)
	if c.pprof == pprofOnHTTP && c.httpListen == "" {
		errs = append(errs, errors.New("--pprof without an address needs --http-listen"))
	}
	return errs
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level must be debug, info, warn or error, not %q", s)
	}
	return l, nil
}

func (c *config) logger(w io.Writer) (*slog.Logger, error) {
	level, err := parseLevel(c.logLevel)
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

func (c *config) engineOptions(log *slog.Logger) engine.Options {
	mode, _ := engine.ParseCommitMode(c.commitMode) // validated
	return engine.Options{
		CommitMode:         mode,
		FlushInterval:      c.flushInterval,
		FlushBytes:         int(c.flushBytes),
		GroupCommitDelay:   c.groupCommitDelay,
		CheckpointInterval: c.checkpointInterval,
		WALRetain:          c.walRetain,
		HistoryRevisions:   c.historyRevisions,
		HistoryAge:         c.historyAge,
		HistoryBytes:       int64(c.historyBytes),
		SegmentSize:        int(c.segmentSize),
		Preallocate:        preallocate(c.walPreallocate),
		CheckpointBytes:    int64(c.checkpointBytes),
		CheckpointLogBytes: int64(c.checkpointLogBytes),
		MaxMemtableBytes:   c.memtableMax(),
		MaxKeySize:         server.DefaultMaxKeySize,
		MaxValueSize:       int(c.maxValueSize),
		ReleaseMemory:      true,
		Logger:             log,
	}
}

// preallocate maps --wal-preallocate, where 0 disables, to
// engine.Options.Preallocate, where 0 is the default.
func preallocate(b byteSize) int {
	if b == 0 {
		return -1
	}
	return int(b)
}

// httpMinRate maps --http-min-rate, where 0 disables, to
// server.Config.HTTPMinRate, where 0 is the default.
func httpMinRate(b byteSize) int {
	if b == 0 {
		return -1
	}
	return int(b)
}

func usage(fs *pflag.FlagSet) string {
	return `kvd: a durable key-value store served over RESP (the Redis protocol) and HTTP/JSON.

Usage:
  kvd [flags]
  kvd check [--data-dir DIR]   check a stopped store's state file (kvd check --help)
  kvd passwd                   read a password (never from the command line) and print
                               its hash for a users file (kvd passwd --help)
  kvd token                    print a new bearer token and its hash for a users file
  kvd recover --data-dir DIR --peers ID=ADDR[,...]
                               give a stopped cluster node a new configuration after
                               its cluster lost its quorum for good (kvd recover --help)

Cluster mode (Raft replication) starts with --raft-listen; see the cluster flags below
and README, "Cluster mode".

With no flags kvd keeps its data in ./kvd-data, speaks RESP on 127.0.0.1:6380
and HTTP on 127.0.0.1:8380. Every flag can also be set with the environment
variable named after it (--data-dir: KVD_DATA_DIR); a flag on the command
line wins. Sizes take a unit: 512KiB, 16MiB, 1GiB (or plain bytes). kvd
runs Go's garbage collector with GOGC=200 unless GOGC is set (lower uses
less memory and more CPU), and with --max-memory as its soft memory limit
unless GOMEMLIMIT is set.

On startup kvd logs one line with the message "kvd listening" and the
addresses it listens on, as resp=HOST:PORT http=HOST:PORT (http=off when
disabled). SIGHUP reloads the users file (--auth-file) and the TLS
certificate files (--tls-cert, --cluster-tls-cert). With no users
configured, kvd listens only on loopback addresses unless --insecure-no-auth
(protected mode). SIGINT or SIGTERM stops kvd cleanly: in-flight requests finish
(connections still open after --shutdown-timeout are closed), the log is
fsynced and checkpointed, and kvd exits 0.

Flags:
` + fs.FlagUsagesWrapped(100) + `
Exit status: 0 on a clean stop, 1 on an error, 2 on a bad command line.
`
}

// byteSize is a size flag: a number of bytes with an optional unit (B, KiB,
// MiB, GiB; K, M, G and KB, MB, GB are read as binary units too).
type byteSize int64

func (b *byteSize) String() string {
	n := int64(*b)
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

func (b *byteSize) Set(s string) error {
	t := strings.TrimSpace(s)
	num := strings.TrimRightFunc(t, func(r rune) bool { return r < '0' || r > '9' })
	unit := strings.ToLower(strings.TrimSpace(t[len(num):]))
	mult := int64(1)
	switch unit {
	case "", "b":
	case "k", "kb", "kib":
		mult = 1 << 10
	case "m", "mb", "mib":
		mult = 1 << 20
	case "g", "gb", "gib":
		mult = 1 << 30
	default:
		return fmt.Errorf("bad size %q: unknown unit %q", s, unit)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return fmt.Errorf("bad size %q", s)
	}
	*b = byteSize(n * mult)
	return nil
}

func (b *byteSize) Type() string { return "size" }
