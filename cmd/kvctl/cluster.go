package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/kvdstore/kvd/client"
)

// memberCommand is "kvctl member list|add|remove|promote|demote".
func memberCommand() *command {
	c := &command{
		name:    "member",
		args:    "list | add ID ADDR [--nonvoter] | remove ID | promote ID ADDR | demote ID",
		summary: "list or change a cluster's members (cluster mode)",
		help: "ADDR is the member's cluster address (its --raft-advertise, or --raft-listen).\n" +
			"Changes go through the leader, whichever node --addr names. A new node\n" +
			"usually joins by itself (kvd --join); add is for a node started without --join,\n" +
			"and to give a member a new address.",
	}
	var nonvoter bool
	c.flags = func(fs *pflag.FlagSet) {
		fs.BoolVar(&nonvoter, "nonvoter", false, "add: the member receives the log but does not vote")
	}
	c.run = func(ctx context.Context, e *env, args []string) error {
		if len(args) == 0 {
			return usagef("member: want list, add, remove, promote or demote")
		}
		cl, err := e.dial(ctx)
		if err != nil {
			return err
		}
		defer cl.Close()
		sub, rest := args[0], args[1:]
		want := func(n int) error {
			if len(rest) != n {
				return usagef("member %s: want %d arguments, got %d", sub, n, len(rest))
			}
			return nil
		}
		switch sub {
		case "list":
			if err := want(0); err != nil {
				return err
			}
			ms, err := cl.Members(ctx)
			if err != nil {
				return err
			}
			return printMembers(e, ms)
		case "add":
			if err := want(2); err != nil {
				return err
			}
			err = cl.AddMember(ctx, rest[0], rest[1], !nonvoter)
		case "promote":
			if err := want(2); err != nil {
				return err
			}
			err = cl.AddMember(ctx, rest[0], rest[1], true)
		case "remove":
			if err := want(1); err != nil {
				return err
			}
			err = cl.RemoveMember(ctx, rest[0])
		case "demote":
			if err := want(1); err != nil {
				return err
			}
			err = cl.DemoteMember(ctx, rest[0])
		default:
			return usagef("member: unknown subcommand %q: want list, add, remove, promote or demote", sub)
		}
		if err != nil {
			return err
		}
		ms, err := cl.Members(ctx)
		if err != nil {
			return err
		}
		return printMembers(e, ms)
	}
	return c
}

func printMembers(e *env, ms []client.Member) error {
	if e.json() {
		rows := make([]map[string]any, 0, len(ms))
		for _, m := range ms {
			rows = append(rows, map[string]any{"id": m.ID, "address": m.Address, "voter": m.Voter, "leader": m.Leader})
		}
		return e.writeJSON(rows)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tSUFFRAGE\tROLE")
	for _, m := range ms {
		suffrage, role := "voter", "follower"
		if !m.Voter {
			suffrage = "nonvoter"
		}
		if m.Leader {
			role = "leader"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.ID, m.Address, suffrage, role)
	}
	return tw.Flush()
}

// leaderCommand is "kvctl leader [transfer [ID]]".
func leaderCommand() *command {
	c := &command{
		name:    "leader",
		args:    "[transfer [ID]]",
		summary: "show the cluster's leader, or hand the leadership over (cluster mode)",
	}
	c.run = func(ctx context.Context, e *env, args []string) error {
		cl, err := e.dial(ctx)
		if err != nil {
			return err
		}
		defer cl.Close()
		// moved reports whether st shows the transfer done.
		moved := func(client.ClusterStatus) bool { return true }
		switch {
		case len(args) == 0:
		case args[0] == "transfer" && len(args) <= 2:
			before, err := cl.ClusterStatus(ctx)
			if err != nil {
				return err
			}
			id := ""
			if len(args) == 2 {
				id = args[1]
			}
			if err := cl.TransferLeader(ctx, id); err != nil {
				return err
			}
			moved = func(st client.ClusterStatus) bool {
				return st.LeaderID != "" && st.LeaderID != before.LeaderID && (id == "" || st.LeaderID == id)
			}
		default:
			return usagef("leader: want no argument, or transfer [ID]")
		}
		st, err := cl.ClusterStatus(ctx)
		// After a transfer the node asked knows the new leader once it
		// has heard from it: wait for that a little.
		for deadline := time.Now().Add(5 * time.Second); err == nil && !moved(st) && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
			st, err = cl.ClusterStatus(ctx)
		}
		if err != nil {
			return err
		}
		if e.json() {
			return e.writeJSON(map[string]any{"leader_id": st.LeaderID, "leader_address": st.LeaderAddress, "term": st.Term})
		}
		if st.LeaderID == "" {
			fmt.Fprintln(e.stdout, "no leader")
			return nil
		}
		fmt.Fprintf(e.stdout, "%s %s (term %d)\n", st.LeaderID, st.LeaderAddress, st.Term)
		return nil
	}
	return c
}

// clusterCommand is "kvctl cluster status".
func clusterCommand() *command {
	c := &command{
		name:    "cluster",
		args:    "status",
		summary: "show a node's view of its cluster: role, term, indexes, lag (cluster mode)",
	}
	c.run = func(ctx context.Context, e *env, args []string) error {
		if len(args) != 1 || args[0] != "status" {
			return usagef("cluster: want status")
		}
		cl, err := e.dial(ctx)
		if err != nil {
			return err
		}
		defer cl.Close()
		st, err := cl.ClusterStatus(ctx)
		if err != nil {
			return err
		}
		ms, err := cl.Members(ctx)
		if err != nil {
			return err
		}
		if e.json() {
			return e.writeJSON(map[string]any{"node": st, "members": ms})
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 1, ' ', 0)
		for _, row := range []struct {
			k string
			v any
		}{
			{"node", st.ID}, {"address", st.Address}, {"state", st.State}, {"term", st.Term},
			{"leader", st.LeaderID + " " + st.LeaderAddress},
			{"commit index", st.CommitIndex}, {"applied index", st.AppliedIndex},
			{"last index", st.LastIndex}, {"durable index", st.DurableIndex},
			{"applied revision", st.Revision}, {"last contact", st.LastContact},
		} {
			fmt.Fprintf(tw, "%s:\t%v\n", row.k, row.v)
		}
		if st.Diverged != "" {
			fmt.Fprintf(tw, "diverged:\t%s\n", st.Diverged)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout)
		return printMembers(e, ms)
	}
	return c
}
