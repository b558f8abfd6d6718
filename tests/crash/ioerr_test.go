package crash_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/kvtest"
	"golang.org/x/sys/unix"
)

// failTimeout bounds the wait for an injected I/O error to fail the log.
const failTimeout = 10 * time.Second

// TestFsyncEIO makes fdatasync (and sometimes fsync) fail with EIO in a kvd
// under load, by attaching strace to it at a random moment. The log must
// fail for good: the writes waiting on the failed fsync get an error that
// says their outcome is unknown, every later one an error that says it was
// not executed, reads keep working, status and logs say why. After a
// restart on a healthy disk every acknowledged write is there, and no
// write answered not executed.
func TestFsyncEIO(t *testing.T) {
	requireRoot(t)
	strace := kvtest.NeedTool(t, "strace", "apt-get install strace")
	for _, mode := range []string{"sync", "async"} {
		t.Run(mode, func(t *testing.T) {
			rng := seeded(t)
			row := results.row("fsync EIO", mode)
			dir := t.TempDir()
			st := newStore()
			// Every file's syncs, or only the state file's (a failed
			// checkpoint), or only the log's current segment.
			targetOf := func(cycle int) string {
				return [...]string{"every file", "state file", "log tail"}[cycle%3]
			}
			next := targetOf(0)
			// Checkpoints often, so that a failing state file shows soon;
			// for the log tail, no segment rolls past the file strace
			// watches.
			config := func(rng *rand.Rand, dir string) kvdConfig {
				c := randomConfig(rng, dir, mode)
				c.checkpointInterval = [...]time.Duration{20 * time.Millisecond, 100 * time.Millisecond}[rng.IntN(2)]
				if next == "log tail" {
					c.segmentSize = 0
				}
				return c
			}
			k := startKVD(t, config(rng, dir))
			st.lastRev = hasLastRev(k)
			targets := map[string]int{}
			var counts replyCounts
			for cycle := range pick(4, 12) {
				target := targetOf(cycle)
				next = targetOf(cycle + 1)
				calls := [...]string{"fdatasync", "fdatasync,fsync"}[rng.IntN(2)]
				if target != "every file" {
					calls = "fdatasync,fsync"
				}
				// Failures from the first or a later call on, or of one
				// call only: the log tail always gets a single failure, so
				// that a log that retried the fsync would acknowledge again.
				var when string
				switch target {
				case "every file":
					when = [...]string{"1", "2", "1+", "3+"}[rng.IntN(4)]
				case "state file":
					when = [...]string{"1", "1+"}[rng.IntN(2)] // checkpoints are few
				case "log tail":
					when = [...]string{"1", "2"}[rng.IntN(2)]
				}
				targets[target]++
				k = ioFaultCycle(t, k, st, rng, row, ioFault{
					mode:   mode,
					reason: "input/output error",
					config: config,
					inject: func(k *kvd) func() {
						var paths []string
						switch target {
						case "state file":
							paths = []string{filepath.Join(k.cfg.dataDir, "state.db")}
						case "log tail":
							segs := segments(t, k.cfg.dataDir)
							paths = []string{filepath.Join(k.cfg.dataDir, "wal", segs[len(segs)-1])}
						}
						return attachStrace(t, strace, k.Pid(), calls, when, paths...)
					},
					heal: func() {},
				}, &counts)
				if t.Failed() {
					t.Logf("EIO injected into %s of %s from call %s on", calls, target, when)
					return
				}
			}
			row.setNote("fsyncs failed of: every file %d, state file %d, log tail %d; answered not executed %d, outcome unknown %d",
				targets["every file"], targets["state file"], targets["log tail"], counts.notExecuted, counts.unknown)
			if err := k.stop(); err != nil {
				t.Errorf("kvd stop: %v", err)
			}
		})
	}
}

