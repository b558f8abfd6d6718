package replication

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/kvdstore/kvd/engine"
)

// Gathering writes into entries.
//
// The leader has at most one entry of each kind (sync and async) on its
// way through Raft at a time. The writes that arrive meanwhile wait, and
// go together in the next entry of their kind, which carries them all
// (flagMulti): one log record, one replication round, one fsync on each
// node and one apply step for all of them, each write keeping its own
// revision and outcome. Raft's own batching does not get there: its
// leader loop hands each write to the log as it comes, and with 50
// clients a Raft entry held 1.5 writes in async mode, each replication
// round costing the three nodes' CPU for little. With the gathering, 50
// clients' SETs fill entries of 23 writes in sync mode and 16 in async
// mode, and on this 2-vCPU machine a 3-node cluster serves 24,000-28,000
// sync SETs a second instead of 19,000-21,000, and 44,000-54,000 async
// ones instead of 36,000-39,000, at about 45 µs of CPU per sync write on
// the three nodes together instead of 70 (bench/RESULTS.md, 2026-12-05).
// Two or four entries in flight measured slower than one.
//
// The next entry waits for the writers the last one answered. With the
// next entry sent as soon as the last one committed, 50 clients split into
// two cohorts that took turns: one in flight while the other, answered,
// sent its next writes. After an entry commits, the next one now waits
// until the writers it answered are back (as many writes queued as the
// entry held, plus those queued before), at most as long as the entry took
// to commit and at most maxGatherWait: 50 clients' sync SETs then fill
// entries of 49 writes, not 23; in an A/B of three pairs a 3-node cluster
// served 27% and 31% more of them at a lower median latency, and 3% fewer
// in the third; async entries hold 42 writes, not 15, and the three nodes
// spent 18% less CPU per write (bench/RESULTS.md, 2026-12-05, "The next
// entry waits"). A fixed sleep before the next entry (50-200 µs, tried
// first) was slower: here the wait ends once the writers are back;
// writers that do not come back (a client that reads next, or goes away)
// cost a write queued meanwhile at most one more commit's time.

// flagMulti marks a command entry whose Data holds several encoded
// batches, each preceded by its length as a uvarint.
const flagMulti = 8

// maxGatherBytes bounds the batches gathered into one entry; a batch
// larger than it goes in an entry of its own. Raft keeps the newest
// logCacheEntries entries in memory: at 64 KiB, gathered entries hold at
// most 64 MiB there (50 clients' 100-byte SETs fill about 7 KiB).
const maxGatherBytes = 64 << 10

// maxGatherWait bounds how long the next entry waits for the writers the
// last one answered (see above).
const maxGatherWait = time.Millisecond

// gatherer queues one kind of write on the leader while an entry of that
// kind is in flight.
type gatherer struct {
	mu     sync.Mutex
	queue  []*proposal
	flying bool // an entry is in flight; its committer takes the queue next
	// While the committer waits for the writers it answered: back closes
	// once want writes are queued.
	want int
	back chan struct{}
	// commit commits an entry and sets its writes' outcomes
	// (Node.commitGathered); maxWait is maxGatherWait. Tests replace them.
	commit  func(ps []*proposal, flags byte)
	maxWait time.Duration
}

// proposal is one write waiting for its entry's outcome.
type proposal struct {
	data []byte
	done func(engine.Outcome, error)
	o    engine.Outcome
	err  error
}

// propose commits an encoded batch as the leader (this node), gathered
// with the writes of its kind that arrive while another entry of that
// kind is in flight, and returns its outcome once committed and applied
// here.
func (n *Node) propose(data []byte, flags byte) (engine.Outcome, error) {
	return await(func(done func(engine.Outcome, error)) { n.proposeAsync(data, flags, done) })
}

// await calls start, which calls its done once, on any goroutine, and
// returns what done was given.
func await[T any](start func(done func(T, error))) (T, error) {
	var v T
	var err error
	called := make(chan struct{})
	start(func(rv T, rerr error) {
		v, err = rv, rerr
		close(called)
	})
	<-called
	return v, err
}

// proposeAsync is propose without the wait: done is called with the
// outcome on the goroutine that commits the entry.
func (n *Node) proposeAsync(data []byte, flags byte, done func(engine.Outcome, error)) {
	g := &n.gather[flags&SyncFlag]
	p := &proposal{data: data, done: done}
	g.mu.Lock()
	g.queue = append(g.queue, p)
	if g.flying {
		if g.want > 0 && len(g.queue) >= g.want {
			g.want = 0
			close(g.back)
		}
		g.mu.Unlock()
		return
	}
	// Nothing waits: the queue empties before flying is cleared.
	g.flying = true
	var next []*proposal
	next, g.queue = nextEntry(g.queue)
	g.mu.Unlock()
	go g.commitChain(next, flags)
}

