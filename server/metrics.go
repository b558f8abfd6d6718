package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kvdstore/kvd/engine"
)

// Metrics holds kvd's Prometheus metrics in a registry of its own (no
// global registry): the server's counts of requests and commits, and
// figures read from the store's Stats when scraped. Pass it in
// Config.Metrics, or let New create one. A Metrics serves one Server.
type Metrics struct {
	reg *prometheus.Registry

	requests        *prometheus.CounterVec
	unknownCommands prometheus.Counter
	protocolErrors  prometheus.Counter
	rejected        prometheus.Counter
	clients         prometheus.Gauge
	commitSeconds   map[engine.CommitMode]prometheus.Observer
	syncSeconds     prometheus.Histogram
}

// NewMetrics returns a Metrics with its own registry, which also carries the
// Go runtime and process collectors.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	commit := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kvd_commit_duration_seconds",
		Help:    "Latency of write commits seen by the server, by commit mode.",
		Buckets: prometheus.ExponentialBuckets(10e-6, 2, 18), // 10µs .. 1.3s
	}, []string{"mode"})
	m := &Metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvd_requests_total",
			Help: "Requests handled, by protocol and command (RESP) or route (HTTP).",
		}, []string{"protocol", "command"}),
		unknownCommands: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kvd_resp_unknown_commands_total",
			Help: "RESP commands refused as unknown.",
		}),
		protocolErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kvd_resp_protocol_errors_total",
			Help: "RESP connections closed for a malformed frame.",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kvd_resp_rejected_connections_total",
			Help: "RESP connections refused because max-clients was reached.",
		}),
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvd_resp_connected_clients",
			Help: "Open RESP connections.",
		}),
		commitSeconds: map[engine.CommitMode]prometheus.Observer{
			engine.CommitSync:  commit.WithLabelValues("sync"),
			engine.CommitAsync: commit.WithLabelValues("async"),
		},
		syncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kvd_sync_barrier_duration_seconds",
			Help:    "Latency of durability barriers (WAITAOF, POST /v1/sync).",
			Buckets: prometheus.ExponentialBuckets(10e-6, 2, 18),
		}),
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.unknownCommands, m.protocolErrors, m.rejected, m.clients,
		commit, m.syncSeconds,
	)
	return m
}

// Registry returns the registry the metrics are in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// register adds the gauges read from the store of s.
func (m *Metrics) register(s *Server) {
	stat := func(name, help string, f func(engine.Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return f(s.store.Stats()) })
	}
	m.reg.MustRegister(
		&fsyncHistograms{s: s},
		&memoryCollector{s: s},
		&raftCollector{s: s},
		&diskCollector{s: s},
		stat("kvd_written_revision", "Last revision written to the write-ahead log (visible to reads).",
			func(st engine.Stats) float64 { return float64(st.WrittenRevision) }),
		stat("kvd_durable_revision", "Last revision known to be fsynced.",
			func(st engine.Stats) float64 { return float64(st.DurableRevision) }),
		stat("kvd_checkpointed_revision", "Last revision checkpointed into the state file.",
			func(st engine.Stats) float64 { return float64(st.CheckpointedRevision) }),
		stat("kvd_wal_unsynced_oldest_age_seconds",
			"Age of the oldest write-ahead log record written but not yet fsynced (0 if none): what a power loss would take in async mode.",
			func(st engine.Stats) float64 { return st.OldestUnsynced.Seconds() }),
		stat("kvd_wal_unsynced_max_age_last_minute_seconds",
			"Longest a write-ahead log record stayed written but not fsynced over the last minute, the current oldest included.",
			func(st engine.Stats) float64 { return st.MaxUnsyncedLastMinute.Seconds() }),
		stat("kvd_wal_bytes", "Bytes in write-ahead log segments.",
			func(st engine.Stats) float64 { return float64(st.WALBytes) }),
		stat("kvd_wal_recovery_cut_bytes", "Bytes the last start-up cut from the log to recover from a crash or from damage below the checkpoint.",
			func(st engine.Stats) float64 { return float64(st.Recovery.Bytes) }),
		stat("kvd_wal_recovery_cut_records", "Valid records the last start-up cut from the log (found after a hole that no fsync covered).",
			func(st engine.Stats) float64 { return float64(st.Recovery.Records) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kvd_log_write_failures_total",
			Help: "Write-ahead log writes that failed (a full disk, say) and whose writes were refused, without failing the log.",
		}, func() float64 { return float64(s.store.Stats().LogWriteFailures) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kvd_checkpoint_failures_total",
			Help: "Checkpoints that failed (a full disk, say) and were tried again later.",
		}, func() float64 { return float64(s.store.Stats().CheckpointFailures) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kvd_expired_keys_total",
			Help: "Expired keys this server removed (reads hide them from their expiry time on, removed or not).",
		}, func() float64 { return float64(s.store.Stats().ExpiredRemoved) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kvd_state_corruptions_total",
			Help: "Reads that found the state file damaged (a value whose checksum does not match, or a damaged page): not 0 means degraded; a restart does not repair it.",
		}, func() float64 { return float64(s.store.Stats().Corruptions) }),
		stat("kvd_log_failed", "1 once the write-ahead log failed (writes refused until restart).",
			func(st engine.Stats) float64 {
				if st.Err != nil {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kvd_commit_mode_sync", Help: "1 when the default commit mode is sync, 0 when async.",
		}, func() float64 {
			if s.store.CommitMode() == engine.CommitSync {
				return 1
			}
			return 0
		}),
	)
}

