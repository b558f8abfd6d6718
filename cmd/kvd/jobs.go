package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/jobs"
	"github.com/kvdstore/kvd/replication"
)

// openJobs starts the job manager over the store kvd serves: its records
// in DATA_DIR/jobs, backups in --backup-dir. On a cluster a node runs the
// jobs it is sent itself (see clusterJobs).
func openJobs(cfg config, store any, log *slog.Logger) (*jobs.Manager, error) {
	dir := cfg.backupDir
	if dir == "" {
		dir = filepath.Join(cfg.dataDir, "backups")
	}
	opts := jobs.Options{
		Dir:       filepath.Join(cfg.dataDir, "jobs"),
		BackupDir: dir,
		Retain:    cfg.jobsRetain,
		Logger:    log,
	}
	switch s := store.(type) {
	case *engine.DB:
		return jobs.Open(s, opts)
	case *replication.Store:
		opts.Unsupported = clusterUnsupported
		return jobs.Open(clusterJobs{s}, opts)
	}
	return nil, errors.New("kvd: jobs: unknown store")
}

// clusterUnsupported are the jobs a cluster node refuses, and why.
var clusterUnsupported = map[jobs.Type]string{
	jobs.Restore: "on a cluster a restore must replace every node's state through Raft, which kvd does not do yet " +
		"(a backup restores on a single node; an import job loads NDJSON or RESP files into a cluster)",
	jobs.Compact: "a cluster compacts its log with Raft's snapshots (--raft-snapshot-threshold) and each node its change history by the retention",
	jobs.Defrag:  "not yet on a cluster node",
}

// clusterJobs is a cluster node as the jobs' store. A backup (and GET
// /v1/snapshot) is of this node's state once it has applied every write
// acknowledged before the job started, made durable on a quorum (Sync)
// before the job succeeds; a verify checks this node's state file; an
// import writes through the leader as a client's writes do, so every node
// gets it. The others are refused before they run (clusterUnsupported).
type clusterJobs struct{ s *replication.Store }

var errNotOnCluster = errors.New("kvd: not supported on a cluster node")

// Snapshot waits until this node has applied every write acknowledged
// before the call (a linearizable read's barrier), then captures its state.
func (c clusterJobs) Snapshot() (*engine.Snapshot, error) {
	if err := c.s.ReadBarrier(replication.Linearizable); err != nil {
		return nil, err
	}
	return c.s.Node().DB().Snapshot()
}
func (c clusterJobs) Verify(progress func(keys int) error) (engine.VerifyReport, error) {
	return c.s.Node().DB().Verify(progress)
}
func (c clusterJobs) Submit(b *engine.Batch, wo engine.WriteOptions) (engine.Commit, error) {
	return c.s.WriteContext(context.Background(), b, wo)
}
func (c clusterJobs) Sync() error { return c.s.Sync() }

func (c clusterJobs) Restore(io.Reader) (engine.SnapshotInfo, error) {
	return engine.SnapshotInfo{}, errNotOnCluster
}
func (c clusterJobs) CompactLog(uint64) (uint64, error)     { return 0, errNotOnCluster }
func (c clusterJobs) CompactHistory(uint64) (uint64, error) { return 0, errNotOnCluster }
func (c clusterJobs) Defrag() (engine.DefragReport, error) {
	return engine.DefragReport{}, errNotOnCluster
}
