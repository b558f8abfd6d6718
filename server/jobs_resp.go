package server

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/kvdstore/kvd/jobs"
)

// The jobs over RESP, kvd's own command group and Redis's BGSAVE,
// LASTSAVE and INFO persistence fields:
//
//	JOB SUBMIT backup [NAME name] | restore NAME name | verify | import NAME name [FORMAT ndjson|resp] | compact REVISION n
//	                              → the job's ID
//	JOB GET id                    → the record as a map (RESP3) or flat array (RESP2)
//	JOB LIST [STATE s] [TYPE t] [COUNT n] → an array of records, newest first
//	JOB WAIT id timeout-ms        → the record once final, or as it is at the timeout (0: no timeout)
//	JOB CANCEL id                 → the record
//	BGSAVE [SCHEDULE]             → a backup job (or the one queued or running)
//	LASTSAVE                      → Unix time of the last backup that succeeded (0: none)

func (s *Server) jobCommands() []*respCommand {
	return []*respCommand{
		{name: "job", arity: -2, flags: []string{"admin"}, run: cmdJob},
		{name: "bgsave", arity: -1, flags: []string{"admin"}, run: cmdBgsave},
		{name: "lastsave", arity: 1, flags: []string{"fast"}, run: cmdLastsave},
	}
}

// jobRESPError translates the jobs' errors into RESP errors.
func jobRESPError(err error) string {
	msg := err.Error()
	switch {
	case errors.Is(err, jobs.ErrNotFound):
		return "ERR " + msg
	case errors.Is(err, jobs.ErrBusy):
		return "BUSY " + msg
	case errors.Is(err, jobs.ErrBadParams):
		return "ERR " + msg
	}
	return respError(err)
}

func (c *respConn) jobsOr() *jobs.Manager {
	if c.s.cfg.Jobs == nil {
		c.writeError("ERR jobs are not enabled on this server")
	}
	return c.s.cfg.Jobs
}

func cmdJob(c *respConn, args [][]byte) {
	m := c.jobsOr()
	if m == nil {
		return
	}
	sub := strings.ToLower(string(args[1]))
	rest := args[2:]
	switch sub {
	case "submit":
		if len(rest) < 1 {
			c.writeError("ERR wrong number of arguments for 'job|submit' command")
			return
		}
		t := jobs.Type(strings.ToLower(string(rest[0])))
		var p jobs.Params
		for i := 1; i < len(rest); i += 2 {
			if i+1 >= len(rest) {
				c.writeError("ERR syntax error: option " + strconv.Quote(string(rest[i])) + " needs a value")
				return
			}
			v := string(rest[i+1])
			switch strings.ToLower(string(rest[i])) {
			case "name", "src", "dest":
				p.Name = v
			case "format":
				p.Format = strings.ToLower(v)
			case "revision", "rev":
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					c.writeError("ERR revision is not a number")
					return
				}
				p.Revision = n
			default:
				c.writeError("ERR syntax error: unknown option " + strconv.Quote(string(rest[i])))
				return
			}
		}
		rec, _, err := m.Submit(t, p)
		if err != nil {
			c.writeError(jobRESPError(err))
			return
		}
		c.writeBulkString(rec.ID)
	case "get", "cancel":
		if len(rest) != 1 {
			c.writeError("ERR wrong number of arguments for 'job|" + sub + "' command")
			return
		}
		get := m.Get
		if sub == "cancel" {
			get = m.Cancel
		}
		rec, err := get(string(rest[0]))
		if err != nil {
			c.writeError(jobRESPError(err))
			return
		}
		c.writeJobRecord(rec)
	case "wait":
		if len(rest) != 2 {
			c.writeError("ERR wrong number of arguments for 'job|wait' command")
			return
		}
		ms, err := strconv.ParseInt(string(rest[1]), 10, 64)
		if err != nil || ms < 0 {
			c.writeError("ERR timeout is not a number of milliseconds >= 0")
			return
		}
		ctx := context.Background()
		if ms > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, time.Duration(ms)*time.Millisecond)
			defer cancel()
		}
		rec, err := m.WaitFinal(ctx, string(rest[0]))
		if err != nil {
			c.writeError(jobRESPError(err))
			return
		}
		c.writeJobRecord(rec)
	case "list":
		var f jobs.Filter
		for i := 0; i < len(rest); i += 2 {
			if i+1 >= len(rest) {
				c.writeError("ERR syntax error")
				return
			}
			v := string(rest[i+1])
			switch strings.ToLower(string(rest[i])) {
			case "state":
				f.State = jobs.State(strings.ToLower(v))
			case "type":
				f.Type = jobs.Type(strings.ToLower(v))
			case "count":
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 {
					c.writeError("ERR count is not a number >= 0")
					return
				}
				f.Limit = n
			default:
				c.writeError("ERR syntax error: unknown option " + strconv.Quote(string(rest[i])))
				return
			}
		}
		list := m.List(f)
		c.writeArray(len(list))
		for _, r := range list {
			c.writeJobRecord(r)
		}
	default:
		c.writeError("ERR unknown subcommand " + strconv.Quote(string(args[1])) + "; try SUBMIT, GET, LIST, WAIT or CANCEL")
	}
}