func (m *Metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// fsyncHistograms exports the store's histograms of its log's fsyncs, kept
// by the log itself (engine.Stats), as Prometheus histograms.
type fsyncHistograms struct{ s *Server }

var (
	fsyncSecondsDesc = prometheus.NewDesc("kvd_wal_fsync_duration_seconds",
		"Latency of write-ahead log fsyncs.", nil, nil)
	recordsPerFsyncDesc = prometheus.NewDesc("kvd_wal_records_per_fsync",
		"Write-ahead log records made durable by one fsync (group commit).", nil, nil)
)

func (c *fsyncHistograms) Describe(ch chan<- *prometheus.Desc) {
	ch <- fsyncSecondsDesc
	ch <- recordsPerFsyncDesc
}

func (c *fsyncHistograms) Collect(ch chan<- prometheus.Metric) {
	st := c.s.store.Stats()
	ch <- constHistogram(fsyncSecondsDesc, st.FsyncSeconds)
	ch <- constHistogram(recordsPerFsyncDesc, st.RecordsPerFsync)
}

// constHistogram turns h, whose counts are per bucket, into a Prometheus
// histogram, whose counts are cumulative.
func constHistogram(desc *prometheus.Desc, h engine.Histogram) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	var n uint64
	for i, b := range h.Bounds {
		n += h.Counts[i]
		buckets[b] = n
	}
	if len(h.Counts) > len(h.Bounds) {
		n += h.Counts[len(h.Bounds)]
	}
	return prometheus.MustNewConstHistogram(desc, n, h.Sum, buckets)
}

// memoryCollector exports the memory budget and the memory in use, read
// once per scrape. The Go collector's go_memstats_* and the process
// collector's process_resident_memory_bytes tell more of the same.
type memoryCollector struct{ s *Server }

var (
	memoryBudgetDesc = prometheus.NewDesc("kvd_memory_budget_bytes",
		"The memory budget kvd was given (--max-memory); 0 if not set.", nil, nil)
	memtableDesc = prometheus.NewDesc("kvd_memtable_bytes",
		"Memory the memtables hold: writes not yet checkpointed into the state file.", nil, nil)
	memtableMaxDesc = prometheus.NewDesc("kvd_memtable_max_bytes",
		"Bound of the memtables, past which writes wait for a checkpoint.", nil, nil)
	heapLiveDesc = prometheus.NewDesc("kvd_heap_live_bytes",
		"Go heap the last garbage collection found live.", nil, nil)
	heapTotalDesc = prometheus.NewDesc("kvd_heap_total_bytes",
		"Go heap memory held from the system: objects live or not yet collected, and free spans not yet returned.", nil, nil)
	rssAnonDesc = prometheus.NewDesc("kvd_rss_anon_bytes",
		"Anonymous resident memory (RssAnon in /proc/self/status; 0 where unknown).", nil, nil)
	rssFileDesc = prometheus.NewDesc("kvd_rss_file_bytes",
		"File-backed resident memory, the state file's cached pages among it, which the kernel may reclaim (RssFile in /proc/self/status; 0 where unknown).", nil, nil)
)

func (c *memoryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{memoryBudgetDesc, memtableDesc, memtableMaxDesc,
		heapLiveDesc, heapTotalDesc, rssAnonDesc, rssFileDesc} {
		ch <- d
	}
}

func (c *memoryCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.store.Stats()
	m := c.s.memoryStatus(st.MemtableBytes, st.MaxMemtableBytes)
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	gauge(memoryBudgetDesc, float64(m.MaxMemory))
	gauge(memtableDesc, float64(m.MemtableBytes))
	gauge(memtableMaxDesc, float64(m.MemtableMaxBytes))
	gauge(heapLiveDesc, float64(m.HeapLiveBytes))
	gauge(heapTotalDesc, float64(m.HeapTotalBytes))
	gauge(rssAnonDesc, float64(m.RSSAnonBytes))
	gauge(rssFileDesc, float64(m.RSSFileBytes))
}
