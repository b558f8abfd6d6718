package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/kvtest"
	"github.com/kvdstore/kvd/internal/powerfs"
)

// Power loss: each node's data directory is on a mount of the crash
// suite's FUSE file system (internal/powerfs), one per node. Cutting a
// node's power kills its process with SIGKILL, then drops everything it
// wrote without fsyncing (or keeps part of it, torn at a sector boundary
// or a random subset of its pages, as a disk may), and mounts what is left,
// on which the node restarts with the same data directory and address:
// what a machine finds on its disk after the power came back.

// powerRounds is how many rounds a power-loss scenario runs: short in the
// default pass, as many as the other scenarios with KVD_CLUSTER_LONG=1.
func powerRounds(short int) int {
	if os.Getenv("KVD_CLUSTER_LONG") == "1" {
		return rounds()
	}
	return short
}

// requireFUSE skips the test unless it can mount powerfs (root and
// /dev/fuse); under CI=true it fails instead (kvtest.Require).
func requireFUSE(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		kvtest.Require(t, "needs root to mount the power-loss file system")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		kvtest.Require(t, fmt.Sprintf("needs /dev/fuse: %v", err))
	}
}

// powerSeed returns the random source of the test's power cuts:
// KVD_CLUSTER_SEED if set, else a random seed, which a failing test logs.
func powerSeed(t *testing.T) *rand.Rand {
	t.Helper()
	seed := rand.Uint64()
	if s := os.Getenv("KVD_CLUSTER_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("KVD_CLUSTER_SEED=%q is not an unsigned integer", s)
		}
		seed = n
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("repeat the power cuts with: KVD_CLUSTER_SEED=%d go test ./tests/cluster/ -run '^%s$'", seed, strings.SplitN(t.Name(), "/", 2)[0])
		}
	})
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// disk is one node's powerfs mount.
type disk struct {
	t       testing.TB
	mnt     string
	backing string
	fs      *powerfs.FS
}

// newDisk mounts powerfs over a backing directory in memory when it can
// (/dev/shm), so that the fsyncs it passes on take no disk time, and
// returns it with a data directory, made durable, at mnt/data.
func newDisk(t testing.TB) *disk {
	t.Helper()
	d := &disk{t: t, mnt: t.TempDir(), backing: memDir(t)}
	d.mount()
	// Registered after t.TempDir and before any kvd is started on the
	// mount: it runs after the processes are killed and before the
	// directories are removed.
	t.Cleanup(func() {
		if err := d.fs.Unmount(); err != nil {
			t.Errorf("unmount powerfs: %v", err)
		}
	})
	if err := os.Mkdir(d.dataDir(), 0o750); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(d.mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync %s: %v", d.mnt, err)
	}
	return d
}

func (d *disk) dataDir() string { return filepath.Join(d.mnt, "data") }

func (d *disk) mount() {
	d.t.Helper()
	log := slog.New(slog.NewTextHandler(d.t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	fs, err := powerfs.Mount(d.mnt, d.backing, powerfs.Options{Logger: log})
	if err != nil {
		d.t.Fatal(err)
	}
	d.fs = fs
}

// crash drops what was not fsynced (see powerfs.CrashOptions) and mounts
// the durable state again. The process using the mount must be gone.
func (d *disk) crash(opts powerfs.CrashOptions) powerfs.Stats {
	d.t.Helper()
	err := d.fs.Crash(opts)
	st := d.fs.Stats()
	if err != nil && !errors.Is(err, powerfs.ErrClosed) {
		d.t.Fatalf("powerfs crash: %v", err)
	}
	d.mount()
	return st
}

// memDir returns a new directory in /dev/shm if there is one, else in the
// test's temporary directory.
func memDir(t testing.TB) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "kvd-cluster-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

// powerCluster is a cluster whose nodes run on powerfs mounts.
type powerCluster struct {
	*cluster
	disks map[string]*disk // by node name
	rng   *rand.Rand
	cutStats
}

// cutStats counts what power cuts did.
type cutStats struct {
	cuts                 int
	unsyncedCuts         int            // cuts that found unsynced data to drop or tear
	kinds                map[string]int // plain, torn, reordered
	dropped, tornOrReord int64          // bytes
}

// add adds o's counts to s's.
func (s *cutStats) add(o cutStats) {
	if s.kinds == nil {
		s.kinds = map[string]int{}
	}
	s.cuts += o.cuts
	s.unsyncedCuts += o.unsyncedCuts
	for k, n := range o.kinds {
		s.kinds[k] += n
	}
	s.dropped += o.dropped
	s.tornOrReord += o.tornOrReord
}

func (s *cutStats) String() string {
	return fmt.Sprintf("%d node power cuts (%d plain, %d torn, %d reordered; %d found unsynced data), unsynced bytes dropped %d, torn or reordered bytes kept %d",
		s.cuts, s.kinds["plain"], s.kinds["torn"], s.kinds["reordered"], s.unsyncedCuts, s.dropped, s.tornOrReord)
}

// newPowerCluster starts three nodes in commit mode mode, each on a
// powerfs mount of its own.
func newPowerCluster(t *testing.T, mode string, rng *rand.Rand) *powerCluster {
	t.Helper()
	pc := &powerCluster{disks: map[string]*disk{}, rng: rng, cutStats: cutStats{kinds: map[string]int{}}}
	pc.cluster = newClusterOn(t, mode, func(name string) string {
		d := newDisk(t)
		pc.disks[name] = d
		return d.dataDir()
	})
	// On a failure, what each node logged last: the processes are gone
	// by then, their logs are not.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, n := range pc.nodes {
			if p := n.proc(); p != nil {
				t.Logf("%s's log, the end:\n%s", n.name, logTail(p.Log(), 6000))
			}
		}
	})
	return pc
}

