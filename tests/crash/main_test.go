// Package crash_test attacks kvd's durability contract (DESIGN.md §1) from
// the outside: it runs real kvd processes under concurrent load, injects
// faults, restarts them and checks what they recover.
//
// The faults:
//
//   - kill -9 at a random moment under load (TestKill9): nothing
//     acknowledged may be lost, in either commit mode.
//   - kill -9 under a stream of MULTI/EXEC transactions
//     (TestKill9Transactions): every transaction survives whole or not at
//     all, and none acknowledged is lost.
//   - power loss (TestPowerLoss): the data dir lives on internal/powerfs,
//     which drops everything not fsynced, or keeps part of it (in order up
//     to a sector boundary, or a random subset of pages); kvd must start
//     by itself every time, cutting what the crash left; sync mode loses
//     no acknowledged write, async mode only those acknowledged within the
//     last flush interval plus one fsync, and both recover a prefix.
//     Watchers run through every cycle and resume after each restart
//     (power_watch_test.go): a durable watcher never holds a revision the
//     power loss took back, and every history passes internal/watchcheck
//     against the recovered history, itself checked against the writes.
//   - power loss under a CPU quota (TestPowerLossCPUQuota): async mode in a
//     cgroup limited to 30% of one CPU; every lost acknowledged write is
//     within the unsynced age kvd reported before the crash.
//   - torn and corrupt files on a stopped store (TestTornTail,
//     TestLogHole, TestDamageBelowCheckpoint, TestCorruptSegment,
//     TestTruncatedState): what only a crash can leave (a torn last
//     record, a hole that no fsync covered) and damage below the
//     checkpoint are cut and logged; damage to fsynced data (a last record
//     written whole, a hole a later watermark covers, a sealed segment)
//     refuses to start naming segment and offset, leaving the files alone.
//   - I/O errors (TestFsyncEIO, TestDiskFull): failing writes get an error,
//     nothing after is acknowledged, reads keep working, the server says
//     why, and a restart on a healthy disk has every acknowledged write.
//
// go test runs a short pass of each fault. KVD_CRASH_LONG=1 runs the full
// suite. KVD_CRASH_SEED=N repeats the random schedule of a run whose seed
// was N. Faults that need root, /dev/fuse, strace, mount or a cgroup with
// the cpu controller skip when those are missing, unless CI=true, where
// they fail instead. TestMain prints a table of what every fault did when
// the run ends, with the starts after which kvd logged a recovery cut.
package crash_test

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/kvdstore/kvd/internal/kvtest"
	"github.com/redis/go-redis/v9"
)

// The suite's settings, fixed by TestMain before any test runs.
var (
	// kvdBin is the kvd binary built for this run.
	kvdBin string
	// suiteSeed seeds every random schedule of the run.
	suiteSeed uint64
	// longRun is set by KVD_CRASH_LONG=1.
	longRun bool
	// results collects the table printed at the end of the run.
	results = newResultTable()
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	suiteSeed = rand.Uint64()
	if s := os.Getenv("KVD_CRASH_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "KVD_CRASH_SEED=%q is not an unsigned integer\n", s)
			return 2
		}
		suiteSeed = n
	}
	longRun = os.Getenv("KVD_CRASH_LONG") != "" && os.Getenv("KVD_CRASH_LONG") != "0"
	fmt.Printf("crash suite: seed %d (KVD_CRASH_SEED=%d repeats it), %s pass\n", suiteSeed, suiteSeed, passName())

	dir, err := kvtest.Build(nil, "github.com/kvdstore/kvd/cmd/kvd")
	if err != nil {
		fmt.Fprintf(os.Stderr, "building kvd: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	kvdBin = filepath.Join(dir, "kvd")

	redis.SetLogger(quietLogger{})
	code := m.Run()
	results.print(os.Stdout)
	return code
}

func passName() string {
	if longRun {
		return "long (KVD_CRASH_LONG=1)"
	}
	return "short"
}

// seeded returns the random source of test t: the suite seed mixed with the
// test's name, so that a test run alone with KVD_CRASH_SEED repeats the
// schedule it had in the full run. A failing test logs how to repeat it.
func seeded(t *testing.T) *rand.Rand {
	t.Helper()
	h := fnv.New64a()
	h.Write([]byte(t.Name()))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("repeat with: KVD_CRASH_SEED=%d go test ./tests/crash/ -run '^%s$'", suiteSeed, topName(t.Name()))
		}
	})
	return rand.New(rand.NewPCG(suiteSeed, h.Sum64()))
}

func topName(name string) string {
	for i := range len(name) {
		if name[i] == '/' {
			return name[:i]
		}
	}
	return name
}

// pick returns short in the default pass and long with KVD_CRASH_LONG=1.
func pick[T any](short, long T) T {
	if longRun {
		return long
	}
	return short
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		kvtest.Require(t, "needs root")
	}
}

func requireFUSE(t testing.TB) {
	t.Helper()
	requireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		kvtest.Require(t, fmt.Sprintf("needs /dev/fuse: %v", err))
	}
}
