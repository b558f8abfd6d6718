package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/internal/histogram"
)

// benchConfig holds the flags of kvctl bench.
type benchConfig struct {
	clients   int
	pipeline  int
	duration  time.Duration
	requests  int64
	warmup    time.Duration
	valueSize int
	keys      int
	keyPrefix string
	readRatio float64
	seed      uint64
	keyWidth  int // digits of the largest key number
	// modes are the durabilities of the passes, in order.
	modes []client.Durability
}

// maxBenchValue bounds --value-size (kvd's default request limit).
const maxBenchValue = 64 << 20

func benchCommand() *command {
	cfg := benchConfig{clients: 50, pipeline: 1, duration: 10 * time.Second, valueSize: 100, keys: 100_000, keyPrefix: "bench:"}
	var fs *pflag.FlagSet
	c := &command{
		name:    "bench",
		summary: "measure throughput, latency and fsyncs under load, sync vs async",
		help: `Runs a closed-loop load against kvd and reports throughput, latency quantiles and fsyncs.

--clients goroutines each hold a connection of their own and send --pipeline requests per round
trip, waiting for the replies before sending more. A request is a SET (or, with --read-ratio, a GET)
of a random key in [0, --keys) after --key-prefix, with a --value-size byte value; --seed fixes the
key sequence. A pass runs for --duration, or until --requests requests in all; --warmup runs first
and is not measured.

--durability sync or async asks for that durability on every write whatever the server's commit
mode, default uses the server's, and both (bench's default) runs a sync pass, then an async pass,
and compares them.

Latency is per request, and every request of a pipelined round trip counts with the time of the
whole round trip. Quantiles come from a log-linear histogram (within 0.8%); max is exact. A GET of
a missing key is a success. fsyncs and records/fsync are the change of the server's INFO
persistence counters over the pass, so they include other clients' writes meanwhile.

--timeout bounds each request and status query, not the whole run. -o json prints a JSON array
with one object per pass. A progress line goes to standard error while bench runs, if that is a
terminal. Exit status 1 if every request of a pass failed.`,
		durabilityBoth: true,
		ownTimeout:     true,
		flags: func(f *pflag.FlagSet) {
			fs = f
			f.IntVar(&cfg.clients, "clients", cfg.clients, "concurrent clients, one connection each")
			f.IntVar(&cfg.pipeline, "pipeline", cfg.pipeline, "requests per round trip of each client")
			f.DurationVar(&cfg.duration, "duration", cfg.duration, "length of each pass")
			f.Int64Var(&cfg.requests, "requests", 0, "requests per pass, over all clients (instead of --duration)")
			f.DurationVar(&cfg.warmup, "warmup", 0, "unmeasured load before each pass")
			f.IntVar(&cfg.valueSize, "value-size", cfg.valueSize, "bytes per value")
			f.IntVar(&cfg.keys, "keys", cfg.keys, "number of distinct keys")
			f.StringVar(&cfg.keyPrefix, "key-prefix", cfg.keyPrefix, "prefix of every key")
			f.Float64Var(&cfg.readRatio, "read-ratio", 0, "fraction of requests that are GETs, 0 to 1")
			f.Uint64Var(&cfg.seed, "seed", 0, "seed of the key sequence (default: random, printed)")
		},
	}
	c.run = func(ctx context.Context, e *env, args []string) error {
		if len(args) != 0 {
			return usagef("bench takes no arguments (got %q)", args)
		}
		if err := cfg.check(e.cfg.durability, fs); err != nil {
			return err
		}
		return runBench(ctx, e, cfg)
	}
	return c
}

