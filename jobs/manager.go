package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/wal"
)

// Store is what the jobs need of the store. *engine.DB implements it.
type Store interface {
	Snapshot() (*engine.Snapshot, error)
	Restore(r io.Reader) (engine.SnapshotInfo, error)
	Verify(progress func(keys int) error) (engine.VerifyReport, error)
	CompactLog(rev uint64) (uint64, error)
	CompactHistory(rev uint64) (uint64, error)
	Defrag() (engine.DefragReport, error)
	Submit(b *engine.Batch, wo engine.WriteOptions) (engine.Commit, error)
	Sync() error
}

// Options configure a Manager.
type Options struct {
	// Dir holds the job records (DATA_DIR/jobs). Required.
	Dir string
	// BackupDir is where backups are written and where restore and import
	// read their files: a job names a file in it, never a path elsewhere.
	// Required.
	BackupDir string
	// Retain is how long finished records are kept (default 7 days);
	// MaxFinished how many at most (default 1000).
	Retain      time.Duration
	MaxFinished int
	// ImportBatchBytes is the size of an import's batches (default 1 MiB).
	ImportBatchBytes int
	// Logger receives the jobs' logs; nil discards them.
	Logger *slog.Logger
	// Unsupported lists the job types the store cannot run, each with the
	// reason: Submit refuses them (ErrBadParams) with it.
	Unsupported map[Type]string
	// now is the clock, for tests of pruning; nil: time.Now.
	now func() time.Time
}

// Manager runs jobs one at a time, in the order they were submitted, and
// keeps their records. Its methods are safe for concurrent use.
type Manager struct {
	store Store
	opts  Options
	dir   recordDir
	log   *slog.Logger

	mu      sync.Mutex
	recs    map[string]*Record
	seq     uint64
	queue   []string
	changed map[string]chan struct{} // closed and replaced on each change of the record
	cancel  context.CancelFunc       // of the running job
	running string
	// streams is held shared by each snapshot Snapshot gave out, and
	// exclusively by a restore or defrag while it runs.
	streams sync.RWMutex
	// lastSave is the finish time of the last backup that succeeded.
	lastSave time.Time

	wake   chan struct{}
	stop   chan struct{}
	wg     sync.WaitGroup
	closed bool
}

// Open loads the records in opts.Dir and applies the restart rules: a job
// left running by a crash is queued again if its type resumes, else failed
// with the code "interrupted"; queued jobs stay queued. Then it starts the
// worker.
func Open(store Store, opts Options) (*Manager, error) {
	if opts.Dir == "" || opts.BackupDir == "" {
		return nil, errors.New("jobs: Dir and BackupDir are required")
	}
	if opts.Retain <= 0 {
		opts.Retain = 7 * 24 * time.Hour
	}
	if opts.MaxFinished <= 0 {
		opts.MaxFinished = 1000
	}
	if opts.ImportBatchBytes <= 0 {
		opts.ImportBatchBytes = 1 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	for _, d := range []string{opts.Dir, opts.BackupDir} {
		if err := mkdirDurably(d); err != nil {
			return nil, fmt.Errorf("jobs: %w", err)
		}
	}
	m := &Manager{
		store: store, opts: opts, dir: recordDir(opts.Dir), log: opts.Logger,
		recs: map[string]*Record{}, changed: map[string]chan struct{}{},
		wake: make(chan struct{}, 1), stop: make(chan struct{}),
	}
	recs, seq, bad, err := m.dir.load()
	if err != nil {
		return nil, fmt.Errorf("jobs: load records: %w", err)
	}
	for _, b := range bad {
		m.log.Error("jobs: unreadable job record set aside", "file", b)
	}
	m.seq = seq
	slices.SortFunc(recs, func(a, b *Record) int { return strings.Compare(a.ID, b.ID) })
	now := m.opts.now()
	for _, r := range recs {
		m.recs[r.ID] = r
		if r.Type == Backup && r.State == Succeeded && r.FinishedAt != nil && r.FinishedAt.After(m.lastSave) {
			m.lastSave = *r.FinishedAt
		}
		switch r.State {
		case Running, Interrupted:
			if r.Type.resumable() {
				r.State = Queued
				m.log.Info("jobs: resuming a job a restart interrupted", "id", r.ID, "type", r.Type)
			} else {
				m.finishLocked(r, Failed, nil, &Error{Code: CodeInterrupted,
					Message: "a restart interrupted the job; the store is whole (the old state or the new one)"}, now)
			}
			r.UpdatedAt = now
			r.Seq++
			if err := m.dir.save(r); err != nil {
				return nil, fmt.Errorf("jobs: %w", err)
			}
			if r.State == Queued {
				m.queue = append(m.queue, r.ID)
			}
		case Queued:
			m.queue = append(m.queue, r.ID)
		}
	}
	m.pruneLocked()
	m.wg.Add(1)
	go m.worker()
	m.kick()
	return m, nil
}

// mkdirDurably creates dir if it does not exist, and fsyncs its parent so
// that a power loss cannot take the new directory, with the records and
// files then fsynced in it, away.
func mkdirDurably(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	return wal.SyncDir(filepath.Dir(filepath.Clean(dir)))
}

// Close cancels the running job, which is left running in its record (a
// restart resumes or fails it as for a crash), and waits for the worker.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	if m.cancel != nil {
		m.cancel()
	}
	m.mu.Unlock()
	close(m.stop)
	m.wg.Wait()
	return nil
}

