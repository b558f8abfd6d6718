package crash_test

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/powerfs"
)

// TestPowerLoss runs kvd on a powerfs mount and, at random moments under
// load, kills it and drops everything it did not fsync (a third of the
// time keeping the unsynced changes in order up to a sector boundary, a
// third of the time a random subset of the unsynced pages, out of order),
// then restarts it on what a machine would find after the power came back.
// kvd must start by itself every time, cutting what the crash left (the
// row counts the power losses after which it logged a cut); sync mode may
// lose no acknowledged write, async mode only writes acknowledged within
// the last flush interval plus one fsync before the crash; both recover a
// prefix.
func TestPowerLoss(t *testing.T) {
	requireFUSE(t)
	for _, mode := range []string{"sync", "async"} {
		t.Run(mode, func(t *testing.T) {
			rng := seeded(t)
			row := results.row("power loss", mode)
			m := newPowerMount(t)
			dir := filepath.Join(m.mnt, "data")
			if err := os.Mkdir(dir, 0o750); err != nil {
				t.Fatal(err)
			}
			syncPath(t, m.mnt)

			st := newStore()
			next := randomPlan(rng, dir, mode)
			k := startKVD(t, next.cfg)
			st.lastRev = hasLastRev(k)
			ws := newWatchers(t, mode)
			var dropped, torn int64
			recoveries := 0
			// Per kind of power loss: how many, and after how many kvd
			// logged a recovery cut; and the cuts by reason.
			kinds := []string{"plain", "torn", "reordered"}
			losses, cutAfter := map[string]int{}, map[string]int{}
			reasons := map[string]int{}
			for range pick(8, 20) {
				interval := flushInterval(t, k)
				ws.start(k)
				l := startLoad(t, k, st, rng, next.load)
				time.Sleep(loadDuration(rng))
				l.updateFsync(k.hc)
				crashAt := time.Now()
				k.kill()
				ops := l.stop()
				ws.halt()
				maxDurable, fsync, _ := l.snapshot()
				bound := interval + fsync

				var opts powerfs.CrashOptions
				kind := kinds[rng.IntN(3)]
				switch kind {
				case "torn":
					opts.Torn = rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
				case "reordered":
					opts.Reorder = rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
				}
				losses[kind]++
				cs := m.crash(opts)
				dropped += cs.DroppedBytes
				torn += cs.TornBytes
				var logged []logCut
				if rng.IntN(4) == 0 {
					// The power fails again while kvd recovers; what
					// that kvd cut before it died counts too.
					out := startAndKill(t, randomConfig(rng, dir, mode), time.Duration(rng.Int64N(int64(30*time.Millisecond))))
					logged = cuts(out)
					m.crash(powerfs.CrashOptions{})
					recoveries++
				}

				next = randomPlan(rng, dir, mode)
				k = startAfterFault(t, row, next.cfg)
				logged = append(logged, cuts(k.Log())...)
				row.recovered(len(logged) > 0)
				if len(logged) > 0 {
					cutAfter[kind]++
					for _, c := range logged {
						reasons[c.kind()]++
					}
					t.Logf("%s power loss: kvd cut the log: %+v", kind, logged)
				}
				baseRev := st.baseRev
				v := recoverAndCheck(t, k, st, ops, l.readViolations(), checkSpec{
					mode:       mode,
					maxDurable: maxDurable,
					crashAt:    crashAt,
					required: func(o *op) bool {
						return o.syncAcked(mode) || o.ret.Before(crashAt.Add(-bound))
					},
				})
				row.add(v, bound)
				if !t.Failed() {
					ws.recovered(k, ops, baseRev, st.baseRev)
				}
				if t.Failed() {
					t.Logf("power loss dropped %d bytes and %d entries, kept %d torn bytes; async bound %v (flush interval %v + fsync %v)",
						cs.DroppedBytes, cs.DroppedEntries, cs.TornBytes, bound, interval, fsync)
					return
				}
			}
			ws.finish(k)
			if err := k.stop(); err != nil {
				t.Errorf("kvd stop: %v", err)
			}
			var after, by []string
			for _, kind := range kinds {
				after = append(after, fmt.Sprintf("%d of %d %s", cutAfter[kind], losses[kind], kind))
			}
			for _, r := range slices.Sorted(maps.Keys(reasons)) {
				by = append(by, fmt.Sprintf("%s %d", r, reasons[r]))
			}
			note := fmt.Sprintf("unsynced bytes dropped %d, torn or reordered bytes kept %d, crashes during recovery %d; cut after %s",
				dropped, torn, recoveries, strings.Join(after, ", "))
			if len(by) > 0 {
				note += " (cuts: " + strings.Join(by, ", ") + ")"
			}
			row.setNote("%s", note)
			if mode == "async" && dropped == 0 {
				t.Errorf("no power loss dropped any unsynced data: the async cycles tested nothing")
			}
		})
	}
}

// powerMount is a powerfs mount that a test crashes and mounts again.
type powerMount struct {
	t       testing.TB
	mnt     string
	backing string
	fs      *powerfs.FS
}

// newPowerMount mounts powerfs over a backing directory in memory when it
// can (/dev/shm): the fsyncs powerfs passes on then take no disk time, so
// the fsync kvd measures is powerfs's own, steady, and the async loss bound
// (flush interval plus the slowest fsync) is not at the mercy of a disk
// stalling during the one fsync that the crash cuts short.
func newPowerMount(t testing.TB) *powerMount {
	t.Helper()
	m := &powerMount{t: t, mnt: t.TempDir(), backing: scratchDir(t)}
	m.mount()
	// Registered after t.TempDir, so it runs before the directories go.
	t.Cleanup(func() {
		if err := m.fs.Unmount(); err != nil {
			t.Errorf("unmount powerfs: %v", err)
		}
	})
	return m
}

func (m *powerMount) mount() {
	m.t.Helper()
	log := slog.New(slog.NewTextHandler(m.t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	fs, err := powerfs.Mount(m.mnt, m.backing, powerfs.Options{Logger: log})
	if err != nil {
		m.t.Fatal(err)
	}
	m.fs = fs
}

// crash drops what was not synced and mounts the durable state again. The
// processes using the mount must be gone.
func (m *powerMount) crash(opts powerfs.CrashOptions) powerfs.Stats {
	m.t.Helper()
	err := m.fs.Crash(opts)
	st := m.fs.Stats()
	if err != nil && !errors.Is(err, powerfs.ErrClosed) {
		m.t.Fatalf("powerfs crash: %v", err)
	}
	m.mount()
	return st
}