// check validates the flags, reporting every problem at once, and fills in
// modes and a random seed.
func (c *benchConfig) check(durability string, fs *pflag.FlagSet) error {
	var bad []string
	badf := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	if c.clients < 1 {
		badf("--clients must be at least 1")
	}
	if c.pipeline < 1 {
		badf("--pipeline must be at least 1")
	}
	if fs.Changed("requests") {
		if fs.Changed("duration") {
			badf("--duration and --requests exclude each other")
		}
		if c.requests < 1 {
			badf("--requests must be at least 1")
		}
	} else if c.duration <= 0 {
		badf("--duration must be positive")
	}
	if c.warmup < 0 {
		badf("--warmup must not be negative")
	}
	if c.valueSize < 0 || c.valueSize > maxBenchValue {
		badf("--value-size must be between 0 and %d", maxBenchValue)
	}
	if c.keys < 1 {
		badf("--keys must be at least 1")
	}
	if !(c.readRatio >= 0 && c.readRatio <= 1) {
		badf("--read-ratio must be between 0 and 1")
	}
	switch {
	case durability == "" || strings.EqualFold(durability, "both"):
		c.modes = []client.Durability{client.DurabilitySync, client.DurabilityAsync}
	default:
		// main has parsed it already.
		d, _ := client.ParseDurability(durability)
		c.modes = []client.Durability{d}
	}
	if len(bad) > 0 {
		return usagef("bench: %s", strings.Join(bad, "; "))
	}
	c.keyWidth = digits(uint64(c.keys - 1))
	if !fs.Changed("seed") {
		// 53 bits, so that the seed survives JSON readers that use floats.
		c.seed = rand.Uint64() >> 11
	}
	return nil
}

// runBench dials the clients, runs one pass per mode and prints the results.
func runBench(ctx context.Context, e *env, cfg benchConfig) error {
	timeout := e.cfg.timeout
	// One connection per client.
	opts, err := e.clientOptions(client.Options{PoolSize: 1})
	if err != nil {
		return err
	}
	dial := func() (*client.Client, error) {
		dctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return client.Dial(dctx, e.cfg.addr, opts)
	}
	ctl, err := dial()
	if err != nil {
		return err
	}
	defer ctl.Close()
	status := func() (client.Status, error) {
		sctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return ctl.Status(sctx)
	}

	value := make([]byte, cfg.valueSize)
	rng := rand.New(rand.NewPCG(cfg.seed, 0))
	for i := range value {
		value[i] = 'a' + byte(rng.IntN(26))
	}
	workers := make([]*benchWorker, cfg.clients)
	for i := range workers {
		cl, err := dial()
		if err != nil {
			return fmt.Errorf("bench: client %d: %w", i+1, err)
		}
		defer cl.Close()
		workers[i] = &benchWorker{cl: cl, pipe: cl.Pipeline()}
	}

	progress := isTerminal(e.stderr)
	var results []passResult
	for _, mode := range cfg.modes {
		p := &benchPass{cfg: &cfg, mode: mode, value: value, timeout: timeout}
		if mode != client.DurabilityDefault {
			p.opts = []client.WriteOption{client.WithDurability(mode)}
		}
		if cfg.warmup > 0 {
			p.limit(cfg.warmup, 0)
			if _, err := p.run(ctx, workers, progressTo(progress, e, mode.String()+" warm-up")); err != nil {
				return err
			}
		}
		before, err := status()
		if err != nil {
			return err
		}
		p.limit(cfg.duration, cfg.requests)
		elapsed, err := p.run(ctx, workers, progressTo(progress, e, mode.String()))
		if err != nil {
			return err
		}
		after, err := status()
		if err != nil {
			return err
		}
		results = append(results, summarize(&cfg, mode, workers, elapsed, before, after))
	}

	if e.json() {
		err = e.writeJSON(results)
	} else {
		err = writeBenchText(e.stdout, e.cfg.addr, &cfg, results)
	}
	if err != nil {
		return err
	}
	for _, r := range results {
		if r.Ops == 0 {
			return fmt.Errorf("bench: every request of the %s pass failed: %s", r.Mode, r.FirstError)
		}
	}
	return nil
}

// benchPass is one pass of the load: its settings and its stop condition.
// The workers share it; claim is safe for concurrent use.
type benchPass struct {
	cfg     *benchConfig
	mode    client.Durability
	opts    []client.WriteOption
	value   []byte
	timeout time.Duration

	length time.Duration // how long the pass runs, unless by requests
	end    time.Time
	// left counts down the requests not yet claimed, if the pass runs by
	// requests.
	left     atomic.Int64
	requests bool
}

// limit sets the stop condition of the next run: n requests if n > 0, else
// d of time.
func (p *benchPass) limit(d time.Duration, n int64) {
	p.length, p.requests = d, n > 0
	p.left.Store(n)
}

