package server

import (
	"strconv"

	"github.com/kvdstore/kvd/replication"
)

// clusterStore is a Store that runs on a cluster (replication.Store).
type clusterStore interface {
	ClusterStatus() replication.Status
}

// clusterStatus returns the cluster's status as this node sees it, and
// false on a single node.
func (s *Server) clusterStatus() (replication.Status, bool) {
	cs, ok := s.store.(clusterStore)
	if !ok {
		return replication.Status{}, false
	}
	return cs.ClusterStatus(), true
}

// infoReplication writes INFO's replication section: Redis's role and
// replica count, and the node's view of the cluster.
func (s *Server) infoReplication(field func(k string, v any)) {
	st, ok := s.clusterStatus()
	if !ok {
		field("role", "master")
		field("connected_slaves", 0)
		field("cluster_enabled", 0)
		return
	}
	role := "slave"
	if st.State == "Leader" {
		role = "master"
	}
	field("role", role)
	field("connected_slaves", max(len(st.Members)-1, 0))
	field("cluster_enabled", 1)
	field("node_id", st.ID)
	field("raft_address", st.Address)
	field("raft_state", st.State)
	field("raft_term", st.Term)
	field("leader_id", st.LeaderID)
	field("leader_address", st.LeaderAddress)
	field("commit_index", st.CommitIndex)
	field("applied_index", st.AppliedIndex)
	field("last_index", st.LastIndex)
	field("durable_index", st.DurableIndex)
	field("applied_revision", st.Revision)
	field("last_contact_ms", st.LastContact.Milliseconds())
	field("members", len(st.Members))
	for i, m := range st.Members {
		role := "follower"
		if m.Leader {
			role = "leader"
		}
		suffrage := "voter"
		if !m.Voter {
			suffrage = "nonvoter"
		}
		field("member"+strconv.Itoa(i), "id="+m.ID+",address="+m.Address+",role="+role+",suffrage="+suffrage)
	}
}
