package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/kvdstore/kvd/client"
)

func jobCommand() *command {
	var state, typ, name, format string
	var rev uint64
	var wait time.Duration
	c := &command{
		name:    "job",
		args:    "list | get ID | wait ID | cancel ID | submit TYPE",
		summary: "list, inspect, wait for, cancel or submit the server's jobs",
		help: `list prints the jobs, newest first (--state, --type select them); get prints one job's record;
wait waits until the job is final (or --wait has passed) and prints its record, with exit status 1
if it did not succeed; cancel cancels a queued or running job; submit TYPE submits a job of type
backup, restore, verify, import, compact or defrag (--name, --format, --rev) and prints its ID.`,
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&state, "state", "", "list: only jobs in this state")
			fs.StringVar(&typ, "type", "", "list: only jobs of this type")
			fs.StringVar(&name, "name", "", "submit: the file in the server's backup directory")
			fs.StringVar(&format, "format", "", "submit import: ndjson or resp (default: by the first byte)")
			fs.Uint64Var(&rev, "rev", 0, "submit compact: drop history below this revision")
			fs.DurationVar(&wait, "wait", 0, "wait: give up after this long (0: no limit)")
		},
		ownTimeout: true,
	}
	c.run = func(ctx context.Context, e *env, args []string) error {
		if len(args) == 0 {
			return usagef("job: want list, get ID, wait ID, cancel ID or submit TYPE")
		}
		short, cl, done, err := dialJobs(ctx, e)
		if err != nil {
			return err
		}
		defer done()
		need := func(n int) error {
			if len(args) != n+1 {
				return usagef("job %s: want %d argument(s)", args[0], n)
			}
			return nil
		}
		switch args[0] {
		case "list":
			if err := need(0); err != nil {
				return err
			}
			list, err := cl.Jobs(short, state, typ)
			if err != nil {
				return err
			}
			if e.json() {
				out := make([]map[string]string, len(list))
				for i, j := range list {
					out[i] = j.Fields
				}
				return e.writeJSON(out)
			}
			fmt.Fprintf(e.stdout, "%-8s %-8s %-10s %6s  %s\n", "ID", "TYPE", "STATE", "DONE", "DETAIL")
			for _, j := range list {
				fmt.Fprintf(e.stdout, "%-8s %-8s %-10s %5.1f%%  %s\n", j.ID, j.Type, j.State, 100*j.Fraction, jobDetail(j))
			}
			return nil
		case "get", "cancel":
			if err := need(1); err != nil {
				return err
			}
			get := cl.Job
			if args[0] == "cancel" {
				get = cl.CancelJob
			}
			j, err := get(short, args[1])
			if err != nil {
				return err
			}
			return printJob(e, j)
		case "wait":
			if err := need(1); err != nil {
				return err
			}
			return waitAndPrint(ctx, e, cl, args[1], wait)
		case "submit":
			if err := need(1); err != nil {
				return err
			}
			id, err := cl.SubmitJob(short, args[1], client.JobParams{Name: name, Format: format, Revision: rev})
			if err != nil {
				return err
			}
			if e.json() {
				return e.writeJSON(map[string]string{"id": id})
			}
			_, err = fmt.Fprintln(e.stdout, id)
			return err
		}
		return usagef("job: unknown subcommand %q", args[0])
	}
	return c
}

// dialJobs dials the server for a job command, whose own flags bound how
// long it waits: it returns a context bounded by --timeout for its short
// calls, and a function that closes the client and ends that context.
func dialJobs(ctx context.Context, e *env) (context.Context, *client.Client, func(), error) {
	short, cancel := context.WithTimeout(ctx, e.cfg.timeout)
	cl, err := e.dial(short)
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	return short, cl, func() { cl.Close(); cancel() }, nil
}

// waitJob waits for a job to be final (or limit, if > 0), showing its
// progress on standard error if that is a terminal.
func waitJob(ctx context.Context, e *env, cl *client.Client, id string, limit time.Duration) (client.Job, error) {
	if limit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, limit)
		defer cancel()
	}
	tty := isTerminal(e.stderr)
	for {
		step := 200 * time.Millisecond
		if !tty {
			step = 10 * time.Second
		}
		if dl, ok := ctx.Deadline(); ok {
			step = min(step, max(time.Until(dl), time.Millisecond))
		}
		j, err := cl.WaitJob(ctx, id, step)
		if err != nil {
			if ctx.Err() != nil && limit > 0 {
				return cl.Job(context.Background(), id)
			}
			return j, err
		}
		if tty {
			fmt.Fprintf(e.stderr, "\r\x1b[2K%s %s: %s %5.1f%% %d bytes %d keys", j.ID, j.Type, j.State, 100*j.Fraction, j.DoneBytes, j.DoneKeys)
		}
		if j.Final() || ctx.Err() != nil {
			if tty {
				fmt.Fprint(e.stderr, "\r\x1b[2K")
			}
			return j, nil
		}
	}
}

