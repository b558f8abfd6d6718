package replication

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"
)

// The state check: every StateCheckInterval the leader appends a no-op
// command flagged flagHash. Each node that applies it hashes its state as
// it stands at that entry (engine.Snapshot.StateHash, in the background, on
// a snapshot taken in the apply), and the leader asks every member for its
// hash of that entry and compares them with its own. Equal logs applied
// by a deterministic state machine hash alike; a difference is a bug or a
// damaged node, and is reported (Status.StateCheck, the log), never
// repaired silently.

// flagHash, with flagNoop, marks the state check's command.
const flagHash = 4

// keptHashes is how many of its latest hashes a node keeps for the leader
// to ask for.
const keptHashes = 8

// hashResult is one node's hash of its state at a state check's entry.
type hashResult struct {
	Index    uint64 `json:"index"`
	Revision uint64 `json:"revision"`
	Hash     string `json:"hash,omitempty"` // hex SHA-256; empty while pending or failed
	Err      string `json:"error,omitempty"`
	Pending  bool   `json:"pending,omitempty"`
}

// StateCheck reports the latest comparison of the members' states.
type StateCheck struct {
	Index    uint64    `json:"index"`    // the log entry the states were hashed at
	Revision uint64    `json:"revision"` // the revision they stood at
	At       time.Time `json:"at"`
	// Hashes maps each member's ID to its hash, or to why it has none
	// ("no answer: ...").
	Hashes map[string]string `json:"hashes"`
	// Mismatched lists the members whose hash differs from the leader's.
	Mismatched []string `json:"mismatched,omitempty"`
}

// startHash hashes the state as it stands when the state check's entry at
// index is applied. Called from the state machine's Apply.
func (n *Node) startHash(index uint64) {
	r := hashResult{Index: index, Pending: true}
	if n.db.AppliedIndex() > index {
		// Replayed after a restart: the state file holds later entries.
		r.Pending, r.Err = false, "the state was past this entry when it was replayed"
		n.putHash(r)
		return
	}
	s, _, err := n.db.ReplicaSnapshot()
	if err != nil {
		r.Pending, r.Err = false, err.Error()
		n.putHash(r)
		return
	}
	r.Revision = s.Revision()
	n.putHash(r)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer s.Close()
		h, err := s.StateHash()
		r.Pending = false
		if err != nil {
			r.Err = err.Error()
		} else {
			r.Hash = hex.EncodeToString(h[:])
		}
		n.putHash(r)
	}()
}

func (n *Node) putHash(r hashResult) {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	if i := slices.IndexFunc(n.hashes, func(h hashResult) bool { return h.Index == r.Index }); i >= 0 {
		n.hashes[i] = r
		return
	}
	n.hashes = append(n.hashes, r)
	if len(n.hashes) > keptHashes {
		n.hashes = slices.Delete(n.hashes, 0, len(n.hashes)-keptHashes)
	}
}

// localHash answers the leader's question for index: the result, pending
// while this node has not applied the entry yet.
func (n *Node) localHash(index uint64) hashResult {
	n.hmu.Lock()
	i := slices.IndexFunc(n.hashes, func(h hashResult) bool { return h.Index == index })
	var r hashResult
	if i >= 0 {
		r = n.hashes[i]
	}
	n.hmu.Unlock()
	if i >= 0 {
		return r
	}
	n.fsmMu.Lock()
	applied := n.fsmIndex
	n.fsmMu.Unlock()
	if applied < index {
		return hashResult{Index: index, Pending: true}
	}
	return hashResult{Index: index, Err: "this node has no hash of that entry (it restarted, or installed a snapshot past it)"}
}