// TestDiskFull runs kvd on a tmpfs that a filler file leaves almost full,
// under load. Writes the log cannot write are refused (not executed: they
// must never come back), the log does not fail, reads keep working, the
// async writes acknowledged before are made durable, and the server says
// why. Then the test deletes the filler, with kvd still running: writes
// must resume by themselves. Finally kvd is killed and restarted: every
// acknowledged write is there, and no refused one.
func TestDiskFull(t *testing.T) {
	requireRoot(t)
	mount := kvtest.NeedTool(t, "mount", "apt-get install mount")
	for _, mode := range []string{"sync", "async"} {
		t.Run(mode, func(t *testing.T) {
			rng := seeded(t)
			row := results.row("disk full", mode)
			mnt := t.TempDir()
			if out, err := exec.Command(mount, "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt).CombinedOutput(); err != nil {
				t.Fatalf("mount tmpfs: %v: %s", err, out)
			}
			t.Cleanup(func() {
				if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
					t.Errorf("unmount tmpfs: %v", err)
				}
			})
			dir := filepath.Join(mnt, "data")
			st := newStore()
			k := startKVD(t, randomConfig(rng, dir, mode))
			st.lastRev = hasLastRev(k)
			var sum diskFullSum
			for range pick(2, 5) {
				k = diskFullCycle(t, k, st, rng, row, mnt, mode, &sum)
				if t.Failed() {
					return
				}
			}
			row.setNote("answered refused (not executed) %d, outcome unknown %d; log write failures %d, checkpoint failures %d; writes resumed %v at most after space was freed",
				sum.refused, sum.unknown, sum.writeFailures, sum.checkpointFailures, sum.maxResume.Round(time.Millisecond))
			if err := k.stop(); err != nil {
				t.Errorf("kvd stop: %v", err)
			}
		})
	}
}

// diskFullSum adds up what the cycles of a disk-full row saw.
type diskFullSum struct {
	refused, unknown                  int
	writeFailures, checkpointFailures uint64
	maxResume                         time.Duration
}

// diskStatus is the part of GET /v1/status about failed writes.
type diskStatus struct {
	Revisions struct {
		Written uint64 `json:"written"`
		Durable uint64 `json:"durable"`
	} `json:"revisions"`
	LogError           string `json:"log_error"`
	LogWriteFailures   uint64 `json:"log_write_failures"`
	LogLastWriteError  string `json:"log_last_write_error"`
	CheckpointFailures uint64 `json:"checkpoint_failures"`
}

