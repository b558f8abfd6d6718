package crash_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/kvtest"
	"github.com/kvdstore/kvd/internal/powerfs"
	"github.com/redis/go-redis/v9"
)

// The CPU quota of TestPowerLossCPUQuota: 30% of one CPU.
const (
	quotaRuntime = 30 * time.Millisecond
	quotaPeriod  = 100 * time.Millisecond
	// quotaFlushInterval is kvd's default flush interval, the one the
	// losses under a quota were first seen with.
	quotaFlushInterval = 10 * time.Millisecond
	// exposureResolution covers the rounding of INFO's milliseconds, which
	// have three decimals.
	exposureResolution = time.Microsecond
)

// TestPowerLossCPUQuota runs kvd in async mode under a CPU quota of 30% of
// one CPU (a cgroup) and fails its power at random moments under load, as
// TestPowerLoss does. Starved of CPU, kvd sits throttled for most of every
// quota period, with written, acknowledged records that its flusher was due
// to fsync, so a power loss can take writes older than the nominal bound
// (flush interval plus the slowest fsync). What kvd must get right is what
// it reports. The test polls INFO persistence until the crash; kvd computes
// each answer after the poll's call, when every record then written and not
// yet durable (every record the crash can take) was at most
// unsynced_oldest_age_ms old. So every acknowledged write the crash loses
// must have been acknowledged at most that figure of kvd's last answer,
// plus the time from that poll's call to the crash (the slack), before the
// crash. That bound is at most unsynced_max_age_last_minute_ms of the same
// answer plus the slack: the exposure the row reports, plus the slack. While kvd is
// throttled it answers nothing, so the slack can be a whole throttled
// stretch; the row's note also says whether the largest exposure reported
// before a crash covered its losses without it. kvd must start by itself
// after every power loss, and the recovered state must pass the suite's
// prefix and durability checks. kvd starts and recovers outside the quota;
// it runs every cycle's load under it.
func TestPowerLossCPUQuota(t *testing.T) {
	requireFUSE(t)
	const mode = "async"
	q := newCPUQuota(t, quotaRuntime, quotaPeriod)
	rng := seeded(t)
	row := results.row("power loss, 30% CPU quota", mode)
	m := newPowerMount(t)
	dir := filepath.Join(m.mnt, "data")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	syncPath(t, m.mnt)

	cycles := pick(3, 10)
	st := newStore()
	next := quotaPlan(rng, dir)
	k := startKVD(t, next.cfg)
	st.lastRev = hasLastRev(k)
	var (
		dropped                 int64
		cuts                    int
		maxReported, maxSlack   time.Duration
		beyondReported          int           // lost writes older than the largest exposure reported before their crash
		exceeded                int           // cycles whose largest loss exceeded the nominal bound
		maxExcess, excessOf     time.Duration // by how much at most, and that cycle's nominal bound
		maxNominal, maxInterval time.Duration
	)
	// A cycle whose crash finds nothing unsynced tests nothing: run more,
	// up to three times as many, until one has dropped some.
	ran := 0
	for ; ran < cycles || (dropped == 0 && ran < 3*cycles); ran++ {
		q.add(k.Pid())
		interval := flushInterval(t, k)
		w := watchExposure(k)
		l := startLoad(t, k, st, rng, next.load)
		time.Sleep(300*time.Millisecond + time.Duration(rng.Int64N(int64(700*time.Millisecond))))
		l.updateFsync(k.hc)
		// updateFsync waited for kvd's answer, which comes only while the
		// quota lets kvd run: strike at a random point of a quota period.
		time.Sleep(time.Duration(rng.Int64N(int64(quotaPeriod))))
		e := w.crash(t, k)
		ops := l.stop()
		maxDurable, fsync, _ := l.snapshot()
		nominal := interval + fsync
		slack := e.crashAt.Sub(e.lastCall)
		bound := e.lastOldest + slack + exposureResolution

		var opts powerfs.CrashOptions
		switch rng.IntN(3) {
		case 1:
			opts.Torn = rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
		case 2:
			opts.Reorder = rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
		}
		cs := m.crash(opts)
		dropped += cs.DroppedBytes

		next = quotaPlan(rng, dir)
		k = restart(t, row, next.cfg) // no cut by hand: kvd recovers by itself or fails the row
		if n, _ := strconv.Atoi(k.info("persistence")["recovery_cuts"]); n > 0 {
			cuts++
		}
		crashAt := e.crashAt
		v := recoverAndCheck(t, k, st, ops, l.readViolations(), checkSpec{
			mode:       mode,
			maxDurable: maxDurable,
			crashAt:    crashAt,
			required: func(o *op) bool {
				return o.syncAcked(mode) || o.ret.Before(crashAt.Add(-bound))
			},
		})
		row.add(v, bound)
		for _, o := range v.lost {
			if !o.syncAcked(mode) && crashAt.Sub(o.ret) > e.reported+exposureResolution {
				beyondReported++
			}
		}
		maxReported, maxSlack = max(maxReported, e.reported), max(maxSlack, slack)
		maxNominal, maxInterval = max(maxNominal, nominal), max(maxInterval, interval)
		if v.maxLoss > nominal {
			exceeded++
			if v.maxLoss-nominal > maxExcess {
				maxExcess, excessOf = v.maxLoss-nominal, nominal
			}
		}
		t.Logf("lost %d acknowledged writes, the oldest acknowledged %v before the crash; bound %v (oldest unsynced %v at kvd's last answer + slack %v); exposure reported %v; nominal bound %v (flush interval %v + fsync %v); %d unsynced bytes dropped",
			len(v.lost), v.maxLoss.Round(10*time.Microsecond), bound.Round(10*time.Microsecond), e.lastOldest, slack.Round(10*time.Microsecond),
			e.reported, nominal.Round(10*time.Microsecond), interval, fsync.Round(10*time.Microsecond), cs.DroppedBytes)
		if t.Failed() {
			return
		}
	}
	if err := k.stop(); err != nil {
		t.Errorf("kvd stop: %v", err)
	}
	periods, throttled := q.stat()
	excess := "in no cycle"
	if exceeded > 0 {
		excess = fmt.Sprintf("in %d of %d cycles, by up to %v (over %v)", exceeded, ran, maxExcess.Round(10*time.Microsecond), excessOf.Round(10*time.Microsecond))
	}
	row.setNote("flush interval %v; largest exposure reported (unsynced_max_age_last_minute_ms) %v, %d lost writes older than the one reported before their crash; slack after kvd's last answer ≤ %v; loss beyond the nominal bound (flush interval + slowest fsync, ≤ %v): %s; kvd throttled in %d of %d quota periods; recovered by cutting %d times; unsynced bytes dropped %d",
		maxInterval, maxReported, beyondReported, maxSlack.Round(10*time.Microsecond), maxNominal.Round(10*time.Microsecond), excess, throttled, periods, cuts, dropped)
	if dropped == 0 {
		t.Errorf("no power loss in %d cycles dropped any unsynced data: the cycles tested nothing", ran)
	}
	if throttled == 0 {
		t.Errorf("the quota never throttled kvd (%d periods): the cycles ran unstarved", periods)
	}
}

