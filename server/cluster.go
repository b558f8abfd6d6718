package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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

// consistencyDefault is a store whose reads have a default consistency
// (replication.Store).
type consistencyDefault interface {
	Consistency() replication.Consistency
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
	// Only the leader: the whole status reads the configuration through
	// Raft's loop, too much for every read.
	if id, addr := s.node().Leader(); id != "" {
		w.Header().Set("X-Kvd-Leader", id+"@"+addr)
	}
	q := r.URL.Query()
	c, ms, mr := q.Get("consistency"), q.Get("max_stale"), q.Get("min_rev")
	if c == "" && ms == "" && mr == "" {
		return s.store, nil
	}
	if c == "" {
		c = s.store.(consistencyDefault).Consistency().String()
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
	if c.barrierOK {
		if v := c.s.localReads; v != nil {
			return v
		}
	}
	if c.readOpts == nil {
		return c.s.store
	}
	o := *c.readOpts
	o.MinRev = max(o.MinRev, c.lastRev)
	return c.s.store.(clusterReads).At(o)
}

// barrierConsistency returns the read barrier this connection's reads
// need before they can be served from this node's state as it is: ok is
// false when a barrier alone is not enough (a minimum revision or a bound
// on staleness the connection set).
func (c *respConn) barrierConsistency() (replication.Consistency, bool) {
	cr, ok := c.s.store.(consistencyDefault)
	if !ok {
		return 0, false
	}
	if c.readOpts == nil {
		return cr.Consistency(), true
	}
	o := *c.readOpts
	return o.Consistency, o.MinRev == 0 && o.MaxStale == 0
}

// readsMayWait reports whether this connection's reads may wait on a
// cluster: for the leader's confirmation or the leader itself (all but
// stale reads), or for this node to apply the connection's minimum
// revision.
func (c *respConn) readsMayWait() bool {
	cr, ok := c.s.store.(consistencyDefault)
	if !ok {
		return false
	}
	o := replication.ReadOptions{Consistency: cr.Consistency()}
	if c.readOpts != nil {
		o = *c.readOpts
		o.MinRev = max(o.MinRev, c.lastRev)
	}
	return o.Consistency != replication.Stale || o.MinRev > c.s.store.WrittenRevision()
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

// clusterNode is a store that runs on a cluster node.
type clusterNode interface {
	Node() *replication.Node
}

func (s *Server) node() *replication.Node {
	if cn, ok := s.store.(clusterNode); ok {
		return cn.Node()
	}
	return nil
}

const respErrNotCluster = "ERR this kvd is a single node: start it with --raft-listen for cluster mode"

// cmdRaft answers kvd's RAFT command group:
//
//	RAFT STATUS                       this node's view, as JSON
//	RAFT MEMBERS                      [id, address, voter|nonvoter, leader|follower] per member
//	RAFT ADD id address [NONVOTER]    add (or readdress) a member
//	RAFT PROMOTE id address           make a nonvoter a voter
//	RAFT DEMOTE id                    make a voter a nonvoter
//	RAFT REMOVE id                    remove a member
//	RAFT TRANSFER [id]                hand the leadership over
//
// Membership changes and transfers go through the leader.
func cmdRaft(c *respConn, args [][]byte) {
	n := c.s.node()
	if n == nil {
		c.writeError(respErrNotCluster)
		return
	}
	sub, rest := args[1], args[2:]
	var err error
	switch {
	case equalFold(sub, "status") && len(rest) == 0:
		b, _ := json.Marshal(n.Status())
		c.writeBulkString(string(b))
		return
	case equalFold(sub, "members") && len(rest) == 0:
		ms, err := n.Members()
		if err != nil {
			c.writeError(respError(err))
			return
		}
		c.writeArray(len(ms))
		for _, m := range ms {
			c.writeArray(4)
			c.writeBulkString(m.ID)
			c.writeBulkString(m.Address)
			c.writeBulkString(map[bool]string{true: "voter", false: "nonvoter"}[m.Voter])
			c.writeBulkString(map[bool]string{true: "leader", false: "follower"}[m.Leader])
		}
		return
	case equalFold(sub, "add") && len(rest) == 2:
		err = n.AddVoter(string(rest[0]), string(rest[1]))
	case equalFold(sub, "add") && len(rest) == 3 && equalFold(rest[2], "nonvoter"):
		err = n.AddNonvoter(string(rest[0]), string(rest[1]))
	case equalFold(sub, "promote") && len(rest) == 2:
		err = n.AddVoter(string(rest[0]), string(rest[1]))
	case equalFold(sub, "demote") && len(rest) == 1:
		err = n.Demote(string(rest[0]))
	case equalFold(sub, "remove") && len(rest) == 1:
		err = n.RemoveServer(string(rest[0]))
	case equalFold(sub, "transfer") && len(rest) <= 1:
		id := ""
		if len(rest) == 1 {
			id = string(rest[0])
		}
		err = n.TransferLeadership(id)
	case equalFold(sub, "help") && len(rest) == 0:
		c.writeHelp(raftHelp...)
		return
	default:
		c.writeError("ERR unknown RAFT subcommand or wrong number of arguments for '" + printable(sub, 64) + "'. Try RAFT HELP.")
		return
	}
	if err != nil {
		c.writeError(respError(err))
		return
	}
	c.writeOK()
}

var raftHelp = []string{
	"RAFT <subcommand> [<arg> ...]. Subcommands are:",
	"STATUS",
	"    This node's view of the cluster, as JSON.",
	"MEMBERS",
	"    Every member: id, address, voter or nonvoter, leader or follower.",
	"ADD <id> <address> [NONVOTER]",
	"    Add a member (or give a member a new address).",
	"PROMOTE <id> <address>",
	"    Make a nonvoter a voter.",
	"DEMOTE <id>",
	"    Make a voter a nonvoter.",
	"REMOVE <id>",
	"    Remove a member.",
	"TRANSFER [<id>]",
	"    Hand the leadership to <id>, or to the most up-to-date follower.",
	"HELP",
	"    Print this help.",
}

// clusterRoutes registers the cluster endpoints:
//
//	GET    /v1/cluster                 this node's view (replication.Status)
//	GET    /v1/cluster/members         the members
//	POST   /v1/cluster/members         {"id","address","voter"}: add, readdress, promote or demote a member
//	DELETE /v1/cluster/members/{id}    remove a member
//	POST   /v1/cluster/transfer        {"id"} (empty: any): hand the leadership over
//	GET    /readyz                     200 once this node can serve linearizable reads
//
// On a single node they answer 404 not_cluster (but /readyz, 200).
func (s *Server) clusterRoutes(route func(pattern, name string, h http.HandlerFunc)) {
	withNode := func(h func(w http.ResponseWriter, r *http.Request, n *replication.Node)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			n := s.node()
			if n == nil {
				writeJSONError(w, &httpError{http.StatusNotFound, codeNotCluster, "this kvd is a single node: start it with --raft-listen for cluster mode"})
				return
			}
			h(w, r, n)
		}
	}
	route("GET /v1/cluster", "cluster", withNode(func(w http.ResponseWriter, _ *http.Request, n *replication.Node) {
		writeJSON(w, http.StatusOK, n.Status())
	}))
	route("GET /v1/cluster/members", "cluster_members", withNode(func(w http.ResponseWriter, _ *http.Request, n *replication.Node) {
		ms, err := n.Members()
		if err != nil {
			s.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"members": ms})
	}))
	route("POST /v1/cluster/members", "cluster_members", withNode(func(w http.ResponseWriter, r *http.Request, n *replication.Node) {
		var req struct {
			ID      string `json:"id"`
			Address string `json:"address"`
			Voter   *bool  `json:"voter"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil || req.ID == "" {
			s.fail(w, badRequest(`the body must be {"id": ..., "address": ..., "voter": true|false}`))
			return
		}
		voter := req.Voter == nil || *req.Voter
		var err error
		switch {
		case voter && req.Address == "":
			err = badRequest("address is required to add or promote a voter")
		case voter:
			err = n.AddVoter(req.ID, req.Address)
		case req.Address != "":
			err = n.AddNonvoter(req.ID, req.Address)
		default:
			err = n.Demote(req.ID)
		}
		if err != nil {
			s.fail(w, err)
			return
		}
		ms, _ := n.Members()
		writeJSON(w, http.StatusOK, map[string]any{"members": ms})
	}))
	route("DELETE /v1/cluster/members/{id}", "cluster_members", withNode(func(w http.ResponseWriter, r *http.Request, n *replication.Node) {
		if err := n.RemoveServer(r.PathValue("id")); err != nil {
			s.fail(w, err)
			return
		}
		ms, _ := n.Members()
		writeJSON(w, http.StatusOK, map[string]any{"members": ms})
	}))
	route("POST /v1/cluster/transfer", "cluster_transfer", withNode(func(w http.ResponseWriter, r *http.Request, n *replication.Node) {
		var req struct {
			ID string `json:"id"`
		}
		if r.ContentLength != 0 {
			if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
				s.fail(w, badRequest(`the body must be {"id": ...} or empty`))
				return
			}
		}
		if err := n.TransferLeadership(req.ID); err != nil {
			s.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, n.Status())
	}))
	route("GET /readyz", "readyz", func(w http.ResponseWriter, _ *http.Request) {
		n := s.node()
		if n == nil {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
			return
		}
		if err := n.Ready(); err != nil {
			s.fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
}

// waitAOFCluster is WAITAOF on a cluster. numreplicas counts other voters
// whose fsynced log covers the connection's last write: a barrier through
// the leader that a quorum fsyncs proves it for a quorum, so it answers
// the quorum less one (1 of 3 voters, 2 of 5) once the barrier commits, 0
// if it does not within the timeout. numlocal is 1 once this node's own
// log has fsynced the connection's last write, waited for until the
// timeout when numlocal asks for it.
func (c *respConn) waitAOFCluster(n *replication.Node, numLocal, numReplicas int64, timeout time.Duration) (local, replicas int64, err error) {
	start := time.Now()
	if numReplicas > 0 || numLocal > 0 {
		synced, err := c.s.syncWithin(timeout)
		if err != nil {
			return 0, 0, err
		}
		if synced {
			if ms, err := n.Members(); err == nil {
				voters := 0
				for _, m := range ms {
					if m.Voter {
						voters++
					}
				}
				replicas = int64(voters / 2)
			}
		}
	}
	for {
		if c.s.store.DurableRevision() >= c.lastRev {
			return 1, replicas, nil
		}
		if numLocal == 0 || (timeout > 0 && time.Since(start) >= timeout) {
			return 0, replicas, nil
		}
		time.Sleep(time.Millisecond)
	}
}

// raftCollector exports a cluster node's Raft figures, read once per
// scrape; on a single node it exports nothing. It describes nothing up
// front (an unchecked collector), since what it exports depends on the
// mode.
type raftCollector struct{ s *Server }

var (
	raftTermDesc      = prometheus.NewDesc("kvd_raft_term", "The node's current Raft term.", nil, nil)
	raftCommitDesc    = prometheus.NewDesc("kvd_raft_commit_index", "The Raft commit index this node knows.", nil, nil)
	raftAppliedDesc   = prometheus.NewDesc("kvd_raft_applied_index", "The last Raft index this node's state machine went through.", nil, nil)
	raftLastDesc      = prometheus.NewDesc("kvd_raft_last_index", "The last index in this node's Raft log.", nil, nil)
	raftDurableDesc   = prometheus.NewDesc("kvd_raft_durable_index", "The last index this node's Raft log has fsynced.", nil, nil)
	raftContactDesc   = prometheus.NewDesc("kvd_raft_last_contact_seconds", "Time since this follower last heard from the leader (0 on the leader).", nil, nil)
	raftStateDesc     = prometheus.NewDesc("kvd_raft_state", "1 for the node's Raft state.", []string{"state"}, nil)
	raftLeaderChgDesc = prometheus.NewDesc("kvd_raft_leader_changes_total", "Leader changes this node has seen since it started.", nil, nil)
	raftMembersDesc   = prometheus.NewDesc("kvd_raft_members", "Members of the cluster's configuration, by suffrage.", []string{"suffrage"}, nil)
	raftChecksDesc    = prometheus.NewDesc("kvd_raft_state_checks_total", "State checks this node ran as leader: every member's hash of its state at one log entry, compared.", nil, nil)
	raftMismatchDesc  = prometheus.NewDesc("kvd_raft_state_check_mismatches_total", "State checks this node ran as leader in which a member's state differed from the leader's (see the log and state_check in /v1/cluster).", nil, nil)
	raftDivergedDesc  = prometheus.NewDesc("kvd_raft_diverged", "1 once this node found it holds entries the cluster lost; it serves nothing until rebuilt.", nil, nil)
)

func (c *raftCollector) Describe(chan<- *prometheus.Desc) {}

func (c *raftCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.s.node()
	if n == nil {
		return
	}
	st := n.Status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(raftTermDesc, float64(st.Term))
	gauge(raftCommitDesc, float64(st.CommitIndex))
	gauge(raftAppliedDesc, float64(st.AppliedIndex))
	gauge(raftLastDesc, float64(st.LastIndex))
	gauge(raftDurableDesc, float64(st.DurableIndex))
	gauge(raftContactDesc, st.LastContact.Seconds())
	for _, s := range []string{"Leader", "Follower", "Candidate", "Shutdown"} {
		v := 0.0
		if st.State == s {
			v = 1
		}
		gauge(raftStateDesc, v, strings.ToLower(s))
	}
	ch <- prometheus.MustNewConstMetric(raftLeaderChgDesc, prometheus.CounterValue, float64(st.LeaderChanges))
	voters, nonvoters := 0, 0
	for _, m := range st.Members {
		if m.Voter {
			voters++
		} else {
			nonvoters++
		}
	}
	gauge(raftMembersDesc, float64(voters), "voter")
	gauge(raftMembersDesc, float64(nonvoters), "nonvoter")
	diverged := 0.0
	if st.Diverged != "" {
		diverged = 1
	}
	gauge(raftDivergedDesc, diverged)
	checks, mismatches := n.StateChecks()
	ch <- prometheus.MustNewConstMetric(raftChecksDesc, prometheus.CounterValue, float64(checks))
	ch <- prometheus.MustNewConstMetric(raftMismatchDesc, prometheus.CounterValue, float64(mismatches))
}

// movedError answers a write sent to a follower of a client that asked to
// be redirected to the leader (CLIENT REDIRECT ON over RESP): it was not
// executed.
type movedError struct{ addr string }

func (e *movedError) Error() string { return "MOVED 0 " + e.addr }

// leaderMoved returns the error that redirects a write to the leader, nil
// on the leader (or on a single node).
func (s *Server) leaderMoved(http bool) (string, error) {
	n := s.node()
	if n == nil {
		return "", nil
	}
	a, leader, err := n.LeaderClientAddrs()
	if err != nil || leader {
		return "", err
	}
	if http {
		if a.HTTP == "" {
			return "", errors.New("the leader serves no HTTP")
		}
		return a.HTTP, nil
	}
	return a.RESP, nil
}

// clientRedirect answers CLIENT REDIRECT [ON|OFF].
func (c *respConn) clientRedirect(args [][]byte) {
	if c.s.node() == nil {
		c.writeError("ERR CLIENT REDIRECT is for cluster mode: a single node takes every write")
		return
	}
	switch {
	case len(args) == 0:
		c.writeBulkString(map[bool]string{true: "on", false: "off"}[c.redirect])
	case len(args) == 1 && equalFold(args[0], "on"):
		c.redirect = true
		c.writeOK()
	case len(args) == 1 && equalFold(args[0], "off"):
		c.redirect = false
		c.writeOK()
	default:
		c.writeError(respErrSyntax)
	}
}

// movedWrite reports whether c's pending write is answered with -MOVED to
// the leader instead (CLIENT REDIRECT ON on a follower), having answered
// it.
func (c *respConn) movedWrite() bool {
	if !c.redirect {
		return false
	}
	addr, err := c.s.leaderMoved(false)
	switch {
	case err != nil:
		c.finishWrite(err)
		return true
	case addr != "":
		c.finishWrite(&movedError{addr})
		return true
	}
	return false
}

// redirected answers an HTTP write with 307 to the leader when the request
// asks for it (?redirect=true) and this node is a follower; it reports
// whether it did.
func (s *Server) redirected(w http.ResponseWriter, r *http.Request) bool {
	v := r.URL.Query().Get("redirect")
	if v == "" || v == "false" || s.node() == nil {
		return false
	}
	if v != "true" {
		s.fail(w, badRequest("redirect must be true or false, not %q", v))
		return true
	}
	addr, err := s.leaderMoved(true)
	switch {
	case err != nil:
		s.fail(w, err)
		return true
	case addr == "":
		return false
	}
	// 307 keeps the method and the body (a 301 or 302 lets clients turn
	// a PUT into a GET).
	w.Header().Set("Location", requestScheme(r)+"://"+addr+r.URL.RequestURI())
	writeJSONError(w, &httpError{http.StatusTemporaryRedirect, codeRedirect, "writes go to the leader at " + addr})
	return true
}
