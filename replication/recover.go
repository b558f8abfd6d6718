package replication

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/wal"
)

// Peer is a member given to Recover.
type Peer struct {
	ID, Address string
	Nonvoter    bool
}

// Recover gives a stopped node a new cluster configuration, for a cluster
// that lost its quorum for good: every surviving node is recovered with
// the same peers, offline, then started; they elect a leader among
// themselves. It appends a configuration entry, with the term of the
// log's last entry, after the last entry of the node's Raft log in dir,
// and fsyncs it; Raft takes the newest configuration in the log at start.
//
// Entries that only the lost nodes had are lost. Recover is for an outage
// that leaves no other way; see README, "Recovering from a lost quorum".
func Recover(dir string, peers []Peer) error {
	if len(peers) == 0 {
		return errors.New("replication: recover: no peers given")
	}
	var conf raft.Configuration
	seen := map[string]bool{}
	voters := 0
	for _, p := range peers {
		if p.ID == "" || p.Address == "" {
			return fmt.Errorf("replication: recover: peer %+v needs an ID and an address", p)
		}
		if seen[p.ID] {
			return fmt.Errorf("replication: recover: peer %s given twice", p.ID)
		}
		seen[p.ID] = true
		s := raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Address), Suffrage: raft.Voter}
		if p.Nonvoter {
			s.Suffrage = raft.Nonvoter
		} else {
			voters++
		}
		conf.Servers = append(conf.Servers, s)
	}
	if voters == 0 {
		return errors.New("replication: recover: the peers hold no voter")
	}
	lock, err := engine.LockDir(dir)
	if err != nil {
		return fmt.Errorf("replication: recover: %w", err)
	}
	defer lock.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(dir, "raft"), 1, hclog.NewNullLogger())
	if err != nil {
		return fmt.Errorf("replication: recover: %w", err)
	}
	metas, err := snaps.List()
	if err != nil {
		return fmt.Errorf("replication: recover: %w", err)
	}
	from, last, term := uint64(1), uint64(0), uint64(0)
	if len(metas) > 0 {
		from, last, term = metas[0].Index+1, metas[0].Index, metas[0].Term
	}
	logs, err := OpenLogStore(filepath.Join(dir, "raft", "log"), from, wal.Options{})
	if err != nil {
		return fmt.Errorf("replication: recover: %w", err)
	}
	defer logs.Close()
	if l, _ := logs.LastIndex(); l > last {
		var e raft.Log
		if err := logs.GetLog(l, &e); err != nil {
			return fmt.Errorf("replication: recover: read the last entry: %w", err)
		}
		last, term = l, e.Term
	}
	if last == 0 {
		return fmt.Errorf("replication: recover: %s holds no Raft log nor snapshot: nothing to recover", dir)
	}
	entry := &raft.Log{Index: last + 1, Term: term, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(conf)}
	if err := logs.StoreLogs([]*raft.Log{entry}); err != nil { // configuration entries are fsynced
		return fmt.Errorf("replication: recover: %w", err)
	}
	return nil
}