// Submit queues a job and returns its record. A backup submitted while one
// is queued or running returns that one's record, with existing set. While
// a restore is queued or running nothing else is accepted, and a restore
// is accepted only when nothing is queued or running (ErrBusy).
func (m *Manager) Submit(t Type, p Params) (rec Record, existing bool, err error) {
	if err := m.check(t, &p); err != nil {
		return Record{}, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return Record{}, false, ErrClosed
	}
	for _, id := range m.activeLocked() {
		r := m.recs[id]
		switch {
		case r.Type == Restore || r.Type == Defrag:
			return Record{}, false, fmt.Errorf("%w: %s %s is %s; nothing runs beside a %s", ErrBusy, r.Type, r.ID, r.State, r.Type)
		case t == Restore || t == Defrag:
			return Record{}, false, fmt.Errorf("%w: %s %s is %s; a %s runs alone", ErrBusy, r.Type, r.ID, r.State, t)
		case t == Backup && r.Type == Backup:
			return *r, true, nil
		}
	}
	m.seq++
	if err := m.dir.saveSeq(m.seq); err != nil {
		m.seq--
		return Record{}, false, fmt.Errorf("jobs: %w", err)
	}
	now := m.opts.now()
	r := &Record{ID: formatID(m.seq), Type: t, State: Queued, Params: p, CreatedAt: now, UpdatedAt: now, Seq: 1}
	if t == Backup && r.Params.Name == "" {
		r.Params.Name = "backup-" + r.ID + ".kvdsnap"
	}
	if err := m.dir.save(r); err != nil {
		return Record{}, false, fmt.Errorf("jobs: %w", err)
	}
	m.recs[r.ID] = r
	m.queue = append(m.queue, r.ID)
	m.kick()
	return *r, false, nil
}

// check validates a submission's type and parameters.
func (m *Manager) check(t Type, p *Params) error {
	if !slices.Contains(Types, t) {
		return fmt.Errorf("%w: unknown job type %q (want one of %v)", ErrBadParams, t, Types)
	}
	if why, ok := m.opts.Unsupported[t]; ok {
		return fmt.Errorf("%w: %s is not supported here: %s", ErrBadParams, t, why)
	}
	switch t {
	case Backup:
		if p.Name != "" {
			return checkName(p.Name)
		}
	case Restore, Import:
		if p.Name == "" {
			return fmt.Errorf("%w: %s needs the name of a file in the backup directory", ErrBadParams, t)
		}
		if err := checkName(p.Name); err != nil {
			return err
		}
		if _, err := os.Stat(m.path(p.Name)); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrBadParams, p.Name, err)
		}
		if t == Import && p.Format != "" && p.Format != "ndjson" && p.Format != "resp" {
			return fmt.Errorf("%w: import format %q (want ndjson or resp)", ErrBadParams, p.Format)
		}
	case Compact:
		if p.Revision == 0 {
			return fmt.Errorf("%w: compact needs a revision", ErrBadParams)
		}
	}
	return nil
}

