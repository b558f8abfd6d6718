package cluster

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/kvdstore/kvd/internal/kvtest"
)

// timedWrite is one write of a timed writer: a unique key, when it was
// sent and when it was acknowledged (zero if it got an error).
type timedWrite struct {
	key, val    string
	sent, acked time.Time
}

// timedWriters runs w writers, each writing unique keys to the nodes in
// turn as cluster.writers does, recording when each write was sent and
// acknowledged, until stop is closed. It returns the writes once they
// have all returned.
func (c *cluster) timedWriters(w int, stop <-chan struct{}) func() []timedWrite {
	var mu sync.Mutex
	var all []timedWrite
	wg := c.runWriters(w, "a", stop, func(key, val string, sent time.Time, err error) {
		tw := timedWrite{key: key, val: val, sent: sent}
		if err == nil {
			tw.acked = time.Now()
		}
		mu.Lock()
		all = append(all, tw)
		mu.Unlock()
	})
	return func() []timedWrite {
		wg.Wait()
		return all
	}
}

// lossBound returns the flush interval plus the slowest fsync any node
// has made: the most that async mode may lose at a power loss of a
// majority.
func (c *cluster) lossBound() (time.Duration, error) {
	var bound time.Duration
	for _, n := range c.nodes {
		var st struct {
			FlushInterval string `json:"flush_interval"`
			Fsync         struct {
				MaxSeconds float64 `json:"max_seconds"`
			} `json:"fsync"`
		}
		if err := kvtest.GetJSON(c.t.Context(), http.DefaultClient, "http://"+n.p.HTTPAddr+"/v1/status", &st); err != nil {
			return 0, fmt.Errorf("%s: status: %w", n.name, err)
		}
		interval, err := time.ParseDuration(st.FlushInterval)
		if err != nil {
			return 0, fmt.Errorf("%s: flush_interval %q: %w", n.name, st.FlushInterval, err)
		}
		bound = max(bound, interval+time.Duration(st.Fsync.MaxSeconds*float64(time.Second)))
	}
	return bound, nil
}

// divergedOrCaughtUp waits until every node either says it has diverged
// (GET /v1/cluster) or has applied the leader l's revision, and returns the
// diverged ones.
func (c *cluster) divergedOrCaughtUp(l *node) []*node {
	c.t.Helper()
	ctx := c.t.Context()
	var diverged []*node
	var last string
	ok := kvtest.WaitFor(60*time.Second, 100*time.Millisecond, func() bool {
		diverged, last = diverged[:0], ""
		lm, err := info(ctx, c.client(l))
		if err != nil {
			last = fmt.Sprintf("leader %s: %v", l.name, err)
			return false
		}
		done := true
		for _, n := range c.nodes {
			var st struct {
				Diverged string `json:"diverged"`
			}
			if err := kvtest.GetJSON(ctx, http.DefaultClient, "http://"+n.p.HTTPAddr+"/v1/cluster", &st); err != nil {
				last += fmt.Sprintf("%s: %v; ", n.name, err)
				done = false
				continue
			}
			if st.Diverged != "" {
				diverged = append(diverged, n)
				continue
			}
			m, err := info(ctx, c.client(n))
			if err != nil || m["applied_revision"] != lm["applied_revision"] {
				last += fmt.Sprintf("%s: revision %s, the leader's %s (%v); ", n.name, m["applied_revision"], lm["applied_revision"], err)
				done = false
			}
		}
		return done
	})
	if !ok {
		c.t.Fatalf("the nodes neither caught up with the leader %s nor reported diverging: %s", l.name, last)
	}
	return diverged
}

// checkConvergedAmong is checkConverged for the nodes ns only.
func (c *cluster) checkConvergedAmong(ns []*node) {
	c.t.Helper()
	var last string
	ok := kvtest.WaitFor(30*time.Second, 200*time.Millisecond, func() bool {
		var revs, hashes []string
		last = ""
		for _, n := range ns {
			rev, hash, keys, err := c.stateHash(c.t.Context(), n)
			if err != nil {
				last += fmt.Sprintf("%s: %v; ", n.name, err)
				return false
			}
			last += fmt.Sprintf("%s: revision %s, %d keys, hash %.12s; ", n.name, rev, keys, hash)
			revs, hashes = append(revs, rev), append(hashes, hash)
		}
		return len(slices.Compact(revs)) == 1 && len(slices.Compact(hashes)) == 1
	})
	if !ok {
		c.t.Fatalf("the nodes %v did not converge: %s", names(ns), last)
	}
}

// asyncLoss is what one async power loss lost.
type asyncLoss struct {
	acked, lost int
	// exposure is, for the acknowledged write lost longest before the
	// cut, how long before the cut it was acknowledged (negative: after
	// the first node lost power).
	exposure time.Duration
	diverged []string
}