// writeJobRecord writes a record as a map of strings.
func (c *respConn) writeJobRecord(r jobs.Record) {
	ts := func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	u := func(n uint64) string { return strconv.FormatUint(n, 10) }
	i := func(n int64) string { return strconv.FormatInt(n, 10) }
	kv := []string{
		"id", r.ID, "type", string(r.Type), "state", string(r.State),
		"created_at", ts(&r.CreatedAt), "started_at", ts(r.StartedAt), "finished_at", ts(r.FinishedAt),
		"done_bytes", i(r.Progress.DoneBytes), "total_bytes", i(r.Progress.TotalBytes),
		"done_keys", i(r.Progress.DoneKeys), "fraction", strconv.FormatFloat(r.Progress.Fraction, 'f', 4, 64),
		"eta_s", strconv.FormatFloat(r.Progress.ETASeconds, 'f', 1, 64),
		"revision", u(r.Revision), "attempt", strconv.Itoa(r.Attempt), "seq", u(r.Seq),
	}
	if r.Params.Name != "" {
		kv = append(kv, "name", r.Params.Name)
	}
	if res := r.Result; res != nil {
		kv = append(kv, "result_path", res.Path, "result_size", i(res.Size), "result_sha256", res.SHA256,
			"result_revision", u(res.Revision), "result_keys", i(res.Keys))
		if len(res.Problems) > 0 {
			kv = append(kv, "result_problems", strings.Join(res.Problems, "; "))
		}
		if r.Type == jobs.Compact {
			kv = append(kv, "result_first_revision", u(res.FirstRevision), "result_oldest_revision", u(res.OldestRevision))
		}
	}
	if e := r.Error; e != nil {
		kv = append(kv, "error_code", e.Code, "error_message", e.Message)
	}
	c.writeMap(len(kv) / 2)
	for _, s := range kv {
		c.writeBulkString(s)
	}
}

func cmdBgsave(c *respConn, args [][]byte) {
	m := c.jobsOr()
	if m == nil {
		return
	}
	if len(args) > 2 || (len(args) == 2 && !strings.EqualFold(string(args[1]), "schedule")) {
		c.writeError("ERR syntax error")
		return
	}
	_, existing, err := m.Submit(jobs.Backup, jobs.Params{})
	switch {
	case err != nil:
		c.writeError(jobRESPError(err))
	case existing:
		c.writeStatus("Background saving already in progress")
	default:
		c.writeStatus("Background saving started")
	}
}

func cmdLastsave(c *respConn, _ [][]byte) {
	m := c.jobsOr()
	if m == nil {
		return
	}
	last := m.BackupStatus().LastSave
	if last.IsZero() {
		c.writeInt(0)
		return
	}
	c.writeInt(last.Unix())
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// infoJobs writes INFO persistence's fields of the backups (Redis's rdb_*,
// mapped onto backup jobs) and of the jobs.
func (s *Server) infoJobs(field func(k string, v any)) {
	m := s.cfg.Jobs
	if m == nil {
		return
	}
	st := m.BackupStatus()
	field("rdb_bgsave_in_progress", boolInt(st.Current != nil && st.Current.State == jobs.Running))
	last := int64(0)
	if !st.LastSave.IsZero() {
		last = st.LastSave.Unix()
	}
	field("rdb_last_save_time", last)
	field("rdb_changes_since_last_save", s.store.WrittenRevision()-min(st.LastRevision, s.store.WrittenRevision()))
	if st.LastFailed {
		field("rdb_last_bgsave_status", "err")
	} else {
		field("rdb_last_bgsave_status", "ok")
	}
	field("rdb_last_bgsave_time_sec", int64(st.LastDuration.Seconds()))
	cur := int64(-1)
	if st.Current != nil && st.Current.StartedAt != nil && st.Current.State == jobs.Running {
		cur = int64(time.Since(*st.Current.StartedAt).Seconds())
	}
	field("rdb_current_bgsave_time_sec", cur)
	if st.Current != nil {
		field("kvd_bgsave_job", st.Current.ID)
	}
	field("kvd_jobs_running", st.Running)
	field("kvd_jobs_queued", st.Queued)
}
