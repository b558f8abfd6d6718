package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Errors of a kvd cluster (server started with --raft-listen).
var (
	// ErrNoLeader: the cluster has no leader the server can reach (an
	// election is under way, or no quorum is up). Nothing was executed:
	// retrying is safe.
	ErrNoLeader = errors.New("kvd: cluster has no leader")
	// ErrDiverged: the server holds writes the rest of its cluster lost
	// (after a power loss of a majority in async mode) and serves nothing
	// until it is rebuilt. Use another node.
	ErrDiverged = errors.New("kvd: node diverged from its cluster")
	// ErrTooStale: a read's max staleness was exceeded on a follower.
	ErrTooStale = errors.New("kvd: node too stale for the read")
)

// Member is a member of a kvd cluster.
type Member struct {
	ID      string
	Address string // cluster (Raft) address
	Voter   bool
	Leader  bool
}

// Members returns the cluster's members (RAFT MEMBERS).
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	rows, err := c.rdb.Do(ctx, "raft", "members").Slice()
	if err != nil {
		return nil, mapError("members", err)
	}
	ms := make([]Member, 0, len(rows))
	for _, r := range rows {
		f, ok := r.([]any)
		if !ok || len(f) != 4 {
			return nil, &OpError{Op: "members", Err: fmt.Errorf("unexpected reply %v", r)}
		}
		s := func(i int) string { v, _ := f[i].(string); return v }
		ms = append(ms, Member{ID: s(0), Address: s(1), Voter: s(2) == "voter", Leader: s(3) == "leader"})
	}
	return ms, nil
}

// AddMember adds a member at its cluster address, as a voter or not (RAFT
// ADD); for a member already there it changes its address, or promotes
// it when voter is set.
func (c *Client) AddMember(ctx context.Context, id, addr string, voter bool) error {
	args := []any{"raft", "add", id, addr}
	if !voter {
		args = append(args, "nonvoter")
	}
	return mapError("add member", c.rdb.Do(ctx, args...).Err())
}

// DemoteMember makes a voter a nonvoter (RAFT DEMOTE).
func (c *Client) DemoteMember(ctx context.Context, id string) error {
	return mapError("demote member", c.rdb.Do(ctx, "raft", "demote", id).Err())
}

// RemoveMember removes a member (RAFT REMOVE).
func (c *Client) RemoveMember(ctx context.Context, id string) error {
	return mapError("remove member", c.rdb.Do(ctx, "raft", "remove", id).Err())
}

// TransferLeader hands the leadership to the member id, or to the most
// up-to-date follower when id is empty (RAFT TRANSFER).
func (c *Client) TransferLeader(ctx context.Context, id string) error {
	args := []any{"raft", "transfer"}
	if id != "" {
		args = append(args, id)
	}
	return mapError("transfer leadership", c.rdb.Do(ctx, args...).Err())
}

// ClusterStatus is a node's view of its cluster.
type ClusterStatus struct {
	ID            string        `json:"id"`
	Address       string        `json:"address"`
	State         string        `json:"state"` // Leader, Follower, Candidate, Shutdown
	Term          uint64        `json:"term"`
	LeaderID      string        `json:"leader_id"`
	LeaderAddress string        `json:"leader_address"`
	CommitIndex   uint64        `json:"commit_index"`
	AppliedIndex  uint64        `json:"applied_index"`
	LastIndex     uint64        `json:"last_index"`
	DurableIndex  uint64        `json:"durable_index"`
	Revision      uint64        `json:"applied_revision"`
	LastContact   time.Duration `json:"last_contact_ns"`
	Diverged      string        `json:"diverged,omitempty"`
}

// ClusterStatus returns the server's view of its cluster (RAFT STATUS).
func (c *Client) ClusterStatus(ctx context.Context) (ClusterStatus, error) {
	text, err := c.rdb.Do(ctx, "raft", "status").Text()
	if err != nil {
		return ClusterStatus{}, mapError("cluster status", err)
	}
	var st ClusterStatus
	if err := json.Unmarshal([]byte(text), &st); err != nil {
		return st, &OpError{Op: "cluster status", Err: err}
	}
	return st, nil
}