func jobDetail(j client.Job) string {
	switch {
	case j.ErrorCode != "":
		return j.ErrorCode + ": " + j.ErrorMessage
	case j.ResultPath != "":
		return fmt.Sprintf("%s (revision %d)", j.ResultPath, j.ResultRevision)
	case j.ResultKeys != 0:
		return fmt.Sprintf("%d keys", j.ResultKeys)
	}
	return ""
}

// printJob prints a record: its fields one a line, or as JSON.
func printJob(e *env, j client.Job) error {
	if e.json() {
		return e.writeJSON(j.Fields)
	}
	return writeFields(e.stdout, j.Fields)
}

func writeFields(w io.Writer, f map[string]string) error {
	order := []string{"id", "type", "state", "name", "created_at", "started_at", "finished_at", "attempt",
		"revision", "done_bytes", "total_bytes", "done_keys", "fraction", "eta_s", "seq",
		"result_path", "result_size", "result_sha256", "result_revision", "result_keys", "result_problems",
		"error_code", "error_message"}
	var b strings.Builder
	for _, k := range order {
		if v, ok := f[k]; ok && v != "" {
			b.WriteString(k + ": " + v + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// submitAndWait submits a job, waits for it and prints its record; exit
// status 1 if it did not succeed.
func submitAndWait(ctx context.Context, e *env, typ string, p client.JobParams) error {
	short, cl, done, err := dialJobs(ctx, e)
	if err != nil {
		return err
	}
	defer done()
	id, err := cl.SubmitJob(short, typ, p)
	if err != nil {
		return err
	}
	return waitAndPrint(ctx, e, cl, id, 0)
}

// waitAndPrint waits for a job (see waitJob) and prints its record: exit
// status 1 unless it succeeded.
func waitAndPrint(ctx context.Context, e *env, cl *client.Client, id string, limit time.Duration) error {
	j, err := waitJob(ctx, e, cl, id, limit)
	if err != nil {
		return err
	}
	if err := printJob(e, j); err != nil {
		return err
	}
	if j.State != "succeeded" {
		return silentError{}
	}
	return nil
}

func importCommand() *command {
	var format string
	c := &command{
		name:    "import",
		args:    "FILE",
		summary: "import keys from a file in the server's backup directory (NDJSON or redis-cli --pipe)",
		help: `Submits an import job for FILE, a file in the server's --backup-dir (kvctl passes its base
name), waits for it and prints its record. FILE holds one {"key":"...","value":"..."} object a line
(NDJSON), or SET commands in the RESP format redis-cli --pipe reads. The import commits batches
of about 1 MiB and ends with a sync; a restart of the server resumes it from its last synced batch.`,
		flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&format, "format", "", "ndjson or resp (default: by the file's first byte)")
		},
		ownTimeout: true,
	}
	c.run = func(ctx context.Context, e *env, args []string) error {
		if err := wantArgs(c, args, 1); err != nil {
			return err
		}
		name := args[0][strings.LastIndexByte(args[0], '/')+1:]
		return submitAndWait(ctx, e, "import", client.JobParams{Name: name, Format: format})
	}
	return c
}

func compactCommand() *command {
	var rev uint64
	c := &command{
		name:    "compact",
		args:    "--rev N",
		summary: "drop the history below a revision",
		help: `Submits a compact job, waits for it and prints its record. It drops the write-ahead log's
records below revision N (never those not yet checkpointed) and the change history watches read
(never past the last durable revision): result_first_revision is the log's first revision left,
result_oldest_revision the history's; a watch from below it gets "compacted".`,
		flags: func(fs *pflag.FlagSet) {
			fs.Uint64Var(&rev, "rev", 0, "drop history below this revision (required)")
		},
		ownTimeout: true,
	}
	c.run = func(ctx context.Context, e *env, args []string) error {
		if err := wantArgs(c, args, 0); err != nil {
			return err
		}
		if rev == 0 {
			return usagef("compact: --rev is required")
		}
		return submitAndWait(ctx, e, "compact", client.JobParams{Revision: rev})
	}
	return c
}

func defragCommand() *command {
	c := &command{
		name:    "defrag",
		summary: "rewrite the server's state file into a compact one",
		help: `Submits a defrag job, waits for it and prints its record (result_size: the state file's new
size). The state file keeps the space of deleted keys; a defrag copies the live data into a fresh
file and swaps it in. Checkpoints pause meanwhile; writes go on into memory, reads go on.`,
		ownTimeout: true,
	}
	c.run = func(ctx context.Context, e *env, args []string) error {
		if err := wantArgs(c, args, 0); err != nil {
			return err
		}
		return submitAndWait(ctx, e, "defrag", client.JobParams{})
	}
	return c
}
