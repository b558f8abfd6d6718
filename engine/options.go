package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	bolt "go.etcd.io/bbolt"
)

// CommitMode says when a write is acknowledged.
type CommitMode int

const (
	// CommitSync acknowledges a write once its log record is fsynced.
	// Concurrent writers share fsyncs (group commit). The zero value.
	CommitSync CommitMode = iota
	// CommitAsync acknowledges a write once its log record is written to the
	// log file; a background flusher fsyncs every FlushInterval. A process
	// crash loses nothing; a power loss loses at most the writes of the last
	// flush interval plus one fsync.
	CommitAsync
)

func (m CommitMode) String() string {
	switch m {
	case CommitSync:
		return "sync"
	case CommitAsync:
		return "async"
	}
	return fmt.Sprintf("CommitMode(%d)", int(m))
}

// ParseCommitMode parses "sync" or "async".
func ParseCommitMode(s string) (CommitMode, error) {
	switch s {
	case "sync":
		return CommitSync, nil
	case "async":
		return CommitAsync, nil
	}
	return 0, fmt.Errorf("engine: unknown commit mode %q (want sync or async)", s)
}

// Durability overrides the DB's commit mode for one write.
type Durability int

const (
	// DurabilityDefault uses the DB's current commit mode.
	DurabilityDefault Durability = iota
	// DurabilitySync waits for the fsync.
	DurabilitySync
	// DurabilityAsync returns once the record is written.
	DurabilityAsync
)

func (d Durability) String() string {
	switch d {
	case DurabilityDefault:
		return "default"
	case DurabilitySync:
		return "sync"
	case DurabilityAsync:
		return "async"
	}
	return fmt.Sprintf("Durability(%d)", int(d))
}

// WriteOptions are per-write settings.
type WriteOptions struct {
	Durability Durability
}

// Limits that the state store imposes.
const (
	// MaxKeyLimit is the largest key the state store (bbolt) can hold.
	MaxKeyLimit = bolt.MaxKeySize
	// MaxValueLimit is the largest value the log frame can carry.
	MaxValueLimit = 1<<31 - 1<<20
)

// Options configure a DB. The zero value is valid and the safest: sync
// commits with default sizes.
type Options struct {
	// CommitMode is the default commit mode. Default CommitSync.
	CommitMode CommitMode
	// FlushInterval is how often async writes are fsynced. Default 10ms.
	FlushInterval time.Duration
	// FlushBytes makes the flusher fsync early once this many bytes are
	// unsynced. Default 1 MiB.
	FlushBytes int
	// GroupCommitDelay makes the sync leader wait before it fsyncs so that
	// more writes share the fsync. Default 0.
	GroupCommitDelay time.Duration
	// CheckpointInterval is how often committed writes are moved from memory
	// into the state file. Default 5s. Under load a checkpoint may start
	// sooner, at CheckpointBytes or CheckpointLogBytes.
	CheckpointInterval time.Duration
	// CheckpointBytes starts a checkpoint early once the writes held in
	// memory reach this size. Default 64 MiB.
	CheckpointBytes int64
	// CheckpointLogBytes starts a checkpoint early once the log records
	// written since the last one reach this size. It bounds the log that
	// Open replays after a crash, whatever the write rate: 128 MiB, the
	// default, is about a million 100-byte writes.
	CheckpointLogBytes int64
	// MaxMemtableBytes bounds the memory held by writes not yet
	// checkpointed: past it, writers wait for the checkpoint. Default
	// 256 MiB; must be at least CheckpointBytes.
	MaxMemtableBytes int64
	// SegmentSize is the size of a log segment file. Default 8 MiB. The
	// log keeps about one segment in memory (wal.Options.SegmentSize).
	SegmentSize int
	// Preallocate is how far ahead of its last record the log's tail
	// segment is kept zero-filled, so that a sync commit's fdatasync has no
	// file size to commit. Default 1 MiB; negative disables it.
	Preallocate int
	// WALRetain is how many revisions of history the log keeps after they
	// are checkpointed. Default 0.
	WALRetain uint64
	// HistoryRevisions, HistoryAge and HistoryBytes are the change
	// history's retention (see the package doc, Change history): a
	// checkpoint drops the oldest revisions' changes while the history is
	// over HistoryBytes, or while they are both more than HistoryRevisions
	// revisions and more than HistoryAge old. Defaults 100,000 revisions,
	// 5 minutes, 512 MiB.
	HistoryRevisions uint64
	HistoryAge       time.Duration
	HistoryBytes     int64
	// MaxKeySize is the longest key accepted. Default and maximum 32 KiB
	// (the state store's limit).
	MaxKeySize int
	// MaxValueSize is the longest value accepted. Default 16 MiB.
	MaxValueSize int
	// NoExpiryRemoval stops the DB from removing expired keys itself (see
	// the package doc, Expiry): for a replica whose writes all come
	// through Apply, which gets the removals as batches of the node that
	// decides them. Reads hide expired keys either way.
	NoExpiryRemoval bool
	// ReleaseMemory makes the DB return to the system the memory its
	// checkpoints free, once writes pause (a second without a checkpoint,
	// and less than 4 MiB in the memtables; at most once every 10
	// seconds): it collects the whole process's heap twice (so that
	// sync.Pools let go of what they kept) and calls debug.FreeOSMemory. Off, the freed memory stays with the Go runtime
	// until its next collection. kvd turns it on.
	ReleaseMemory bool
	// Logger receives the engine's messages. Nil discards them.
	Logger *slog.Logger

	// Set by tests only (export_test.go): the clock (nil: time.Now), and
	// the sweep's period and bound (0: sweepInterval, sweepLimit).
	clock         func() time.Time
	sweepInterval time.Duration
	sweepLimit    int
	// Set by the state file's layout benchmark only
	// (memory_layout_internal_test.go): the kv bucket's fill factor (0:
	// the engine's choice, diskusage.go) and the page size of a new state
	// file (0: the system's page size).
	fillPercent float64
	pageSize    int
	// histSegmentBytes: the size past which the history's log starts a
	// new segment (0: histSegmentBytes). Set by tests, to cut small logs.
	histSegmentBytes int64
}

