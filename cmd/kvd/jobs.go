package main

import (
	"log/slog"
	"path/filepath"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/jobs"
)

// openJobs starts the job manager over db: its records in DATA_DIR/jobs,
// backups in --backup-dir.
func openJobs(cfg config, db *engine.DB, log *slog.Logger) (*jobs.Manager, error) {
	dir := cfg.backupDir
	if dir == "" {
		dir = filepath.Join(cfg.dataDir, "backups")
	}
	return jobs.Open(db, jobs.Options{
		Dir:       filepath.Join(cfg.dataDir, "jobs"),
		BackupDir: dir,
		Retain:    cfg.jobsRetain,
		Logger:    log,
	})
}