// quotaPlan is randomPlan in async mode with kvd's default flush interval.
func quotaPlan(rng *rand.Rand, dir string) plan {
	p := randomPlan(rng, dir, "async")
	p.cfg.flushInterval = quotaFlushInterval
	return p
}

// exposurePoll is the interval of the exposure polls.
const exposurePoll = 2 * time.Millisecond

// exposureWatch polls INFO persistence every exposurePoll until the crash.
type exposureWatch struct {
	k    *kvd
	done chan struct{}

	mu      sync.Mutex
	crashed bool // set right before the kill: later answers are ignored
	last    exposure
}

// exposure is what kvd reported before a crash.
type exposure struct {
	crashAt    time.Time
	lastCall   time.Time     // when the latest poll kvd answered was sent
	lastOldest time.Duration // its unsynced_oldest_age_ms
	reported   time.Duration // the largest unsynced_max_age_last_minute_ms kvd answered
}

func watchExposure(k *kvd) *exposureWatch {
	w := &exposureWatch{k: k, done: make(chan struct{})}
	go w.poll()
	return w
}

func (w *exposureWatch) poll() {
	defer close(w.done)
	rdb := w.k.redis()
	defer rdb.Close()
	tick := time.NewTicker(exposurePoll)
	defer tick.Stop()
	for range tick.C {
		call := time.Now()
		oldest, lastMinute, err := readExposure(rdb)
		w.mu.Lock()
		if w.crashed {
			w.mu.Unlock()
			return
		}
		if err == nil {
			w.last.lastCall, w.last.lastOldest = call, oldest
			w.last.reported = max(w.last.reported, lastMinute)
		}
		w.mu.Unlock()
	}
}

