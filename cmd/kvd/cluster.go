package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/replication"
	"github.com/kvdstore/kvd/server"
)

// clusterConfig holds the flags of cluster mode: kvd runs on a Raft
// cluster when --raft-listen is given, as a single node otherwise.
type clusterConfig struct {
	raftListen      string
	raftAdvertise   string
	nodeID          string
	bootstrap       bool
	join            []string
	readConsistency string
	// Raft's timeouts; zero keeps hashicorp/raft's defaults.
	heartbeatTimeout, electionTimeout, leaderLeaseTimeout time.Duration
	// Raft snapshots: taken past snapshotThreshold entries, checked every
	// snapshotInterval, keeping trailingLogs entries below.
	snapshotThreshold, trailingLogs uint64
	snapshotInterval                time.Duration
	// stateCheckInterval: how often the leader compares the members' states.
	stateCheckInterval time.Duration
}

func (c *clusterConfig) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.raftListen, "raft-listen", "",
		"cluster mode: the cluster port's listen address (Raft and kvd's calls between nodes); empty: a single node")
	fs.StringVar(&c.raftAdvertise, "raft-advertise", "",
		"cluster mode: the address other nodes reach the cluster port at (default: --raft-listen)")
	fs.StringVar(&c.nodeID, "node-id", "",
		"cluster mode: this node's ID (default: the one kept in the data directory, or a new random one)")
	fs.BoolVar(&c.bootstrap, "bootstrap", false,
		"cluster mode: start a new cluster of this node alone (ignored once the node has Raft state)")
	fs.StringSliceVar(&c.join, "join", nil,
		"cluster mode: cluster addresses of members to join through, comma-separated (retried; once the node has Raft state, used only to have it readdressed after a move)")
	fs.StringVar(&c.readConsistency, "read-consistency", "linearizable",
		"cluster mode: default consistency of reads: linearizable, leader or stale")
	fs.DurationVar(&c.heartbeatTimeout, "raft-heartbeat-timeout", 500*time.Millisecond,
		"cluster mode: a follower that hears nothing from the leader this long starts an election")
	fs.DurationVar(&c.electionTimeout, "raft-election-timeout", 500*time.Millisecond,
		"cluster mode: a candidate that wins no election this long starts another")
	fs.DurationVar(&c.leaderLeaseTimeout, "raft-leader-lease-timeout", 250*time.Millisecond,
		"cluster mode: a leader that hears from no quorum this long steps down (at most --raft-heartbeat-timeout)")
	fs.Uint64Var(&c.snapshotThreshold, "raft-snapshot-threshold", 65536,
		"cluster mode: take a snapshot (and compact the Raft log) once the log holds this many entries beyond the last one")
	fs.DurationVar(&c.snapshotInterval, "raft-snapshot-interval", 2*time.Minute,
		"cluster mode: how often to check --raft-snapshot-threshold")
	fs.DurationVar(&c.stateCheckInterval, "raft-state-check-interval", 10*time.Minute,
		"cluster mode: how often the leader compares every member's hash of its state at one log entry (0: never); a mismatch is logged and counted in kvd_raft_state_check_mismatches_total")
	fs.Uint64Var(&c.trailingLogs, "raft-trailing-logs", 10240,
		"cluster mode: entries kept below a snapshot, so that a follower a little behind gets entries rather than a snapshot")
}

func (c *clusterConfig) enabled() bool { return c.raftListen != "" }

func (c *clusterConfig) validate() []error {
	var errs []error
	if _, err := replication.ParseConsistency(c.readConsistency); err != nil {
		errs = append(errs, fmt.Errorf("--read-consistency must be linearizable, leader or stale, not %q", c.readConsistency))
	}
	if !c.enabled() {
		if c.bootstrap || len(c.join) > 0 || c.raftAdvertise != "" || c.nodeID != "" {
			errs = append(errs, errors.New("--bootstrap, --join, --raft-advertise and --node-id need --raft-listen (cluster mode)"))
		}
		return errs
	}
	if c.bootstrap && len(c.join) > 0 {
		errs = append(errs, errors.New("--bootstrap and --join exclude each other: bootstrap the first node, join the others to it"))
	}
	for _, a := range append([]string{c.raftListen, c.raftAdvertise}, c.join...) {
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("cluster address %q: %w", a, err))
		}
	}
	if c.heartbeatTimeout < 5*time.Millisecond || c.electionTimeout < 5*time.Millisecond || c.leaderLeaseTimeout < 5*time.Millisecond {
		errs = append(errs, errors.New("--raft-heartbeat-timeout, --raft-election-timeout and --raft-leader-lease-timeout must be at least 5ms"))
	}
	if c.snapshotThreshold < 1 || c.snapshotInterval < 5*time.Millisecond {
		errs = append(errs, errors.New("--raft-snapshot-threshold must be at least 1 and --raft-snapshot-interval at least 5ms"))
	}
	if c.leaderLeaseTimeout > c.heartbeatTimeout {
		errs = append(errs, errors.New("--raft-leader-lease-timeout must not exceed --raft-heartbeat-timeout"))
	}
	if strings.ContainsAny(c.nodeID, " \t\n") {
		errs = append(errs, fmt.Errorf("--node-id %q must not hold spaces", c.nodeID))
	}
	return errs
}

