package crash_test

import (
	"testing"
	"time"
)

// TestKill9 kills kvd with SIGKILL at random moments under load and
// restarts it on the same data dir. A process crash leaves the page cache
// alone, so neither mode may lose an acknowledged write, and the recovered
// state must be a prefix of whole batches.
func TestKill9(t *testing.T) {
	for _, mode := range []string{"sync", "async"} {
		t.Run(mode, func(t *testing.T) {
			rng := seeded(t)
			row := results.row("kill -9", mode)
			dir := t.TempDir()
			st := newStore()
			next := randomPlan(rng, dir, mode)
			k := startKVD(t, next.cfg)
			st.lastRev = hasLastRev(k)
			for range pick(10, 50) {
				l := startLoad(t, k, st, rng, next.load)
				time.Sleep(loadDuration(rng))
				crashAt := time.Now()
				k.kill()
				ops := l.stop()
				maxDurable, _, _ := l.snapshot()

				next = randomPlan(rng, dir, mode)
				k = restart(t, row, next.cfg)
				v := recoverAndCheck(t, k, st, ops, l.readViolations(), checkSpec{
					mode: mode, required: all, maxDurable: maxDurable, crashAt: crashAt,
				})
				row.add(v, 0)
				if t.Failed() {
					return
				}
			}
			if err := k.stop(); err != nil {
				t.Errorf("kvd stop: %v", err)
			}
		})
	}
}