// crash kills kvd now and returns what it reported before.
func (w *exposureWatch) crash(t testing.TB, k *kvd) exposure {
	t.Helper()
	w.mu.Lock()
	w.crashed = true
	w.last.crashAt = time.Now()
	k.kill()
	e := w.last
	w.mu.Unlock()
	<-w.done
	if e.lastCall.IsZero() {
		t.Fatalf("kvd answered no INFO persistence before the crash")
	}
	return e
}

// readExposure reads unsynced_oldest_age_ms and
// unsynced_max_age_last_minute_ms from INFO persistence.
func readExposure(rdb *redis.Client) (oldest, lastMinute time.Duration, err error) {
	s, err := rdb.Info(context.Background(), "persistence").Result()
	if err != nil {
		return 0, 0, err
	}
	fields := map[string]*time.Duration{"unsynced_oldest_age_ms": &oldest, "unsynced_max_age_last_minute_ms": &lastMinute}
	found := 0
	for line := range strings.SplitSeq(s, "\r\n") {
		key, v, _ := strings.Cut(line, ":")
		if d := fields[key]; d != nil {
			ms, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("INFO persistence %s %q: %v", key, v, err)
			}
			*d = time.Duration(ms * float64(time.Millisecond))
			found++
		}
	}
	if found != len(fields) {
		return 0, 0, errors.New("INFO persistence lacks unsynced_oldest_age_ms or unsynced_max_age_last_minute_ms")
	}
	return oldest, lastMinute, nil
}

// cpuQuota is a fresh cgroup that limits the CPU time of the processes put
// in it: cgroup v2 (cpu.max) where a cgroup2 mount has the cpu controller,
// else a cgroup v1 cpu hierarchy (cpu.cfs_quota_us, cpu.cfs_period_us). The
// test's cleanup moves what is left in it back to its parent and removes it.
type cpuQuota struct {
	t   testing.TB
	dir string
	// unhand is the parent's cgroup.subtree_control when the cgroup v2
	// parent handed the cpu controller down for it alone.
	unhand string
}

// newCPUQuota creates the cgroup, or skips the test (fails it with
// CI=true) when there is none to create.
func newCPUQuota(t testing.TB, quota, period time.Duration) *cpuQuota {
	t.Helper()
	requireRoot(t)
	mnt, v2, reason := findCPUCgroup()
	kvtest.Require(t, reason)
	dir, err := os.MkdirTemp(mnt, "kvd-crash-quota-")
	if err != nil {
		kvtest.Require(t, fmt.Sprintf("needs a cgroup it can create under %s: %v", mnt, err))
	}
	q := &cpuQuota{t: t, dir: dir}
	t.Cleanup(q.remove)
	us := func(d time.Duration) string { return strconv.FormatInt(d.Microseconds(), 10) }
	if v2 {
		// The parent must hand the cpu controller down; if it did not,
		// it stops again once the cgroup is gone.
		ctl := filepath.Join(mnt, "cgroup.subtree_control")
		if b, _ := os.ReadFile(ctl); !slices.Contains(strings.Fields(string(b)), "cpu") {
			err = q.write(ctl, "+cpu")
			q.unhand = ctl
		}
		if err == nil {
			err = q.write(filepath.Join(dir, "cpu.max"), us(quota)+" "+us(period))
		}
	} else {
		err = q.write(filepath.Join(dir, "cpu.cfs_period_us"), us(period))
		if err == nil {
			err = q.write(filepath.Join(dir, "cpu.cfs_quota_us"), us(quota))
		}
	}
	if err != nil {
		kvtest.Require(t, fmt.Sprintf("needs a CPU quota on cgroup %s: %v", dir, err))
	}
	return q
}