// commitChain commits ps as one entry and tells ps their outcomes; then,
// once the writers it answered are back or the wait is over, commits the
// writes queued meanwhile as the next entry.
func (g *gatherer) commitChain(ps []*proposal, flags byte) {
	for {
		start := time.Now()
		g.commit(ps, flags)
		wait := min(time.Since(start), g.maxWait)
		g.mu.Lock()
		var back chan struct{}
		if queued(g.queue) < maxGatherBytes { // else the next entry is full already
			g.want, g.back = len(g.queue)+len(ps), make(chan struct{})
			back = g.back
		}
		g.mu.Unlock()
		for _, p := range ps {
			p.done(p.o, p.err)
		}
		if back != nil {
			t := time.NewTimer(wait)
			select {
			case <-back:
			case <-t.C:
			}
			t.Stop()
		}
		g.mu.Lock()
		g.want, g.back = 0, nil
		if len(g.queue) == 0 {
			g.flying = false
			g.mu.Unlock()
			return
		}
		ps, g.queue = nextEntry(g.queue)
		g.mu.Unlock()
	}
}

// queued is the size of the writes in queue.
func queued(queue []*proposal) int {
	size := 0
	for _, p := range queue {
		size += len(p.data)
	}
	return size
}

// nextEntry splits the writes of the next entry from the front of queue:
// as many as fit in maxGatherBytes, and at least one.
func nextEntry(queue []*proposal) (next, rest []*proposal) {
	size := 0
	for i, p := range queue {
		if size += len(p.data); size > maxGatherBytes && i > 0 {
			return queue[:i], queue[i:]
		}
	}
	return queue, nil
}

// commitGathered commits ps as one entry and sets the outcome of each.
func (n *Node) commitGathered(ps []*proposal, flags byte) {
	if len(ps) == 1 {
		ps[0].o, ps[0].err = n.apply(ps[0].data, flags)
		return
	}
	size := 0
	for _, p := range ps {
		size += binary.MaxVarintLen32 + len(p.data)
	}
	data := make([]byte, 0, size)
	for _, p := range ps {
		data = binary.AppendUvarint(data, uint64(len(p.data)))
		data = append(data, p.data...)
	}
	f := n.raft.ApplyLog(raft.Log{Data: data, Extensions: []byte{flags | flagMulti}}, n.cfg.ApplyTimeout)
	if err := applyError(f.Error()); err != nil {
		for _, p := range ps {
			p.err = err
		}
		return
	}
	switch r := f.Response().(type) {
	case []applied:
		if len(r) != len(ps) {
			for _, p := range ps {
				p.err = fmt.Errorf("replication: entry %d applied %d writes, not %d: %w", f.Index(), len(r), len(ps), engine.ErrOutcomeUnknown)
			}
			return
		}
		for i, p := range ps {
			p.o, p.err = outcome(f.Index(), r[i])
		}
	case applied: // the entry failed as a whole
		for _, p := range ps {
			p.o, p.err = outcome(f.Index(), r)
		}
	default:
		for _, p := range ps {
			p.err = fmt.Errorf("replication: entry %d applied as %T: %w", f.Index(), r, engine.ErrOutcomeUnknown)
		}
	}
}

// applyMulti applies an entry of several batches (flagMulti): their
// outcomes, []applied, or the entry's error, applied. Every node decides
// alike, so a malformed entry fails every batch on every node.
func (n *Node) applyMulti(l *raft.Log) any {
	payloads, err := splitMulti(l.Data)
	if err != nil {
		n.log.Error("replication: malformed entry", "index", l.Index, "err", err)
		return applied{err: err}
	}
	outs := make([]engine.Outcome, len(payloads))
	errs := make([]error, len(payloads))
	if err := n.db.ApplyEntries(l.Index, payloads, outs, errs); err != nil {
		if !errors.Is(err, engine.ErrAlreadyApplied) {
			n.log.Error("replication: apply failed", "index", l.Index, "err", err)
		}
		return applied{err: err}
	}
	parts := make([]applied, len(payloads))
	for i := range parts {
		parts[i] = applied{o: outs[i], err: errs[i]}
	}
	return parts
}

// splitMulti splits an entry's Data into its batches.
func splitMulti(data []byte) ([][]byte, error) {
	var payloads [][]byte
	for len(data) > 0 {
		size, w := binary.Uvarint(data)
		if w <= 0 || size > uint64(len(data)-w) {
			return nil, fmt.Errorf("%w: a write's length is cut or too long", engine.ErrBadBatch)
		}
		payloads = append(payloads, data[w:w+int(size)])
		data = data[w+int(size):]
	}
	return payloads, nil
}
