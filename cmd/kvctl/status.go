package main

import (
	"context"
	"fmt"
	"text/tabwriter"
)

func statusCommand() *command {
	c := &command{
		name:    "status",
		summary: "show the server's commit mode, revisions and fsync statistics",
	}
	c.run = func(ctx context.Context, e *env, args []string) error {
		if err := wantArgs(c, args, 0); err != nil {
			return err
		}
		cl, err := e.dial(ctx)
		if err != nil {
			return err
		}
		defer cl.Close()
		st, err := cl.Status(ctx)
		if err != nil {
			return err
		}
		if e.json() {
			return e.writeJSON(map[string]any{
				"version":           st.Version,
				"commit_mode":       st.CommitMode,
				"flush_interval":    st.FlushInterval.String(),
				"written":           st.Written,
				"durable":           st.Durable,
				"checkpointed":      st.Checkpointed,
				"fsyncs":            st.Fsyncs,
				"records_synced":    st.RecordsSynced,
				"records_per_fsync": st.RecordsPerFsync,
				"connected_clients": st.ConnectedClients,
				"uptime_seconds":    st.Uptime.Seconds(),
				"log_failed":        st.LogFailed,
			})
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 1, ' ', 0)
		for _, row := range []struct {
			k string
			v any
		}{
			{"version", st.Version},
			{"commit mode", st.CommitMode},
			{"flush interval", st.FlushInterval},
			{"written revision", st.Written},
			{"durable revision", st.Durable},
			{"checkpointed revision", st.Checkpointed},
			{"fsyncs", st.Fsyncs},
			{"records per fsync", fmt.Sprintf("%.2f", st.RecordsPerFsync)},
			{"connected clients", st.ConnectedClients},
			{"uptime", st.Uptime},
			{"log failed", st.LogFailed},
		} {
			fmt.Fprintf(tw, "%s:\t%v\n", row.k, row.v)
		}
		return tw.Flush()
	}
	return c
}
