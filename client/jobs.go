package client

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// Job is a server job's record, as JOB GET returns it (see the README's
// "Backup and jobs"). Fields holds every field as the server sent it; the
// others are parsed from it.
type Job struct {
	ID, Type, State string
	DoneBytes       int64
	TotalBytes      int64
	DoneKeys        int64
	Fraction        float64
	Revision        uint64
	// Result of a job that succeeded (or a verify that found damage).
	ResultPath     string
	ResultSize     int64
	ResultSHA256   string
	ResultRevision uint64
	ResultKeys     int64
	// Error of a job that failed.
	ErrorCode, ErrorMessage string
	Fields                  map[string]string
}

// Final reports whether the job has finished: succeeded, failed or
// canceled.
func (j Job) Final() bool {
	return j.State == "succeeded" || j.State == "failed" || j.State == "canceled"
}

// JobParams are a job's parameters: Name is the file (in the server's
// backup directory) a backup writes or a restore or import reads; Format
// an import's format (ndjson or resp; empty: by its first byte); Revision
// the revision below which compact drops history.
type JobParams struct {
	Name     string
	Format   string
	Revision uint64
}

// SubmitJob submits a job of type typ (backup, restore, verify, import,
// compact) and returns its ID. A backup submitted while one is queued or
// running returns that one's ID.
func (c *Client) SubmitJob(ctx context.Context, typ string, p JobParams) (string, error) {
	args := []any{"job", "submit", typ}
	if p.Name != "" {
		args = append(args, "name", p.Name)
	}
	if p.Format != "" {
		args = append(args, "format", p.Format)
	}
	if p.Revision != 0 {
		args = append(args, "revision", p.Revision)
	}
	id, err := c.rdb.Do(ctx, args...).Text()
	if err != nil {
		return "", mapError("job submit", err)
	}
	return id, nil
}

// Job returns a job's record.
func (c *Client) Job(ctx context.Context, id string) (Job, error) {
	return c.jobCmd(ctx, "job get", "job", "get", id)
}

// CancelJob cancels a queued or running job and returns its record.
func (c *Client) CancelJob(ctx context.Context, id string) (Job, error) {
	return c.jobCmd(ctx, "job cancel", "job", "cancel", id)
}

// WaitJob waits until the job is final, or timeout (0: no limit; ctx bounds
// it too) has passed, and returns its record.
func (c *Client) WaitJob(ctx context.Context, id string, timeout time.Duration) (Job, error) {
	return c.jobCmd(ctx, "job wait", "job", "wait", id, timeout.Milliseconds())
}

// Jobs lists the server's jobs, newest first; state and typ, if not
// empty, select them.
func (c *Client) Jobs(ctx context.Context, state, typ string) ([]Job, error) {
	args := []any{"job", "list"}
	if state != "" {
		args = append(args, "state", state)
	}
	if typ != "" {
		args = append(args, "type", typ)
	}
	res, err := c.rdb.Do(ctx, args...).Slice()
	if err != nil {
		return nil, mapError("job list", err)
	}
	out := make([]Job, 0, len(res))
	for _, r := range res {
		j, err := parseJob(r)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, nil
}

func (c *Client) jobCmd(ctx context.Context, op string, args ...any) (Job, error) {
	res, err := c.rdb.Do(ctx, args...).Result()
	if err != nil {
		return Job{}, mapError(op, err)
	}
	return parseJob(res)
}

// parseJob reads a record sent as a RESP3 map or a RESP2 flat array.
func parseJob(v any) (Job, error) {
	f := map[string]string{}
	switch m := v.(type) {
	case map[any]any:
		for k, v := range m {
			f[fmt.Sprint(k)] = fmt.Sprint(v)
		}
	case []any:
		if len(m)%2 != 0 {
			return Job{}, fmt.Errorf("kvd: job record of %d elements", len(m))
		}
		for i := 0; i < len(m); i += 2 {
			f[fmt.Sprint(m[i])] = fmt.Sprint(m[i+1])
		}
	default:
		return Job{}, fmt.Errorf("kvd: unexpected job record %T", v)
	}
	i := func(k string) int64 { n, _ := strconv.ParseInt(f[k], 10, 64); return n }
	u := func(k string) uint64 { n, _ := strconv.ParseUint(f[k], 10, 64); return n }
	fr, _ := strconv.ParseFloat(f["fraction"], 64)
	return Job{
		ID: f["id"], Type: f["type"], State: f["state"],
		DoneBytes: i("done_bytes"), TotalBytes: i("total_bytes"), DoneKeys: i("done_keys"), Fraction: fr,
		Revision:   u("revision"),
		ResultPath: f["result_path"], ResultSize: i("result_size"), ResultSHA256: f["result_sha256"],
		ResultRevision: u("result_revision"), ResultKeys: i("result_keys"),
		ErrorCode: f["error_code"], ErrorMessage: f["error_message"],
		Fields: f,
	}, nil
}
