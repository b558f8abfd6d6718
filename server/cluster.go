package server

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

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

// clusterReads is a store whose reads can be asked to be more or less
// current (replication.Store).
type clusterReads interface {
	At(o replication.ReadOptions) *replication.Store
}

// readOptions parses a read's consistency options, as HTTP's
// ?consistency=&max_stale=&min_rev= and CLIENT CONSISTENCY give them.
func parseReadOptions(consistency, maxStale, minRev string) (replication.ReadOptions, error) {
	var o replication.ReadOptions
	var err error
	if o.Consistency, err = replication.ParseConsistency(consistency); err != nil {
		return o, fmt.Errorf("consistency must be linearizable, leader or stale, not %q", consistency)
	}
	if maxStale != "" {
		d, err := time.ParseDuration(maxStale)
		if err != nil || d <= 0 {
			return o, fmt.Errorf("max_stale must be a positive duration such as 500ms, not %q", maxStale)
		}
		o.MaxStale = d
	}
	if minRev != "" {
		n, err := strconv.ParseUint(minRev, 10, 64)
		if err != nil {
			return o, fmt.Errorf("min_rev must be an unsigned integer, not %q", minRev)
		}
		o.MinRev = n
	}
	return o, nil
}

// readsFor returns the store an HTTP read uses: the server's, or on a
// cluster a view at the request's ?consistency=, ?max_stale= and
// ?min_rev=. It sets the response's X-Kvd-Leader header on a cluster.
func (s *Server) readsFor(w http.ResponseWriter, r *http.Request) (Store, error) {
	cr, ok := s.store.(clusterReads)
	if !ok {
		return s.store, nil
	}
	if cs, ok := s.store.(clusterStore); ok {
		if st := cs.ClusterStatus(); st.LeaderID != "" {
			w.Header().Set("X-Kvd-Leader", st.LeaderID+"@"+st.LeaderAddress)
		}
	}
	q := r.URL.Query()
	c, ms, mr := q.Get("consistency"), q.Get("max_stale"), q.Get("min_rev")
	if c == "" && ms == "" && mr == "" {
		return s.store, nil
	}
	if c == "" {
		c = s.store.(interface {
			Consistency() replication.Consistency
		}).Consistency().String()
	}
	o, err := parseReadOptions(c, ms, mr)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	return cr.At(o), nil
}

// reads returns the store this connection reads from: the server's, or
// the view CLIENT CONSISTENCY set, which also waits for the connection's
// own last write (read-your-writes on a follower).
func (c *respConn) reads() Store {
	if c.readOpts == nil {
		return c.s.store
	}
	o := *c.readOpts
	o.MinRev = max(o.MinRev, c.lastRev)
	return c.s.store.(clusterReads).At(o)
}

// clientConsistency answers CLIENT CONSISTENCY [level|default [MAXSTALE ms]
// [MINREV n]]: without arguments the connection's level, else it sets it.
func (c *respConn) clientConsistency(args [][]byte) {
	cr, ok := c.s.store.(clusterReads)
	if !ok || cr == nil {
		c.writeError("ERR CLIENT CONSISTENCY is for cluster mode: a single node's reads are always current")
		return
	}
	if len(args) == 0 {
		if c.readOpts == nil {
			c.writeBulkString("default")
			return
		}
		c.writeBulkString(c.readOpts.Consistency.String())
		return
	}
	if equalFold(args[0], "default") && len(args) == 1 {
		c.readOpts = nil
		c.writeOK()
		return
	}
	level, maxStale, minRev := strings.ToLower(string(args[0])), "", ""
	for i := 1; i < len(args); i += 2 {
		if i+1 >= len(args) {
			c.writeError(respErrSyntax)
			return
		}
		switch {
		case equalFold(args[i], "maxstale"):
			maxStale = string(args[i+1]) + "ms"
		case equalFold(args[i], "minrev"):
			minRev = string(args[i+1])
		default:
			c.writeError(respErrSyntax)
			return
		}
	}
	o, err := parseReadOptions(level, maxStale, minRev)
	if err != nil {
		c.writeError("ERR " + err.Error())
		return
	}
	c.readOpts = &o
	c.writeOK()
}