// checkStates runs while this node leads: a state check every
// StateCheckInterval.
func (n *Node) checkStates() {
	every := n.cfg.StateCheckInterval
	if every < 0 {
		return
	}
	if every == 0 {
		every = defaultStateCheckInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for n.IsLeader() {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if !n.IsLeader() {
			return
		}
		if _, err := n.CheckState(); err != nil && !errors.Is(err, errNotLeader) {
			n.log.Warn("replication: state check failed", "err", err)
		}
	}
}

// defaultStateCheckInterval is StateCheckInterval's default.
const defaultStateCheckInterval = 10 * time.Minute

// CheckState runs a state check now, on the leader: it appends the
// check's command, waits (up to the ApplyTimeout) for every member's hash
// of the state at that entry, compares them with its own, and returns and
// keeps the report (Status.StateCheck). A mismatch is logged as an error.
func (n *Node) CheckState() (StateCheck, error) {
	if !n.IsLeader() {
		return StateCheck{}, errNotLeader
	}
	f := n.raft.ApplyLog(raft.Log{Extensions: []byte{flagNoop | flagHash}}, n.cfg.ApplyTimeout)
	if err := f.Error(); err != nil {
		return StateCheck{}, fmt.Errorf("replication: state check: %w", err)
	}
	index := f.Index()
	members, err := n.Members()
	if err != nil {
		return StateCheck{}, err
	}
	deadline := time.Now().Add(n.cfg.ApplyTimeout)
	results := map[string]hashResult{}
	for _, m := range members {
		for {
			var r hashResult
			var err error
			if m.ID == string(n.id) {
				r = n.localHash(index)
			} else {
				r, err = n.remoteHash(m.Address, index)
			}
			late := time.Now().After(deadline)
			switch {
			case err != nil && late:
				r = hashResult{Index: index, Err: "no answer: " + err.Error()}
			case err == nil && r.Pending && late:
				r = hashResult{Index: index, Err: "no hash before the timeout"}
			}
			// A failed call (a connection the member closed when it
			// restarted) is tried again, as is a pending answer.
			if late || err == nil && !r.Pending {
				results[m.ID] = r
				break
			}
			select {
			case <-n.stop:
				return StateCheck{}, errors.New("replication: node closed")
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	c := compareHashes(string(n.id), index, results)
	n.hmu.Lock()
	n.lastCheck = &c
	n.hmu.Unlock()
	n.stateChecks.Add(1)
	if len(c.Mismatched) > 0 {
		n.stateMismatches.Add(1)
		n.log.Error("replication: the members' states differ at one log entry", "index", c.Index,
			"revision", c.Revision, "mismatched", c.Mismatched, "hashes", c.Hashes)
	}
	return c, nil
}

// compareHashes makes the report of a state check from each member's
// result: those whose hash differs from the leader's are mismatched; one
// without a hash is reported, not counted as a mismatch.
func compareHashes(leader string, index uint64, results map[string]hashResult) StateCheck {
	c := StateCheck{Index: index, At: time.Now(), Hashes: map[string]string{}}
	own := results[leader]
	c.Revision = own.Revision
	for id, r := range results {
		if r.Hash == "" {
			c.Hashes[id] = r.Err
			continue
		}
		c.Hashes[id] = r.Hash
		if own.Hash != "" && r.Hash != own.Hash {
			c.Mismatched = append(c.Mismatched, id)
		}
	}
	slices.Sort(c.Mismatched)
	return c
}

// remoteHash asks the member at addr for its hash of the entry at index.
func (n *Node) remoteHash(addr string, index uint64) (hashResult, error) {
	p, err := n.calls.call(addr, opStateHash, binaryUvarint(index), n.cfg.ApplyTimeout)
	if err != nil {
		return hashResult{}, err
	}
	var r hashResult
	if err := json.Unmarshal(p, &r); err != nil {
		return hashResult{}, err
	}
	return r, nil
}

// lastStateCheck returns the latest state check's report, or nil.
func (n *Node) lastStateCheck() *StateCheck {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	return n.lastCheck
}

// StateChecks returns how many state checks this node ran as leader, and
// in how many the members' states differed.
func (n *Node) StateChecks() (checks, mismatches uint64) {
	return n.stateChecks.Load(), n.stateMismatches.Load()
}