// withDefaults fills the defaults and checks every field, reporting all
// problems at once.
func (o Options) withDefaults() (Options, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if o.CommitMode != CommitSync && o.CommitMode != CommitAsync {
		bad("CommitMode %d is not CommitSync or CommitAsync", int(o.CommitMode))
	}
	def := func(name string, v *time.Duration, d time.Duration) {
		switch {
		case *v < 0:
			bad("%s %v is negative", name, *v)
		case *v == 0:
			*v = d
		}
	}
	def("FlushInterval", &o.FlushInterval, 10*time.Millisecond)
	def("CheckpointInterval", &o.CheckpointInterval, 5*time.Second)
	def("HistoryAge", &o.HistoryAge, 5*time.Minute)
	if o.HistoryRevisions == 0 {
		o.HistoryRevisions = 100_000
	}
	if o.GroupCommitDelay < 0 {
		bad("GroupCommitDelay %v is negative", o.GroupCommitDelay)
	}
	defInt := func(name string, v *int64, d int64) {
		switch {
		case *v < 0:
			bad("%s %d is negative", name, *v)
		case *v == 0:
			*v = d
		}
	}
	flushBytes, segSize := int64(o.FlushBytes), int64(o.SegmentSize)
	defInt("FlushBytes", &flushBytes, 1<<20)
	defInt("SegmentSize", &segSize, 8<<20)
	defInt("CheckpointBytes", &o.CheckpointBytes, 64<<20)
	defInt("CheckpointLogBytes", &o.CheckpointLogBytes, 128<<20)
	defInt("HistoryBytes", &o.HistoryBytes, 512<<20)
	defInt("MaxMemtableBytes", &o.MaxMemtableBytes, max(256<<20, o.CheckpointBytes))
	o.FlushBytes, o.SegmentSize = int(flushBytes), int(segSize)
	if o.MaxMemtableBytes < o.CheckpointBytes {
		bad("MaxMemtableBytes %d is below CheckpointBytes %d", o.MaxMemtableBytes, o.CheckpointBytes)
	}
	if o.SegmentSize > 1<<30 {
		bad("SegmentSize %d is over 1 GiB", o.SegmentSize)
	}
	keySize, valSize := int64(o.MaxKeySize), int64(o.MaxValueSize)
	defInt("MaxKeySize", &keySize, MaxKeyLimit)
	defInt("MaxValueSize", &valSize, 16<<20)
	o.MaxKeySize, o.MaxValueSize = int(keySize), int(valSize)
	if o.MaxKeySize > MaxKeyLimit {
		bad("MaxKeySize %d is over the state store's limit of %d", o.MaxKeySize, MaxKeyLimit)
	}
	if o.MaxValueSize > MaxValueLimit {
		bad("MaxValueSize %d is over the limit of %d", o.MaxValueSize, MaxValueLimit)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.clock == nil {
		o.clock = time.Now
	}
	if o.sweepInterval <= 0 {
		o.sweepInterval = sweepInterval
	}
	if o.sweepLimit <= 0 {
		o.sweepLimit = sweepLimit
	}
	if len(errs) > 0 {
		return o, fmt.Errorf("engine: invalid options: %w", errors.Join(errs...))
	}
	return o, nil
}
