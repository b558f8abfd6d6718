package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/wal"
)

// runBackup writes a snapshot of the store to NAME.part in the backup
// directory, fsyncs it and renames it to NAME. Its revision R is frozen
// when the job starts and made durable before anything is written, so that
// a backup never holds a write the store could still lose.
func (m *Manager) runBackup(ctx context.Context, rec *Record, p *reporter) (*Result, error) {
	snap, err := m.store.Snapshot()
	if err != nil {
		return nil, fail(CodeStore, err)
	}
	defer snap.Close()
	rev := snap.Revision()
	if err := m.store.Sync(); err != nil {
		return nil, fail(CodeStore, fmt.Errorf("jobs: make revision %d durable: %w", rev, err))
	}
	total := snap.Size()
	if err := p.update(Progress{TotalBytes: total}, true, func(r *Record) { r.Revision = rev }); err != nil {
		return nil, err
	}
	final := m.path(rec.Params.Name)
	part := final + ".part"
	res, err := writeArtifact(ctx, snap, part, final, func(done int64) error {
		return p.update(Progress{DoneBytes: done, TotalBytes: total}, false, nil)
	})
	if err != nil {
		return nil, err
	}
	res.Revision = rev
	return res, nil
}

// writeArtifact streams snap to part (with its sha256), fsyncs it, renames
// it to final and fsyncs the directory. On error part is removed.
func writeArtifact(ctx context.Context, snap *engine.Snapshot, part, final string, progress func(done int64) error) (_ *Result, err error) {
	f, err := os.OpenFile(part, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, fail(CodeIO, fmt.Errorf("jobs: backup: %w", err))
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(part)
		}
	}()
	h := sha256.New()
	w := &progressWriter{progressCount{ctx: ctx, progress: progress}, io.MultiWriter(f, h)}
	n, err := snap.WriteTo(w)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return nil, context.Canceled
		}
		return nil, fail(CodeIO, err)
	}
	if err := f.Sync(); err != nil {
		return nil, fail(CodeIO, fmt.Errorf("jobs: backup: fsync: %w", err))
	}
	if err := f.Close(); err != nil {
		return nil, fail(CodeIO, fmt.Errorf("jobs: backup: %w", err))
	}
	if err := os.Rename(part, final); err != nil {
		return nil, fail(CodeIO, fmt.Errorf("jobs: backup: %w", err))
	}
	if err := wal.SyncDir(filepath.Dir(final)); err != nil {
		return nil, fail(CodeIO, err)
	}
	return &Result{Path: final, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// progressCount counts the bytes that go through a progressWriter or
// progressReader, reports them, and stops the transfer when ctx is done.
type progressCount struct {
	ctx      context.Context
	n        int64
	progress func(done int64) error
}

func (pc *progressCount) before() error { return pc.ctx.Err() }

func (pc *progressCount) after(n int, err error) (int, error) {
	pc.n += int64(n)
	if err == nil && pc.progress != nil {
		err = pc.progress(pc.n)
	}
	return n, err
}

type progressWriter struct {
	progressCount
	w io.Writer
}

func (pw *progressWriter) Write(b []byte) (int, error) {
	if err := pw.before(); err != nil {
		return 0, err
	}
	return pw.after(pw.w.Write(b))
}

type progressReader struct {
	progressCount
	r io.Reader
}

func (pr *progressReader) Read(b []byte) (int, error) {
	if err := pr.before(); err != nil {
		return 0, err
	}
	return pr.after(pr.r.Read(b))
}

// runRestore replaces the store's content with a backup (engine's
// DB.Restore: staged, so that a crash leaves the old store or the new one).
func (m *Manager) runRestore(ctx context.Context, rec *Record, p *reporter) (*Result, error) {
	f, err := os.Open(m.path(rec.Params.Name))
	if err != nil {
		return nil, fail(CodeNotFound, fmt.Errorf("jobs: restore: %w", err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fail(CodeIO, err)
	}
	total := fi.Size()
	r := &progressReader{progressCount{ctx: ctx, progress: func(done int64) error {
		return p.update(Progress{DoneBytes: done, TotalBytes: total}, false, nil)
	}}, f}
	info, err := m.store.Restore(r)
	switch {
	case errors.Is(err, context.Canceled):
		return nil, context.Canceled
	case errors.Is(err, engine.ErrBadSnapshot):
		return nil, fail(CodeBadInput, err)
	case err != nil:
		return nil, fail(CodeStore, err)
	}
	return &Result{Path: f.Name(), Size: total, Revision: info.Revision, Keys: info.Keys,
		SHA256: hex.EncodeToString(info.SHA256[:])}, nil
}

// runVerify checks the state file online; damage fails the job with the
// code "corrupt" and lists the problems in its result.
func (m *Manager) runVerify(ctx context.Context, p *reporter) (*Result, error) {
	rep, err := m.store.Verify(func(keys int) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return p.update(Progress{DoneKeys: int64(keys)}, false, nil)
	})
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return nil, err
		}
		return nil, fail(CodeStore, err)
	}
	res := &Result{Keys: int64(rep.Keys), Problems: rep.Problems}
	if len(rep.Problems) > 0 {
		return res, fail(CodeCorrupt, fmt.Errorf("jobs: verify found %d problems in the state file; the store reports itself degraded", len(rep.Problems)))
	}
	return res, nil
}
