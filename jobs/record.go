package jobs

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kvdstore/kvd/wal"
)

// Type is a kind of job.
type Type string

// The job types.
const (
	Backup  Type = "backup"
	Restore Type = "restore"
	Verify  Type = "verify"
	Import  Type = "import"
	Compact Type = "compact"
	Defrag  Type = "defrag"
)

// Types lists the job types in the order the documentation gives them.
var Types = []Type{Backup, Restore, Verify, Import, Compact, Defrag}

// resumable reports whether a job of type t caught running by a restart is
// run again (backup, verify and compact from the start, which they may
// safely be; import from its last committed batch) rather than failed.
func (t Type) resumable() bool {
	switch t {
	case Backup, Verify, Compact, Import:
		return true
	}
	return false
}

// State is where a job is in its life.
type State string

// The states. Succeeded, Failed and Canceled are final. Interrupted is the
// state a record left running by a crash shows until the manager resumes or
// fails it, at Open.
const (
	Queued      State = "queued"
	Running     State = "running"
	Succeeded   State = "succeeded"
	Failed      State = "failed"
	Canceled    State = "canceled"
	Interrupted State = "interrupted"
)

// Final reports whether s is a final state.
func (s State) Final() bool { return s == Succeeded || s == Failed || s == Canceled }

// Params are a job's parameters. Which apply depends on the type.
type Params struct {
	// Name is the backup's file name under the backup directory (backup;
	// default backup-ID.kvdsnap), or the file restored or imported from
	// (restore, import).
	Name string `json:"name,omitempty"`
	// Format of an import: "ndjson", "resp" or "" (by the first byte).
	Format string `json:"format,omitempty"`
	// Revision below which compact drops the log's records and the
	// change history.
	Revision uint64 `json:"revision,omitempty"`
}

// Progress is how far a running job is.
type Progress struct {
	DoneBytes  int64   `json:"done_bytes"`
	TotalBytes int64   `json:"total_bytes"`
	DoneKeys   int64   `json:"done_keys"`
	TotalKeys  int64   `json:"total_keys,omitempty"`
	Fraction   float64 `json:"fraction"`
	RateBytes  float64 `json:"rate_bytes_per_s"`
	ETASeconds float64 `json:"eta_s"`
}

// Result is what a job produced.
type Result struct {
	Path     string   `json:"path,omitempty"`
	Size     int64    `json:"size,omitempty"`
	SHA256   string   `json:"sha256,omitempty"`
	Revision uint64   `json:"revision,omitempty"`
	Keys     int64    `json:"keys,omitempty"`
	Problems []string `json:"problems,omitempty"`
	// SizeBefore is the state file's size before a defrag (Size after).
	SizeBefore int64 `json:"size_before,omitempty"`
	// FirstRevision is the first revision the log still holds (compact).
	FirstRevision uint64 `json:"first_revision,omitempty"`
	// OldestRevision is the oldest revision the change history (what
	// watches read) still holds after a compact: a watch from an older
	// one gets a compacted error naming it.
	OldestRevision uint64 `json:"oldest_revision,omitempty"`
}

// Error is a failed job's error: a stable code and a message.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// The error codes of failed jobs.
const (
	CodeInterrupted   = "interrupted"    // a restart caught it running and its type does not resume
	CodeBadInput      = "bad_input"      // a malformed source file or snapshot
	CodeNotFound      = "not_found"      // the source file does not exist
	CodeSourceChanged = "source_changed" // an import's source changed between attempts
	CodeCorrupt       = "corrupt"        // verify found damage
	CodeIO            = "io_error"       // a read, write or fsync failed
	CodeStore         = "store_error"    // the store refused the work
)

// Record is a job, as listed, persisted and served.
type Record struct {
	ID         string     `json:"id"`
	Type       Type       `json:"type"`
	State      State      `json:"state"`
	Params     Params     `json:"params"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	UpdatedAt  time.Time  `json:"updated_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	Progress   Progress   `json:"progress"`
	// Revision is the store revision the job works at (a backup's R;
	// while a compact runs, the oldest revision the history has so far).
	Revision uint64  `json:"revision,omitempty"`
	Attempt  int     `json:"attempt"`
	Result   *Result `json:"result,omitempty"`
	Error    *Error  `json:"error,omitempty"`
	// Seq counts the record's changes: a waiter asks for one after the
	// Seq it has seen.
	Seq uint64 `json:"seq"`

	// Resume state of an import: the byte offset after its last
	// committed batch, and what identifies its source.
	Offset     int64  `json:"offset,omitempty"`
	SourceSize int64  `json:"source_size,omitempty"`
	SourceHead string `json:"source_head,omitempty"`
}

// idPrefix and idDigits make IDs J000001, J000002, ...
const (
	idPrefix = "J"
	idDigits = 6
)

func formatID(n uint64) string { return fmt.Sprintf("%s%0*d", idPrefix, idDigits, n) }

func parseID(id string) (uint64, bool) {
	if !strings.HasPrefix(id, idPrefix) || len(id) < 2 {
		return 0, false
	}
	n, err := strconv.ParseUint(id[1:], 10, 64)
	return n, err == nil && n > 0 && formatID(n) == id
}

// store writes and reads job records in a directory: ID.json each, and SEQ,
// the last ID given, so that IDs are never reused after pruning.
type recordDir string

func (d recordDir) path(id string) string { return filepath.Join(string(d), id+".json") }

func (d recordDir) save(r *Record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return wal.WriteFileDurably(d.path(r.ID), append(b, '\n'), 0o640)
}

func (d recordDir) remove(id string) error {
	if err := os.Remove(d.path(id)); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

func (d recordDir) saveSeq(n uint64) error {
	return wal.WriteFileDurably(filepath.Join(string(d), "SEQ"), []byte(strconv.FormatUint(n, 10)+"\n"), 0o640)
}

// load reads every record and the sequence. A record that does not parse
// is reported, not fatal: it is renamed aside (ID.json.bad) so that the
// rest of the jobs go on.
func (d recordDir) load() (recs []*Record, seq uint64, bad []string, err error) {
	if err := os.MkdirAll(string(d), 0o750); err != nil {
		return nil, 0, nil, err
	}
	if b, err := os.ReadFile(filepath.Join(string(d), "SEQ")); err == nil {
		seq, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	ents, err := os.ReadDir(string(d))
	if err != nil {
		return nil, 0, nil, err
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, ".tmp") {
			os.Remove(filepath.Join(string(d), name)) // a crash while saving
			continue
		}
		id, ok := strings.CutSuffix(name, ".json")
		if !ok {
			continue
		}
		n, ok := parseID(id)
		if !ok {
			continue
		}
		seq = max(seq, n)
		b, err := os.ReadFile(filepath.Join(string(d), name))
		if err != nil {
			return nil, 0, nil, err
		}
		var r Record
		if err := json.Unmarshal(b, &r); err != nil || r.ID != id {
			bad = append(bad, name)
			os.Rename(filepath.Join(string(d), name), filepath.Join(string(d), name+".bad"))
			continue
		}
		recs = append(recs, &r)
	}
	return recs, seq, bad, nil
}