// respIOFor is --resp-io, whose default with TLS is goroutines: the loop
// reads and writes the sockets itself, below crypto/tls. On a cluster the
// loop's default holds: it parks a connection whose write waits for a
// quorum, or whose read for the leader's confirmation, and serves the
// others meanwhile.
func (c *config) respIOFor() string {
	if c.respIO == "" && c.tls.enabled() {
		return "goroutines"
	}
	return c.respIO
}

// openStore opens the store kvd serves: the engine on a single node, a
// cluster node's store in cluster mode. close closes it.
func openStore(cfg *config, opts engine.Options, tlss *tlsSets, log *slog.Logger, stderr io.Writer) (store server.Store, close func() error, err error) {
	if !cfg.cluster.enabled() {
		db, err := engine.Open(cfg.dataDir, opts)
		if err != nil {
			return nil, nil, fmt.Errorf("open %s: %w", cfg.dataDir, err)
		}
		return db, db.Close, nil
	}
	consistency, _ := replication.ParseConsistency(cfg.cluster.readConsistency) // validated
	node, err := replication.Open(replication.Config{
		Dir:       cfg.dataDir,
		NodeID:    cfg.cluster.nodeID,
		Listen:    cfg.cluster.raftListen,
		Advertise: cfg.cluster.raftAdvertise,
		ServerTLS: tlss.clusterServer,
		DialTLS:   tlss.dialer,
		Bootstrap: cfg.cluster.bootstrap,
		Join:      cfg.cluster.join,
		Engine:    opts,

		HeartbeatTimeout:   cfg.cluster.heartbeatTimeout,
		ElectionTimeout:    cfg.cluster.electionTimeout,
		LeaderLeaseTimeout: cfg.cluster.leaderLeaseTimeout,
		SnapshotThreshold:  cfg.cluster.snapshotThreshold,
		SnapshotInterval:   cfg.cluster.snapshotInterval,
		TrailingLogs:       cfg.cluster.trailingLogs,
		StateCheckInterval: stateCheckInterval(cfg.cluster.stateCheckInterval),
		Logger:             log,
		RaftLog:            stderr,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("open cluster node in %s: %w", cfg.dataDir, err)
	}
	log.Info("cluster mode", "node_id", node.ID(), "raft", node.ClusterAddr(), "read_consistency", consistency.String())
	return node.Store(consistency), node.Close, nil
}

// runRecover is "kvd recover": it gives a stopped cluster node a new
// configuration (replication.Recover), for a cluster that lost its quorum
// for good.
func runRecover(args []string, stdout io.Writer) error {
	var dataDir string
	var peers []string
	fs := pflag.NewFlagSet("kvd recover", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&dataDir, "data-dir", "./kvd-data", "data directory of the stopped node to recover")
	fs.StringSliceVar(&peers, "peers", nil,
		"the new configuration, the same on every surviving node: ID=ADDRESS[,ID=ADDRESS...]; ID=ADDRESS/nonvoter for a nonvoter")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprintf(stdout, "Usage: kvd recover --data-dir DIR --peers ID=ADDRESS[,ID=ADDRESS...]\n\n"+
				"Gives a stopped cluster node a new configuration, for a cluster that lost its quorum for good.\n"+
				"Run it on every surviving node with the same --peers, then start them. See README,\n"+
				"\"Recovering from a lost quorum\".\n\n%s", fs.FlagUsages())
			return nil
		}
		return &usageError{err}
	}
	if fs.NArg() > 0 {
		return &usageError{fmt.Errorf("recover: unexpected argument %q", fs.Arg(0))}
	}
	if len(peers) == 0 {
		return &usageError{errors.New("recover: --peers is required")}
	}
	var ps []replication.Peer
	for _, p := range peers {
		id, addr, ok := strings.Cut(p, "=")
		addr, suffrage, _ := strings.Cut(addr, "/")
		if !ok || id == "" || addr == "" || (suffrage != "" && suffrage != "nonvoter") {
			return &usageError{fmt.Errorf("recover: peer %q: want ID=ADDRESS or ID=ADDRESS/nonvoter", p)}
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return &usageError{fmt.Errorf("recover: peer %q: %w", p, err)}
		}
		ps = append(ps, replication.Peer{ID: id, Address: addr, Nonvoter: suffrage == "nonvoter"})
	}
	if err := replication.Recover(dataDir, ps); err != nil {
		if errors.Is(err, engine.ErrLocked) {
			return &exitStatus{2, fmt.Errorf("recover: %w: stop the kvd using it first", err)}
		}
		return &exitStatus{2, err}
	}
	fmt.Fprintf(stdout, "recovered %s: its next start uses the configuration %s\n", dataDir, strings.Join(peers, ","))
	return nil
}

// announceClientAddrs tells a cluster node the addresses clients reach it
// at, which followers give the clients they redirect to it: the listen
// addresses, with the host of the cluster address when they listen on
// every interface.
func announceClientAddrs(store server.Store, resp, http net.Listener) {
	rs, ok := store.(*replication.Store)
	if !ok {
		return
	}
	n := rs.Node()
	host, _, _ := net.SplitHostPort(n.ClusterAddr())
	reachable := func(ln net.Listener) string {
		if ln == nil {
			return ""
		}
		a := ln.Addr().(*net.TCPAddr)
		if a.IP == nil || a.IP.IsUnspecified() {
			return net.JoinHostPort(host, fmt.Sprint(a.Port))
		}
		return a.String()
	}
	n.SetClientAddrs(replication.ClientAddrs{RESP: reachable(resp), HTTP: reachable(http)})
}

// stateCheckInterval maps the flag's 0 (never) to the node's negative.
func stateCheckInterval(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