func logTail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// cutPower cuts the power of ns at once: every process is killed before
// any disk drops what it did not fsync, each disk plainly, torn or
// reordered at random. It does not restart them (see restart).
func (pc *powerCluster) cutPower(ns ...*node) { pc.cut(false, ns...) }

// cutPowerPlain cuts ns's power, and their disks drop everything that was
// not fsynced, none of it torn or kept.
func (pc *powerCluster) cutPowerPlain(ns ...*node) { pc.cut(true, ns...) }

func (pc *powerCluster) cut(plain bool, ns ...*node) {
	pc.t.Helper()
	for _, n := range ns {
		n.p.Kill()
	}
	for _, n := range ns {
		var opts powerfs.CrashOptions
		kind := "plain"
		if !plain {
			kind = []string{"plain", "torn", "reordered"}[pc.rng.IntN(3)]
		}
		switch kind {
		case "torn":
			opts.Torn = rand.New(rand.NewPCG(pc.rng.Uint64(), pc.rng.Uint64()))
		case "reordered":
			opts.Reorder = rand.New(rand.NewPCG(pc.rng.Uint64(), pc.rng.Uint64()))
		}
		st := pc.disks[n.name].crash(opts)
		pc.cuts++
		if st.DroppedBytes+st.DroppedEntries+st.TornBytes > 0 {
			pc.unsyncedCuts++
		}
		pc.kinds[kind]++
		pc.dropped += st.DroppedBytes
		pc.tornOrReord += st.TornBytes
	}
}

// restart starts ns again on their data directories and addresses.
func (pc *powerCluster) restart(ns ...*node) {
	pc.t.Helper()
	for _, n := range ns {
		pc.start(n)
	}
}

// powerTally sums a power-loss test's figures over its rounds.
type powerTally struct {
	rounds, acked, failed int
	cuts                  cutStats
}

func (pt *powerTally) add(pc *powerCluster, h *history) {
	pt.rounds++
	pt.acked += len(h.acked)
	pt.failed += h.unknown
	pt.cuts.add(pc.cutStats)
}

func (pt *powerTally) log(t *testing.T, what string) {
	t.Helper()
	if pt.rounds > 1 {
		t.Logf("%s: %d rounds, %d acknowledged writes checked on every node, 0 lost, %d writes failed (outcome unknown or refused); %s",
			what, pt.rounds, pt.acked, pt.failed, &pt.cuts)
	}
}

// TestPowerLossFollower: in each commit mode, under load, the power of a
// follower (a minority) is cut; it restarts on what its disk kept and
// catches up. No acknowledged write is lost (in async mode too: the
// majority has them), the nodes converge, and the register clients'
// history is linearizable.
func TestPowerLossFollower(t *testing.T) {
	requireFUSE(t)
	for _, mode := range []string{"sync", "async"} {
		t.Run(mode, func(t *testing.T) {
			rng := powerSeed(t)
			var tally powerTally
			for r := range powerRounds(1) {
				t.Run(fmt.Sprintf("round%d", r), func(t *testing.T) {
					pc := newPowerCluster(t, mode, rng)
					h := scenarioOn(t, pc.cluster, func(c *cluster, h *history, lh *linHistory) {
						f := c.others(c.leader())[0]
						time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
						pc.cutPower(f)
						// Down for a while, so that the others go on
						// without it and it has entries to catch up on.
						time.Sleep(500 * time.Millisecond)
						pc.restart(f)
					})
					t.Logf("%s", &pc.cutStats)
					tally.add(pc, h)
				})
			}
			tally.log(t, "power loss of a follower, "+mode+" mode")
		})
	}
}

// TestPowerLossAll: in sync mode, under load, the power of all three nodes
// is cut at once; they restart on what their disks kept. Every write
// acknowledged before the cut is on every node, the nodes converge, and
// the register clients' history is linearizable.
func TestPowerLossAll(t *testing.T) {
	requireFUSE(t)
	rng := powerSeed(t)
	var tally powerTally
	for r := range powerRounds(2) {
		t.Run(fmt.Sprintf("round%d", r), func(t *testing.T) {
			pc := newPowerCluster(t, "sync", rng)
			h := scenarioOn(t, pc.cluster, func(c *cluster, h *history, lh *linHistory) {
				time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
				pc.cutPower(c.nodes...)
				pc.restart(c.nodes...)
			})
			t.Logf("%s", &pc.cutStats)
			tally.add(pc, h)
		})
	}
	tally.log(t, "power loss of all nodes")
}