// claim returns the number of requests a worker may send in its next round
// trip, at most want; 0 means the pass is over. By requests, the claims add
// up to exactly the number asked for.
func (p *benchPass) claim(now time.Time, want int) int {
	if !p.requests {
		if now.Before(p.end) {
			return want
		}
		return 0
	}
	left := p.left.Add(-int64(want)) // what remains after this claim
	return int(max(0, min(int64(want), left+int64(want))))
}

// run runs the workers until the pass's limit and returns its length. The
// workers' histograms and counters then hold the pass's results.
func (p *benchPass) run(ctx context.Context, workers []*benchWorker, progress *benchProgress) (time.Duration, error) {
	for i, w := range workers {
		w.reset(p.cfg.seed, uint64(i))
	}
	start := time.Now()
	p.end = start.Add(p.length)
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() { w.run(ctx, p) })
	}
	stop := progress.start(p, workers, start)
	wg.Wait()
	elapsed := time.Since(start)
	stop()
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("bench: %w", context.Cause(ctx))
	}
	return elapsed, nil
}

// benchWorker is one client of the load. Only its own goroutine touches it
// during a pass, except for the atomic counters the progress line reads.
type benchWorker struct {
	cl   *client.Client
	pipe *client.Pipeline
	rng  *rand.Rand
	hist histogram.Histogram

	ok, failed atomic.Int64 // requests completed
	reads      int64        // successful GETs
	firstErr   error

	key    []byte
	isRead []bool // of each request in the pipeline
}

func (w *benchWorker) reset(seed, stream uint64) {
	w.rng = rand.New(rand.NewPCG(seed, stream))
	w.hist = histogram.Histogram{}
	w.ok.Store(0)
	w.failed.Store(0)
	w.reads, w.firstErr = 0, nil
}

func (w *benchWorker) run(ctx context.Context, p *benchPass) {
	now := time.Now()
	for ctx.Err() == nil {
		n := p.claim(now, p.cfg.pipeline)
		if n == 0 {
			return
		}
		now = w.roundTrip(ctx, p, n)
	}
}

// nextKey returns a random key of the pass: the prefix and a number
// zero-padded to the width of the largest one.
func (w *benchWorker) nextKey(c *benchConfig) string {
	n := uint64(w.rng.IntN(c.keys))
	w.key = append(w.key[:0], c.keyPrefix...)
	for range c.keyWidth - digits(n) {
		w.key = append(w.key, '0')
	}
	w.key = strconv.AppendUint(w.key, n, 10)
	return string(w.key)
}

func digits(n uint64) int {
	d := 1
	for ; n >= 10; n /= 10 {
		d++
	}
	return d
}

// roundTrip sends n requests in one round trip, records them and returns
// the time it ended.
func (w *benchWorker) roundTrip(ctx context.Context, p *benchPass, n int) time.Time {
	c := p.cfg
	rctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	if c.pipeline == 1 {
		key := w.nextKey(c)
		read := w.rng.Float64() < c.readRatio
		start := time.Now()
		var err error
		if read {
			_, err = w.cl.Get(rctx, key)
		} else {
			err = w.cl.Put(rctx, key, p.value, p.opts...)
		}
		end := time.Now()
		w.record(read, err, end.Sub(start))
		return end
	}
	w.isRead = w.isRead[:0]
	for range n {
		key := w.nextKey(c)
		read := w.rng.Float64() < c.readRatio
		if read {
			w.pipe.Get(key)
		} else {
			w.pipe.Put(key, p.value, p.opts...)
		}
		w.isRead = append(w.isRead, read)
	}
	start := time.Now()
	res, err := w.pipe.Exec(rctx)
	end := time.Now()
	for i, read := range w.isRead {
		if err == nil {
			w.record(read, res[i].Err, end.Sub(start))
		} else {
			w.record(read, err, 0)
		}
	}
	return end
}

// record counts one request that took d, or failed with err.
func (w *benchWorker) record(read bool, err error, d time.Duration) {
	if err != nil && !(read && errors.Is(err, client.ErrNotFound)) {
		if w.firstErr == nil {
			w.firstErr = err
		}
		w.failed.Add(1)
		return
	}
	w.hist.Record(d)
	if read {
		w.reads++
	}
	w.ok.Add(1)
}
