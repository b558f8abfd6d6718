package crash_test

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/powerfs"
)

// TestPowerLoss runs kvd on a powerfs mount and, at random moments under
// load, kills it and drops everything it did not fsync (sometimes keeping a
// torn part of the unsynced tails, sometimes a random subset of the
// unsynced pages, out of order), then restarts it on what a machine would
// find after the power came back. sync mode may lose no acknowledged
// write; async mode only writes acknowledged within the last flush
// interval plus one fsync before the crash; both recover a prefix.
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
			var dropped, torn int64
			recoveries, reordered, cuts := 0, 0, 0
			for range pick(8, 20) {
				interval := flushInterval(t, k)
				l := startLoad(t, k, st, rng, next.load)
				time.Sleep(loadDuration(rng))
				l.updateFsync(k.hc)
				crashAt := time.Now()
				k.kill()
				ops := l.stop()
				maxDurable, fsync, _ := l.snapshot()
				bound := interval + fsync

				var opts powerfs.CrashOptions
				switch rng.IntN(3) {
				case 1:
					opts.Torn = rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
				case 2:
					opts.Reorder = rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
					reordered++
				}
				cs := m.crash(opts)
				dropped += cs.DroppedBytes
				torn += cs.TornBytes
				if rng.IntN(4) == 0 {
					// The power fails again while kvd recovers.
					startAndKill(t, randomConfig(rng, dir, mode), time.Duration(rng.Int64N(int64(30*time.Millisecond))))
					m.crash(powerfs.CrashOptions{})
					recoveries++
				}

				next = randomPlan(rng, dir, mode)
				if opts.Reorder != nil {
					var was bool
					k, was = restartCuttingHole(t, row, next.cfg)
					if was {
						cuts++
					}
				} else {
					k = restart(t, row, next.cfg)
				}
				v := recoverAndCheck(t, k, st, ops, l.readViolations(), checkSpec{
					mode:       mode,
					maxDurable: maxDurable,
					crashAt:    crashAt,
					required: func(o *op) bool {
						return o.syncAcked(mode) || o.ret.Before(crashAt.Add(-bound))
					},
				})
				row.add(v, bound)
				if t.Failed() {
					t.Logf("power loss dropped %d bytes and %d entries, kept %d torn bytes; async bound %v (flush interval %v + fsync %v)",
						cs.DroppedBytes, cs.DroppedEntries, cs.TornBytes, bound, interval, fsync)
					return
				}
			}
			if err := k.stop(); err != nil {
				t.Errorf("kvd stop: %v", err)
			}
			row.setNote("unsynced bytes dropped %d, torn or reordered bytes kept %d, crashes during recovery %d, reordered crashes %d (log cut at a hole after %d)",
				dropped, torn, recoveries, reordered, cuts)
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

// corruptRE matches kvd's refusal to start on a bad record that valid
// records follow.
var corruptRE = regexp.MustCompile(`corrupt record in segment (\d{20}) at offset (\d+)`)

// restartCuttingHole restarts kvd after a power loss that kept unsynced
// pages out of order. Such a loss can leave a hole (a page never written)
// in the log's unsynced tail with valid records after it, which kvd
// refuses as corruption. Then it follows the README ("When kvd refuses to
// start"): cut the segment at the offset kvd names, and start again. The
// hole must be in the last segment, and the check that follows must find
// every write the contract promises: a hole in never-fsynced data is the
// only corruption this crash can make. It reports whether it cut.
func restartCuttingHole(t testing.TB, row *resultRow, cfg kvdConfig) (*kvd, bool) {
	t.Helper()
	k, exit := launch(t, cfg)
	if exit == nil {
		return k, false
	}
	m := corruptRE.FindStringSubmatch(exit.stderr)
	if m == nil {
		row.fail("kvd did not start after the fault")
		t.Fatalf("kvd did not start after a reordered power loss (%v):\n%s", exit.err, excerpt(exit.stderr, 4000))
	}
	segs := segments(t, cfg.dataDir)
	if len(segs) == 0 {
		t.Fatalf("no log segment in %s", cfg.dataDir)
	}
	if last := segs[len(segs)-1]; m[1] != last {
		row.fail("corruption in a sealed segment")
		t.Fatalf("a reordered power loss corrupted sealed segment %s (the last is %s):\n%s", m[1], last, excerpt(exit.stderr, 4000))
	}
	off, err := strconv.ParseInt(m[2], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(cfg.dataDir, "wal", m[1]), off); err != nil {
		t.Fatal(err)
	}
	t.Logf("kvd refused a log with a hole at %s:%d; cut there", m[1], off)
	return restart(t, row, cfg), true
}