// TestPowerLossAllAsync: in async mode, under load, the power of all three
// nodes is cut at once, and they restart on what their disks kept. The
// writes acknowledged more than the flush interval plus the slowest fsync
// before the cut are all there; what survives of the writes is a prefix
// (no write sent after a lost write was acknowledged survives); the nodes
// that have not diverged converge; and a node that has diverged (it
// applied entries the others lost, which the new leader asks it to
// replace) says so and refuses to serve. Reports, as figures, how many
// acknowledged writes were lost and how long before the cut the earliest
// of them was acknowledged.
func TestPowerLossAllAsync(t *testing.T) {
	requireFUSE(t)
	rng := powerSeed(t)
	var losses []asyncLoss
	var bounds []time.Duration
	var cuts cutStats
	for r := range powerRounds(1) {
		t.Run(fmt.Sprintf("round%d", r), func(t *testing.T) {
			pc := newPowerCluster(t, "async", rng)
			ctx := t.Context()
			stop := make(chan struct{})
			writes := pc.timedWriters(6, stop)
			kvtest.Eventually(t, 30*time.Second, "writes to be acknowledged before the cut", func() bool {
				m, err := info(ctx, pc.client(pc.leader()))
				rev, _ := strconv.Atoi(m["applied_revision"])
				return err == nil && rev >= 100
			})
			time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
			bound, err := pc.lossBound()
			if err != nil {
				t.Fatal(err)
			}
			cutAt := time.Now()
			pc.cutPower(pc.nodes...)
			close(stop)
			ws := writes()
			pc.restart(pc.nodes...)
			l := pc.leader()
			// A write of the new leader's term: it replicates to every
			// node, which then either takes it or finds it diverged.
			kvtest.Eventually(t, 30*time.Second, "a write through the new leader "+l.name, func() bool {
				return pc.client(l).Set(ctx, "after-cut", "x", 0).Err() == nil
			})
			diverged := pc.divergedOrCaughtUp(l)
			for _, n := range diverged {
				err := pc.client(n).Get(ctx, "after-cut").Err()
				if err == nil || !strings.HasPrefix(err.Error(), "DIVERGED") {
					t.Fatalf("%s reports that it diverged, and a read on it answered %v, want DIVERGED", n.name, err)
				}
			}
			live := slices.DeleteFunc(slices.Clone(pc.nodes), func(n *node) bool { return slices.Contains(diverged, n) })
			pc.checkConvergedAmong(live)
			loss := checkAsyncLoss(t, pc.cluster, l, ws, cutAt, bound)
			loss.diverged = names(diverged)
			lost := fmt.Sprint(loss.lost)
			if loss.lost > 0 {
				lost += fmt.Sprintf(" (the earliest acknowledged %v before the cut)", loss.exposure)
			}
			t.Logf("%d acknowledged writes, %s lost, bound %v; diverged: %v; %s",
				loss.acked, lost, bound, loss.diverged, &pc.cutStats)
			losses = append(losses, loss)
			cuts.add(pc.cutStats)
			bounds = append(bounds, bound)
		})
	}
	if len(losses) > 1 {
		var acked, lost, rounds, divergedRounds int
		var worst time.Duration
		for _, l := range losses {
			acked, lost, rounds = acked+l.acked, lost+l.lost, rounds+1
			if l.lost > 0 {
				worst = max(worst, l.exposure)
			}
			if len(l.diverged) > 0 {
				divergedRounds++
			}
		}
		t.Logf("async power loss of all nodes: %d rounds, %d acknowledged writes checked, %d lost, in %d rounds a node diverged; largest exposure %v (bounds %v to %v); %s",
			rounds, acked, lost, divergedRounds, worst, slices.Min(bounds), slices.Max(bounds), &cuts)
	}
}

// checkAsyncLoss reads every write of ws on the leader l and checks what
// was lost against the cut at cutAt and the loss bound.
func checkAsyncLoss(t *testing.T, c *cluster, l *node, ws []timedWrite, cutAt time.Time, bound time.Duration) asyncLoss {
	t.Helper()
	rdb := c.client(l)
	present := make(map[string]bool, len(ws))
	for rest := ws; len(rest) > 0; {
		batch := rest[:min(500, len(rest))]
		rest = rest[len(batch):]
		keys := make([]string, len(batch))
		for i, w := range batch {
			keys[i] = w.key
		}
		vals, err := rdb.MGet(t.Context(), keys...).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatalf("%s: MGET: %v", l.name, err)
		}
		for i, v := range vals {
			if s, _ := v.(string); s != "" {
				if s != batch[i].val {
					t.Fatalf("%s holds %s=%s, written as %s", l.name, batch[i].key, s, batch[i].val)
				}
				present[batch[i].key] = true
			}
		}
	}
	var loss asyncLoss
	var firstLost *timedWrite
	for i, w := range ws {
		if w.acked.IsZero() {
			continue
		}
		loss.acked++
		if present[w.key] {
			continue
		}
		loss.lost++
		if firstLost == nil || w.acked.Before(firstLost.acked) {
			firstLost = &ws[i]
		}
	}
	if firstLost == nil {
		return loss
	}
	loss.exposure = cutAt.Sub(firstLost.acked)
	if loss.exposure > bound {
		t.Errorf("the acknowledged write %s was lost, acknowledged %v before the cut, more than the flush interval plus the slowest fsync (%v)",
			firstLost.key, loss.exposure, bound)
	}
	// A prefix: nothing sent after a lost write was acknowledged survives.
	for _, w := range ws {
		if present[w.key] && w.sent.After(firstLost.acked) {
			t.Errorf("%s survived, sent %v after the lost write %s was acknowledged: what survives is not a prefix",
				w.key, w.sent.Sub(firstLost.acked), firstLost.key)
			break
		}
	}
	return loss
}