func getDiskStatus(t testing.TB, k *kvd) diskStatus {
	t.Helper()
	var st diskStatus
	if err := kvtest.GetJSON(context.Background(), k.hc, k.url("/v1/status"), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// fillDisk writes a file at path that leaves about room bytes free on its
// file system. kvd may write meanwhile (a checkpoint, the log's zero fill):
// if the file system fills before the file is written, the file is cut
// back by room instead.
func fillDisk(t testing.TB, path string, room int64) {
	t.Helper()
	var fs unix.Statfs_t
	if err := unix.Statfs(filepath.Dir(path), &fs); err != nil {
		t.Fatal(err)
	}
	size := int64(fs.Bavail)*fs.Bsize - room
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for size > 0 {
		n, err := f.Write(buf[:min(int64(len(buf)), size)])
		if errors.Is(err, unix.ENOSPC) {
			fi, serr := f.Stat()
			if serr != nil {
				t.Fatal(serr)
			}
			if err := f.Truncate(max(fi.Size()-room, 0)); err != nil {
				t.Fatalf("fill the disk: cut the filler back: %v", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("fill the disk: %v", err)
		}
		size -= int64(n)
	}
}

// replyCounts counts the writes answered with an error, by what the error
// says of them.
type replyCounts struct {
	notExecuted, unknown int
}

// What an error reply says of a write.
const (
	replyRefused = "refused" // not executed: the log could not write it
	replyFailed  = "failed"  // not executed: the log had failed
	replyUnknown = "unknown" // perhaps executed
	replyOther   = "other"
)

// replyKind classifies the error of a write answered with an error.
func replyKind(err string) string {
	switch {
	case strings.Contains(err, "UNKNOWN outcome unknown") || strings.Contains(err, "outcome_unknown"):
		return replyUnknown
	case strings.Contains(err, "MISCONF write refused") || strings.Contains(err, "log_write_failed"):
		return replyRefused
	case strings.Contains(err, "MISCONF write-ahead log failed") || strings.Contains(err, "log_failed"):
		return replyFailed
	}
	return replyOther
}

// notExecutedBack returns, for the creates answered "not executed", the
// keys the state got holds: each is a write that came back.
func notExecutedBack(ops []*op, got map[string]string) []string {
	var bad []string
	for _, o := range ops {
		if o.out != outFailed || (o.kind != opSet && o.kind != opMSet) {
			continue
		}
		if k := replyKind(o.err); k != replyRefused && k != replyFailed {
			continue
		}
		for _, key := range o.keys {
			if _, ok := got[key]; ok {
				bad = append(bad, fmt.Sprintf("%v was answered not executed, but its key %s is there", o, key))
				break
			}
		}
	}
	return bad
}

// probeWrite sets a fresh key over RESP, for the checker like any write of
// the load.
func probeWrite(k *kvd, st *store) *op {
	o := &op{id: int(st.nextID.Add(1)), client: -1, kind: opSet, via: "resp", delCount: -1}
	o.keys = []string{fmt.Sprintf("probe/%d", o.id)}
	o.vals = []string{fmt.Sprintf("%d.0.probe", o.id)}
	rdb := k.redis()
	defer rdb.Close()
	o.call = time.Now()
	o.out, o.err = classify(rdb.Set(context.Background(), o.keys[0], o.vals[0], 0).Err())
	o.ret = time.Now()
	return o
}

// diskFullCycle fills the disk under load, checks how kvd refuses writes,
// frees the space with kvd running, checks that writes resume, kills and
// restarts kvd and checks what it recovered. It returns the restarted kvd.
func diskFullCycle(t *testing.T, k *kvd, st *store, rng *rand.Rand, row *resultRow, mnt, mode string, sum *diskFullSum) *kvd {
	t.Helper()
	filler := filepath.Join(mnt, "filler")
	fillDisk(t, filler, 128<<10+rng.Int64N(1<<20))
	opts := randomLoad(rng, mode)
	opts.valueMin, opts.valueMax = 512, 16<<10
	base, baseRev := st.base, st.baseRev
	before := getDiskStatus(t, k)
	l := startLoad(t, k, st, rng, opts)

	// The disk fills; writes are refused, again and again.
	kvtest.WaitFor(failTimeout, 2*time.Millisecond, func() bool { return l.failed.Load() >= 4*clients || k.Exited() })
	if k.Exited() {
		l.stop()
		row.fail("kvd exited on a full disk")
		t.Fatalf("kvd exited on a full disk (%v):\n%s", k.Err(), excerpt(k.Log(), 4000))
	}
	if l.failed.Load() == 0 {
		stacks := goroutineDump(k)
		l.stop()
		row.fail("no write was refused on a full disk")
		t.Fatalf("no write got an error within %v of filling the disk; kvd's goroutines in kvd code:\n%s", failTimeout, stacks)
	}
	var bad []string
	full := getDiskStatus(t, k)
	if full.LogError != "" {
		bad = append(bad, fmt.Sprintf("the log failed on a full disk: %s", full.LogError))
	}
	if full.LogWriteFailures == before.LogWriteFailures || !strings.Contains(full.LogLastWriteError, "no space left on device") {
		bad = append(bad, fmt.Sprintf("status: %d log write failures (%d before), last %q; want more, for want of space",
			full.LogWriteFailures, before.LogWriteFailures, full.LogLastWriteError))
	}
	if info := k.info("persistence"); info["log_status"] != "ok" || !strings.Contains(info["log_last_write_error"], "no space left on device") {
		bad = append(bad, fmt.Sprintf("INFO persistence: log_status %q, log_last_write_error %q; want ok and why writes fail",
			info["log_status"], info["log_last_write_error"]))
	}
	// What was acknowledged becomes durable while the disk stays full.
	var durable diskStatus
	kvtest.WaitFor(2*time.Second, 2*time.Millisecond, func() bool {
		durable = getDiskStatus(t, k)
		return durable.Revisions.Durable >= full.Revisions.Written
	})
	if durable.Revisions.Durable < full.Revisions.Written {
		bad = append(bad, fmt.Sprintf("revision %d was acknowledged on the full disk and is still not durable 2s later (durable %d)",
			full.Revisions.Written, durable.Revisions.Durable))
	}

	// Free the space, kvd still running: writes resume by themselves.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	var probes []*op
	ok := kvtest.WaitFor(failTimeout, 5*time.Millisecond, func() bool {
		o := probeWrite(k, st)
		probes = append(probes, o)
		return o.out == outOK
	})
	if !ok {
		l.stop()
		row.fail("writes did not resume once space was freed")
		t.Fatalf("no write succeeded within %v of freeing the disk; the last: %v", failTimeout, probes[len(probes)-1])
	}
	resumed := probes[len(probes)-1].ret.Sub(freed)
	// Writes go on succeeding, the load's among them.
	for range 10 {
		o := probeWrite(k, st)
		probes = append(probes, o)
		if o.out != outOK {
			bad = append(bad, fmt.Sprintf("%v failed after the disk was freed and a write had succeeded", o))
		}
	}
	ops := append(l.stop(), probes...)
	bad = append(bad, l.readViolations()...)

	var refused, unknown int
	for _, o := range ops {
		if o.out != outFailed {
			continue
		}
		switch replyKind(o.err) {
		case replyRefused:
			refused++
		case replyUnknown:
			unknown++
		default:
			bad = append(bad, fmt.Sprintf("%v failed with an error that is neither a refusal nor an unknown outcome", o))
		}
	}
	if refused == 0 {
		bad = append(bad, "no write was answered refused (not executed) on the full disk")
	}

	// Reads see every acknowledged write, and no refused one.
	live := k.scanAll()
	lv := check(base, baseRev, ops, live, k.status().Revisions.Written, checkSpec{mode: mode, required: all})
	for _, v := range lv.violations {
		bad = append(bad, "served after the disk was freed: "+v)
	}
	bad = append(bad, notExecutedBack(ops, live)...)
	bad = append(bad, respReads(k, live)...)
	after := getDiskStatus(t, k)

	// Kill and restart: nothing acknowledged is lost, nothing refused is
	// back.
	k.kill()
	k = restart(t, row, randomConfig(rng, k.cfg.dataDir, mode))
	bad = append(bad, notExecutedBack(ops, k.scanAll())...)
	v := recoverAndCheck(t, k, st, ops, bad, checkSpec{mode: mode, required: all})
	row.add(v, 0)
	sum.refused += refused
	sum.unknown += unknown
	sum.writeFailures += after.LogWriteFailures - before.LogWriteFailures
	sum.checkpointFailures += after.CheckpointFailures - before.CheckpointFailures
	sum.maxResume = max(sum.maxResume, resumed)
	return k
}

// ioFault is an I/O error to inject into a running kvd.
type ioFault struct {
	mode   string
	reason string // the error text status and logs must show
	// config returns the command line of the restarted kvd.
	config func(rng *rand.Rand, dir string) kvdConfig
	// inject starts the fault in k and returns how to end it once k is
	// stopped.
	inject func(k *kvd) (cleanup func())
	// heal makes the disk healthy again before the restart.
	heal func()
}

// ioFaultCycle runs load on k, injects the fault, checks how kvd fails and
// what it serves, stops it, heals the disk and checks what a restart
// recovers: every acknowledged write, and no write answered "not
// executed" (a write answered "outcome unknown" may be there or not). It
// adds the writes answered either way to counts, and returns the restarted
// kvd.
func ioFaultCycle(t *testing.T, k *kvd, st *store, rng *rand.Rand, row *resultRow, f ioFault, counts *replyCounts) *kvd {
	t.Helper()
	opts := randomLoad(rng, f.mode)
	base, baseRev := st.base, st.baseRev
	l := startLoad(t, k, st, rng, opts)
	time.Sleep(time.Duration(rng.Int64N(int64(150 * time.Millisecond))))
	undo := f.inject(k)

	// Wait for the log to fail, then for the load to run into it.
	kvtest.WaitFor(failTimeout, 2*time.Millisecond, func() bool {
		if l.failed.Load() >= 2*clients || k.Exited() {
			return true
		}
		// Or the status has said for 200ms that writes are refused:
		// enough load ran since.
		at := l.logFailedAt()
		return !at.IsZero() && time.Since(at) > 200*time.Millisecond
	})
	if k.Exited() {
		l.stop()
		row.fail("kvd exited on the I/O error")
		t.Fatalf("kvd exited on the I/O error (%v); it must keep serving reads:\n%s", k.Err(), excerpt(k.Log(), 4000))
	}
	if l.failed.Load() == 0 && l.logFailedAt().IsZero() {
		// Say whether kvd noticed, and where it is stuck.
		logged := strings.Contains(k.Log(), f.reason)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, statusErr := getStatus(ctx, k.hc, "http://"+k.HTTPAddr)
		cancel()
		stacks := goroutineDump(k)
		l.stop()
		undo()
		if logged || statusErr != nil {
			row.fail("kvd hung after the I/O error: no write answered")
		} else {
			row.fail("no write failed and kvd reported nothing: the I/O error was swallowed or never struck")
		}
		t.Fatalf("no write got an error within %v of injecting %q (kvd logged it: %v; GET /v1/status: %v); kvd's goroutines in kvd code:\n%s",
			failTimeout, f.reason, logged, statusErr, stacks)
	}
	ops := l.stop()
	_, _, seenErr := l.snapshot()
	var bad []string
	bad = append(bad, l.readViolations()...)

	// The server says why: status, INFO, the health check and its log.
	s := k.status()
	if !strings.Contains(s.LogError, f.reason) {
		bad = append(bad, fmt.Sprintf("status log_error is %q, want the reason %q", s.LogError, f.reason))
	}
	if seenErr == "" {
		seenErr = s.LogError
	}
	info := k.info("persistence")
	if info["log_status"] != "failed" {
		bad = append(bad, fmt.Sprintf("INFO persistence log_status is %q, want failed", info["log_status"]))
	}
	if e := info["log_error"]; !strings.Contains(e, f.reason) {
		bad = append(bad, fmt.Sprintf("INFO persistence log_error is %q, want the reason %q", e, f.reason))
	}
	if resp, err := k.hc.Get(k.url("/healthz")); err != nil {
		bad = append(bad, fmt.Sprintf("GET /healthz: %v", err))
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			bad = append(bad, fmt.Sprintf("GET /healthz answered %s after the log failed, want 503", resp.Status))
		}
	}
	if !strings.Contains(k.Log(), f.reason) {
		bad = append(bad, fmt.Sprintf("kvd logged nothing with %q", f.reason))
	}

	// Nothing is acknowledged once a write failed or the status said
	// writes are refused; the failures are the log's.
	failedAt, why := l.logFailedAt(), "the status reported the failure"
	for _, o := range ops {
		if o.out == outFailed && (failedAt.IsZero() || o.ret.Before(failedAt)) {
			failedAt, why = o.ret, fmt.Sprintf("%v failed", o)
		}
		if o.out != outFailed {
			continue
		}
		switch replyKind(o.err) {
		case replyFailed:
			counts.notExecuted++
		case replyUnknown:
			counts.unknown++
		default:
			bad = append(bad, fmt.Sprintf("%v failed with an error that does not say the log failed", o))
		}
	}
	late := 0
	for _, o := range ops {
		if o.isWrite() && o.out == outOK && o.call.After(failedAt) {
			if late++; late <= 5 {
				bad = append(bad, fmt.Sprintf("%v was acknowledged, though called %v after %s",
					o, o.call.Sub(failedAt).Round(time.Microsecond), why))
			}
		}
	}
	if late > 5 {
		bad = append(bad, fmt.Sprintf("… %d writes in all were acknowledged after %s", late, why))
	}
	more, refusals := refusedWrites(k, st)
	ops = append(ops, more...)
	bad = append(bad, refusals...)

	// Reads keep working and see every acknowledged write: what the server
	// serves now is itself a checked prefix.
	live := k.scanAll()
	lv := check(base, baseRev, ops, live, k.status().Revisions.Written, checkSpec{mode: f.mode, required: all})
	for _, v := range lv.violations {
		bad = append(bad, "served after the failure: "+v)
	}
	bad = append(bad, respReads(k, live)...)

	// Restart on a healthy disk.
	if err := k.stop(); errors.Is(err, kvtest.ErrNotStopped) {
		bad = append(bad, err.Error())
	}
	undo()
	f.heal()
	k = restart(t, row, f.config(rng, k.cfg.dataDir))
	// A write answered "not executed" never reached the log.
	bad = append(bad, notExecutedBack(ops, k.scanAll())...)
	v := recoverAndCheck(t, k, st, ops, bad, checkSpec{mode: f.mode, required: all})
	row.add(v, 0)
	if t.Failed() {
		t.Logf("the log failed with: %s", seenErr)
	}
	return k
}

// goroutineDump makes kvd dump its goroutines (SIGQUIT, which also ends
// it) and returns the stacks that run kvd code, without duplicates.
func goroutineDump(k *kvd) string {
	k.Signal(syscall.SIGQUIT)
	select {
	case <-k.Done():
	case <-time.After(stopTimeout):
		k.kill()
	}
	seen := map[string]int{}
	var order []string
	for block := range strings.SplitSeq(k.Log(), "\n\n") {
		lines := strings.Split(block, "\n")
		state, _, _ := strings.Cut(lines[0], "]")
		if !strings.HasPrefix(state, "goroutine ") || strings.Contains(state, "[IO wait") || strings.Contains(state, "[select") {
			continue
		}
		state = state[strings.Index(state, "[")+1:]
		var frames []string
		for i, line := range lines[1:] {
			if !strings.HasPrefix(line, "github.com/kvdstore/kvd/") || i+2 >= len(lines) {
				continue
			}
			fn := line
			if j := strings.LastIndex(fn, "("); j > 0 {
				fn = fn[:j]
			}
			file, _, _ := strings.Cut(strings.TrimSpace(lines[i+2]), " ")
			if j := strings.Index(file, "/kvd/"); j >= 0 {
				file = file[j+len("/kvd/"):]
			} else if j := strings.LastIndex(file, "/main/"); j >= 0 {
				file = file[j+len("/main/"):]
			}
			frames = append(frames, "  "+fn+" "+file)
		}
		if len(frames) == 0 {
			continue
		}
		key := "[" + state + "]\n" + strings.Join(frames, "\n")
		if seen[key] == 0 {
			order = append(order, key)
		}
		seen[key]++
	}
	var b strings.Builder
	for _, key := range order {
		fmt.Fprintf(&b, "%d goroutine(s) %s\n", seen[key], key)
	}
	return b.String()
}

// refusedWrites checks that new writes are refused over both protocols. It
// returns the writes, for the checker, and what went wrong.
func refusedWrites(k *kvd, st *store) ([]*op, []string) {
	var ops []*op
	var bad []string
	for _, via := range []string{"resp", "http"} {
		o := &op{id: int(st.nextID.Add(1)), client: -1, kind: opSet, via: via, delCount: -1}
		o.keys = []string{fmt.Sprintf("after-failure/%d", o.id)}
		o.vals = []string{fmt.Sprintf("%d.0.after", o.id)}
		o.call = time.Now()
		if via == "resp" {
			rdb := k.redis()
			o.out, o.err = classify(rdb.Set(context.Background(), o.keys[0], o.vals[0], 0).Err())
			rdb.Close()
		} else {
			req, _ := http.NewRequest(http.MethodPut, k.url("/v1/kv/"+o.keys[0]), strings.NewReader(o.vals[0]))
			resp, err := k.hc.Do(req)
			switch {
			case err != nil:
				o.out, o.err = outUnknown, err.Error()
			case resp.StatusCode == http.StatusOK:
				o.out = outOK
			default:
				o.out, o.err = outFailed, resp.Status
			}
			if err == nil {
				resp.Body.Close()
			}
		}
		o.ret = time.Now()
		if o.out == outOK {
			bad = append(bad, fmt.Sprintf("%s after the log failed was acknowledged", map[string]string{"resp": "SET", "http": "PUT"}[via]))
		}
		ops = append(ops, o)
	}
	return ops, bad
}

// respReads reads up to 200 keys of want over RESP (MGET) and compares.
func respReads(k *kvd, want map[string]string) []string {
	rdb := k.redis()
	defer rdb.Close()
	var keys []string
	for key := range want {
		if len(keys) == 200 {
			break
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil
	}
	vals, err := rdb.MGet(context.Background(), keys...).Result()
	if err != nil {
		return []string{fmt.Sprintf("MGET after the log failed: %v", err)}
	}
	var bad []string
	for i, v := range vals {
		if s, ok := v.(string); !ok || s != want[keys[i]] {
			bad = append(bad, fmt.Sprintf("MGET after the log failed: key %s is %v, the list said %q", keys[i], v, tail(want[keys[i]], 40)))
		}
	}
	return bad
}

// attachStrace attaches strace to pid, making the given syscalls fail with
// EIO from invocation when on (strace counts per thread), on the given
// files only if paths are given. It returns a function that waits for
// strace to end after the traced process is gone.
func attachStrace(t testing.TB, strace string, pid int, calls, when string, paths ...string) func() {
	t.Helper()
	args := []string{"-f", "-qq", "-o", os.DevNull,
		"-e", "trace=" + calls,
		"-e", "inject=" + calls + ":error=EIO:when=" + when,
		"-p", fmt.Sprint(pid)}
	for _, p := range paths {
		args = append(args, "-P", p) // only the calls on these files
	}
	cmd := exec.Command(strace, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("strace: %v", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	stop := func() {
		select {
		case <-done:
			return
		case <-time.After(stopTimeout):
		}
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
		t.Errorf("strace did not exit after kvd did: %s", out.String())
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
	})
	return stop
}