// findCPUCgroup returns the mount point of a cgroup hierarchy with the cpu
// controller, preferring cgroup v2, or why there is none.
func findCPUCgroup() (mnt string, v2 bool, reason string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false, fmt.Sprintf("needs a cgroup file system with the cpu controller: %v", err)
	}
	defer f.Close()
	unescape := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	var v1 string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 5 || sep+3 >= len(fields) {
			continue
		}
		point := unescape.Replace(fields[4])
		switch fields[sep+1] {
		case "cgroup2":
			b, err := os.ReadFile(filepath.Join(point, "cgroup.controllers"))
			if err == nil && slices.Contains(strings.Fields(string(b)), "cpu") {
				return point, true, ""
			}
		case "cgroup":
			if v1 == "" && slices.Contains(strings.Split(fields[sep+3], ","), "cpu") {
				v1 = point
			}
		}
	}
	if v1 != "" {
		return v1, false, ""
	}
	return "", false, "needs a cgroup file system with the cpu controller (cgroup v2 listing cpu in cgroup.controllers, or a cgroup v1 cpu hierarchy); /proc/self/mountinfo has none"
}

func (q *cpuQuota) write(path, s string) error {
	return os.WriteFile(path, []byte(s), 0)
}

// add moves process pid, all its threads, into the cgroup.
func (q *cpuQuota) add(pid int) {
	q.t.Helper()
	if err := q.write(filepath.Join(q.dir, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
		q.t.Fatalf("put kvd (pid %d) under the CPU quota: %v", pid, err)
	}
	if !slices.Contains(q.procs(), strconv.Itoa(pid)) {
		q.t.Fatalf("pid %d is not in %s/cgroup.procs after it was written there", pid, q.dir)
	}
}

func (q *cpuQuota) procs() []string {
	b, _ := os.ReadFile(filepath.Join(q.dir, "cgroup.procs"))
	return strings.Fields(string(b))
}

// stat returns the quota periods that have elapsed with processes in the
// cgroup and how many of them throttled the processes.
func (q *cpuQuota) stat() (periods, throttled int64) {
	b, err := os.ReadFile(filepath.Join(q.dir, "cpu.stat"))
	if err != nil {
		q.t.Errorf("read cpu.stat: %v", err)
		return 0, 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		key, v, _ := strings.Cut(line, " ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch key {
		case "nr_periods":
			periods = n
		case "nr_throttled":
			throttled = n
		}
	}
	return periods, throttled
}

// remove moves any process left in the cgroup to its parent and removes
// it. A process that just exited may keep it busy for a moment.
func (q *cpuQuota) remove() {
	parent := filepath.Join(filepath.Dir(q.dir), "cgroup.procs")
	var err error
	kvtest.WaitFor(5*time.Second, 20*time.Millisecond, func() bool {
		for _, pid := range q.procs() {
			q.write(parent, pid) // a process gone meanwhile is not an error
		}
		err = os.Remove(q.dir)
		return err == nil || errors.Is(err, os.ErrNotExist)
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		q.t.Errorf("remove cgroup %s: %v", q.dir, err)
	} else if q.unhand != "" {
		q.write(q.unhand, "-cpu") // fails, harmlessly, while another cgroup uses it
	}
}
