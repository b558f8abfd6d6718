package crash_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// clients is the number of concurrent clients of every load.
const clients = 8

// randomConfig returns a kvd command line for dir with a random flush
// interval (async), checkpoint interval and size, segment size and log
// retention, so that faults also strike segment rolls, checkpoints and log
// truncations. Each restart of a data dir gets a new one.
func randomConfig(rng *rand.Rand, dir, mode string) kvdConfig {
	c := kvdConfig{dataDir: dir, mode: mode}
	if mode == "async" {
		c.flushInterval = [...]time.Duration{0, 5 * time.Millisecond, 20 * time.Millisecond}[rng.IntN(3)]
	}
	c.checkpointInterval = [...]time.Duration{50 * time.Millisecond, 300 * time.Millisecond, 2 * time.Second, 0}[rng.IntN(4)]
	c.checkpointBytes = [...]int{0, 256 << 10, 2 << 20}[rng.IntN(3)]
	c.segmentSize = [...]int{0, 16 << 10, 64 << 10, 1 << 20}[rng.IntN(4)]
	c.walRetain = [...]uint64{0, 0, 100}[rng.IntN(3)]
	return c
}

// loadDuration is how long the load runs before a fault: mostly a few
// hundred milliseconds, sometimes almost nothing, to strike right after a
// start.
func loadDuration(rng *rand.Rand) time.Duration {
	if rng.IntN(10) == 0 {
		return time.Duration(rng.Int64N(int64(5 * time.Millisecond)))
	}
	return 30*time.Millisecond + time.Duration(rng.Int64N(int64(pick(400*time.Millisecond, 1200*time.Millisecond))))
}

// randomLoad is the load of a cycle: half the time with per-write
// durability overrides and barriers, half the time without.
func randomLoad(rng *rand.Rand, mode string) loadOpts {
	mixed := rng.IntN(2) == 0
	return loadOpts{clients: clients, mode: mode, overrides: mixed, barriers: mixed, reads: true}
}

// plan is what one cycle of the kill and power-loss faults runs: kvd's
// command line and the load.
type plan struct {
	cfg  kvdConfig
	load loadOpts
}

// randomPlan draws the next cycle. An async cycle whose load has no
// overrides nor barriers also gets no early checkpoint (a checkpoint
// fsyncs the log first) and a long flush interval, so that only the
// background flush makes its writes durable, the loss window is the
// flusher's alone, and wide enough to measure.
func randomPlan(rng *rand.Rand, dir, mode string) plan {
	p := plan{cfg: randomConfig(rng, dir, mode), load: randomLoad(rng, mode)}
	if mode == "async" && !p.load.overrides && !p.load.barriers {
		p.cfg.checkpointInterval, p.cfg.checkpointBytes = 0, 0
		// Long intervals: many writes at stake when the power fails.
		p.cfg.flushInterval = [...]time.Duration{20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond}[rng.IntN(3)]
	}
	return p
}

// restart starts kvd after a fault, and counts on row whether kvd logged
// a recovery cut.
func restart(t testing.TB, row *resultRow, cfg kvdConfig) *kvd {
	t.Helper()
	k := startAfterFault(t, row, cfg)
	row.recovered(len(cuts(k.Log())) > 0)
	return k
}

// startAfterFault starts kvd after a fault. A kvd that does not start is a
// violation: a crash must leave a store that kvd recovers by itself
// (DESIGN.md §1); refusals are for damage to data that was on stable
// storage.
func startAfterFault(t testing.TB, row *resultRow, cfg kvdConfig) *kvd {
	t.Helper()
	k, exit := launch(t, cfg)
	if exit != nil {
		row.fail("kvd did not start after the fault")
		t.Fatalf("kvd did not start after the fault (%v):\n%s", exit.Err, excerpt(exit.Log, 4000))
	}
	return k
}

// flushInterval returns the flush interval the server reports.
func flushInterval(t testing.TB, k *kvd) time.Duration {
	t.Helper()
	st := k.status()
	d, err := time.ParseDuration(st.FlushInterval)
	if err != nil {
		t.Fatalf("status flush_interval %q: %v", st.FlushInterval, err)
	}
	return d
}

// recoverAndCheck reads what the freshly started k recovered, checks it
// against the operations since the previous restart, and makes it the new
// base of st. A violation fails the test; callers stop then, since later
// cycles would only build on a broken state.
func recoverAndCheck(t testing.TB, k *kvd, st *store, ops []*op, readBad []string, spec checkSpec) verdict {
	t.Helper()
	s := k.status()
	got := k.scanAll()
	if s2 := k.status(); s2.Revisions.Written != s.Revisions.Written {
		t.Fatalf("the revision moved from %d to %d while nothing wrote", s.Revisions.Written, s2.Revisions.Written)
	}
	kRev := s.Revisions.Written
	v := check(st.base, st.baseRev, ops, got, kRev, spec)
	v.violations = append(readBad, v.violations...)
	if s.Revisions.Durable != kRev {
		v.violations = append(v.violations, fmt.Sprintf("after recovery the durable revision is %d, not the recovered revision %d",
			s.Revisions.Durable, kRev))
	}
	if len(v.violations) > 0 {
		t.Errorf("%d violations (recovered revision %d, previous %d, %d writes: %d recovered, %d not, %d undecided):\n  %s",
			len(v.violations), kRev, st.baseRev, v.in+v.out+v.undecided, v.in, v.out, v.undecided,
			strings.Join(first(v.violations, 25), "\n  "))
	}
	st.base, st.baseRev = got, kRev
	return v
}

// first returns at most the first n of s, and an ellipsis if it cut.
func first(s []string, n int) []string {
	if len(s) <= n {
		return s
	}
	return append(s[:n:n], "…")
}

// all is the durability requirement of faults that may lose nothing.
func all(*op) bool { return true }