// checkName accepts a plain file name: no directory, no "..", no ".part".
func checkName(name string) error {
	if name == "." || name == ".." || name != filepath.Base(name) || strings.ContainsAny(name, `/\`) || strings.HasSuffix(name, ".part") {
		return fmt.Errorf("%w: %q is not a plain file name in the backup directory", ErrBadParams, name)
	}
	return nil
}

func (m *Manager) path(name string) string { return filepath.Join(m.opts.BackupDir, name) }

// activeLocked returns the IDs of the queued and running jobs.
func (m *Manager) activeLocked() []string {
	ids := slices.Clone(m.queue)
	if m.running != "" {
		ids = append(ids, m.running)
	}
	return ids
}

// Get returns a job's record.
func (m *Manager) Get(id string) (Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.recs[id]
	if !ok {
		return Record{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return *r, nil
}

// Filter selects records for List; zero fields select all.
type Filter struct {
	State State
	Type  Type
	Limit int
}

// List returns the records the filter selects, newest first.
func (m *Manager) List(f Filter) []Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Record
	for _, r := range m.recs {
		if (f.State == "" || r.State == f.State) && (f.Type == "" || r.Type == f.Type) {
			out = append(out, *r)
		}
	}
	slices.SortFunc(out, func(a, b Record) int { return strings.Compare(b.ID, a.ID) })
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out
}

// Wait returns the job's record once its Seq passes after or it is final,
// or its current record when ctx ends (without error: a long poll).
func (m *Manager) Wait(ctx context.Context, id string, after uint64) (Record, error) {
	for {
		m.mu.Lock()
		r, ok := m.recs[id]
		if !ok {
			m.mu.Unlock()
			return Record{}, fmt.Errorf("%w: %q", ErrNotFound, id)
		}
		if r.Seq > after || r.State.Final() {
			rec := *r
			m.mu.Unlock()
			return rec, nil
		}
		ch := m.changedLocked(id)
		rec := *r
		m.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return rec, nil
		}
	}
}

// WaitFinal returns the job's record once it is final, or its current
// record when ctx ends.
func (m *Manager) WaitFinal(ctx context.Context, id string) (Record, error) {
	var seq uint64
	for {
		r, err := m.Wait(ctx, id, seq)
		if err != nil || r.State.Final() || ctx.Err() != nil {
			return r, err
		}
		seq = r.Seq
	}
}

func (m *Manager) changedLocked(id string) chan struct{} {
	ch, ok := m.changed[id]
	if !ok {
		ch = make(chan struct{})
		m.changed[id] = ch
	}
	return ch
}

// Cancel cancels a queued or running job and returns its record: a queued
// job is canceled at once, a running one when it next checks (its record
// turns canceled then). A final job is left as it is.
func (m *Manager) Cancel(id string) (Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.recs[id]
	if !ok {
		return Record{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	switch {
	case r.State == Queued:
		m.queue = slices.DeleteFunc(m.queue, func(q string) bool { return q == id })
		m.finishLocked(r, Canceled, nil, nil, m.opts.now())
		if err := m.dir.save(r); err != nil {
			m.log.Error("jobs: save record", "id", id, "err", err)
		}
	case id == m.running && m.cancel != nil:
		m.cancel()
	}
	return *r, nil
}

// LastSave returns the finish time of the last backup that succeeded (zero
// if none), and the record of the backup queued or running, if any.
func (m *Manager) LastSave() (time.Time, *Record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range m.activeLocked() {
		if r := m.recs[id]; r.Type == Backup {
			rec := *r
			return m.lastSave, &rec
		}
	}
	return m.lastSave, nil
}

// BackupStatus is what Redis's INFO persistence reports of BGSAVE, taken
// from the backup jobs.
type BackupStatus struct {
	LastSave     time.Time // finish of the last backup that succeeded; zero: none
	LastRevision uint64    // its revision
	LastFailed   bool      // the last backup to finish failed
	LastDuration time.Duration
	Current      *Record // the backup queued or running, if any
	Running      int     // jobs running
	Queued       int     // jobs queued
}

// BackupStatus reports on the backups.
func (m *Manager) BackupStatus() BackupStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := BackupStatus{LastSave: m.lastSave, Queued: len(m.queue)}
	if m.running != "" {
		st.Running = 1
	}
	for _, id := range m.activeLocked() {
		if r := m.recs[id]; r.Type == Backup {
			rec := *r
			st.Current = &rec
		}
	}
	var last *Record
	for _, r := range m.recs {
		if r.Type == Backup && r.State.Final() && r.State != Canceled && (last == nil || r.ID > last.ID) {
			last = r
		}
	}
	if last != nil {
		st.LastFailed = last.State == Failed
		if last.StartedAt != nil && last.FinishedAt != nil {
			st.LastDuration = last.FinishedAt.Sub(*last.StartedAt)
		}
		if last.Result != nil && !st.LastFailed {
			st.LastRevision = last.Result.Revision
		}
	}
	return st
}

// Snapshot takes a snapshot of the store for a caller to stream (GET
// /v1/snapshot), after making its revision durable; the caller calls
// release when done with it, which closes it. It is refused (ErrBusy)
// while a restore or a defrag is queued or running, and those wait for
// the snapshots streaming to be released before they start (their swap
// would wait for them with reads stopped).
func (m *Manager) Snapshot() (snap *engine.Snapshot, release func(), err error) {
	m.mu.Lock()
	for _, id := range m.activeLocked() {
		if r := m.recs[id]; r.Type == Restore || r.Type == Defrag {
			m.mu.Unlock()
			return nil, nil, fmt.Errorf("%w: %s %s is %s", ErrBusy, r.Type, r.ID, r.State)
		}
	}
	m.streams.RLock()
	m.mu.Unlock()
	snap, err = m.store.Snapshot()
	if err == nil {
		if err = m.store.Sync(); err != nil {
			snap.Close()
		}
	}
	if err != nil {
		m.streams.RUnlock()
		return nil, nil, err
	}
	var once sync.Once
	return snap, func() { once.Do(func() { snap.Close(); m.streams.RUnlock() }) }, nil
}

// Artifact opens a succeeded backup's file and returns it with the record.
func (m *Manager) Artifact(id string) (*os.File, Record, error) {
	r, err := m.Get(id)
	if err != nil {
		return nil, r, err
	}
	if r.Type != Backup || r.State != Succeeded || r.Result == nil {
		return nil, r, fmt.Errorf("%w: job %s is a %s that is %s", ErrNoArtifact, id, r.Type, r.State)
	}
	f, err := os.Open(r.Result.Path)
	if err != nil {
		return nil, r, fmt.Errorf("%w: %w", ErrNoArtifact, err)
	}
	return f, r, nil
}

func (m *Manager) kick() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// notifyLocked publishes a change of r to its waiters.
func (m *Manager) notifyLocked(r *Record) {
	r.Seq++
	if ch, ok := m.changed[r.ID]; ok {
		close(ch)
		delete(m.changed, r.ID)
	}
}

// finishLocked moves r to a final state.
func (m *Manager) finishLocked(r *Record, s State, res *Result, e *Error, now time.Time) {
	r.State, r.Result, r.Error = s, res, e
	r.FinishedAt, r.UpdatedAt = &now, now
	if s == Succeeded {
		r.Progress.Fraction, r.Progress.ETASeconds = 1, 0
		r.Progress.DoneBytes = max(r.Progress.DoneBytes, r.Progress.TotalBytes)
	}
	if s == Succeeded && r.Type == Backup {
		m.lastSave = now
	}
	m.notifyLocked(r)
}

// pruneLocked drops finished records older than Retain, then the oldest
// beyond MaxFinished.
func (m *Manager) pruneLocked() {
	var fin []*Record
	cut := m.opts.now().Add(-m.opts.Retain)
	for _, r := range m.recs {
		if !r.State.Final() {
			continue
		}
		if r.FinishedAt != nil && r.FinishedAt.Before(cut) {
			m.dropLocked(r.ID)
			continue
		}
		fin = append(fin, r)
	}
	if len(fin) > m.opts.MaxFinished {
		slices.SortFunc(fin, func(a, b *Record) int { return strings.Compare(a.ID, b.ID) })
		for _, r := range fin[:len(fin)-m.opts.MaxFinished] {
			m.dropLocked(r.ID)
		}
	}
}

func (m *Manager) dropLocked(id string) {
	if err := m.dir.remove(id); err != nil {
		m.log.Warn("jobs: prune record", "id", id, "err", err)
		return
	}
	delete(m.recs, id)
}

// worker runs the queued jobs one at a time.
func (m *Manager) worker() {
	defer m.wg.Done()
	for {
		select {
		case <-m.stop:
			return
		case <-m.wake:
		}
		for {
			m.mu.Lock()
			if m.closed || len(m.queue) == 0 {
				m.mu.Unlock()
				break
			}
			id := m.queue[0]
			m.queue = m.queue[1:]
			r := m.recs[id]
			ctx, cancel := context.WithCancel(context.Background())
			m.running, m.cancel = id, cancel
			now := m.opts.now()
			r.State, r.UpdatedAt, r.Error = Running, now, nil
			r.StartedAt = &now
			r.Attempt++
			m.notifyLocked(r)
			err := m.dir.save(r)
			rec := *r
			m.mu.Unlock()
			if err != nil {
				m.log.Error("jobs: save record", "id", id, "err", err)
			}
			m.log.Info("jobs: started", "id", id, "type", rec.Type, "attempt", rec.Attempt)
			res, jerr := m.run(ctx, &rec)
			cancel()
			m.end(id, res, jerr)
		}
	}
}

// end records a job's outcome. A job stopped by Close stays running in its
// record, for the next Open to resume or fail.
func (m *Manager) end(id string, res *Result, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.recs[id]
	m.running, m.cancel = "", nil
	now := m.opts.now()
	switch {
	case err == nil:
		m.finishLocked(r, Succeeded, res, nil, now)
	case m.closed && errors.Is(err, context.Canceled):
		return
	case errors.Is(err, context.Canceled):
		m.finishLocked(r, Canceled, res, nil, now)
	default:
		var je *jobError
		e := &Error{Code: CodeIO, Message: err.Error()}
		if errors.As(err, &je) {
			e.Code = je.code
		}
		m.finishLocked(r, Failed, res, e, now)
	}
	if serr := m.dir.save(r); serr != nil {
		m.log.Error("jobs: save record", "id", id, "err", serr)
	}
	m.log.Info("jobs: finished", "id", id, "type", r.Type, "state", r.State)
	m.pruneLocked()
}

// jobError is a job's failure with its code.
type jobError struct {
	code string
	err  error
}

func (e *jobError) Error() string { return e.err.Error() }
func (e *jobError) Unwrap() error { return e.err }

func fail(code string, err error) error { return &jobError{code, err} }

// run runs one job. rec is a copy the job may read; it reports progress
// through a reporter.
func (m *Manager) run(ctx context.Context, rec *Record) (*Result, error) {
	p := &reporter{m: m, id: rec.ID, start: time.Now()}
	if rec.Type == Restore || rec.Type == Defrag {
		m.streams.Lock()
		defer m.streams.Unlock()
	}
	switch rec.Type {
	case Backup:
		return m.runBackup(ctx, rec, p)
	case Restore:
		return m.runRestore(ctx, rec, p)
	case Verify:
		return m.runVerify(ctx, p)
	case Compact:
		return m.runCompact(ctx, rec, p)
	case Import:
		return m.runImport(ctx, rec, p)
	case Defrag:
		rep, err := m.store.Defrag()
		if err != nil {
			return nil, fail(CodeStore, err)
		}
		return &Result{Size: rep.After, SizeBefore: rep.Before}, nil
	}
	return nil, fail(CodeBadInput, fmt.Errorf("jobs: job type %q cannot run", rec.Type))
}

// runCompact drops the log's records and the change history below the
// job's revision. Both are quick (a few segment files dropped or cut), and
// run again they change nothing.
func (m *Manager) runCompact(ctx context.Context, rec *Record, p *reporter) (*Result, error) {
	first, err := m.store.CompactLog(rec.Params.Revision)
	if err != nil {
		return nil, fail(CodeStore, err)
	}
	oldest, err := m.store.CompactHistory(rec.Params.Revision)
	if err != nil {
		return nil, fail(CodeStore, err)
	}
	return &Result{FirstRevision: first, OldestRevision: oldest}, nil
}

// reporter publishes a running job's progress: to waiters at most every
// 100 ms, to its record on disk at most every second.
type reporter struct {
	m           *Manager
	id          string
	start       time.Time
	lastNotify  time.Time
	lastPersist time.Time
}

// update sets the progress (and with set, more of the record) and
// publishes it if it is time; force publishes and persists now.
func (p *reporter) update(pr Progress, force bool, set func(r *Record)) error {
	now := time.Now()
	if !force && now.Sub(p.lastNotify) < 100*time.Millisecond {
		return nil
	}
	el := now.Sub(p.start).Seconds()
	if el > 0 {
		pr.RateBytes = float64(pr.DoneBytes) / el
	}
	if pr.TotalBytes > 0 {
		pr.Fraction = min(1, float64(pr.DoneBytes)/float64(pr.TotalBytes))
		if pr.RateBytes > 0 {
			pr.ETASeconds = float64(pr.TotalBytes-pr.DoneBytes) / pr.RateBytes
		}
	}
	p.lastNotify = now
	m := p.m
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.recs[p.id]
	r.Progress = pr
	r.UpdatedAt = m.opts.now()
	if set != nil {
		set(r)
	}
	m.notifyLocked(r)
	if force || now.Sub(p.lastPersist) >= time.Second {
		p.lastPersist = now
		if err := m.dir.save(r); err != nil {
			return fail(CodeIO, fmt.Errorf("jobs: save record: %w", err))
		}
	}
	return nil
}
