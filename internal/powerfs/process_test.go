package powerfs_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/kvdstore/kvd/internal/powerfs"
)

// Helper processes: the test binary runs itself with helperEnv naming a
// mode and helperDirEnv a directory on the mount. A process that stays up
// prints "ready" and then waits to be killed.
const (
	helperEnv    = "POWERFS_TEST_HELPER"
	helperDirEnv = "POWERFS_TEST_DIR"
)

// helperTimeout bounds how long a test waits for a helper to get ready or
// to finish; the helper is a race-enabled test binary.
const helperTimeout = 30 * time.Second

func runHelper(mode, dir string) error {
	switch mode {
	case "hold":
		return helperHold(dir)
	case "bbolt-write":
		return helperBboltWrite(dir)
	case "bbolt-read":
		return helperBboltRead(dir)
	}
	return fmt.Errorf("unknown mode %q", mode)
}

// ready reports readiness and waits until the process is killed.
func ready() error {
	fmt.Println("ready")
	_, err := io.Copy(io.Discard, os.Stdin)
	return err
}

// helperHold writes a synced file, an unsynced file and an unsynced tail,
// locks LOCK, and waits to be killed with all files open.
func helperHold(dir string) error {
	open := func(name string, flag int) (*os.File, error) {
		return os.OpenFile(filepath.Join(dir, name), flag, 0o644)
	}
	synced, err := open("synced", os.O_RDWR|os.O_CREATE|os.O_APPEND)
	if err != nil {
		return err
	}
	if _, err := synced.WriteString("synced data"); err != nil {
		return err
	}
	if err := synced.Sync(); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		return err
	}
	if _, err := synced.WriteString(", unsynced tail"); err != nil {
		return err
	}
	unsynced, err := open("unsynced", os.O_RDWR|os.O_CREATE)
	if err != nil {
		return err
	}
	if _, err := unsynced.WriteString("never synced"); err != nil {
		return err
	}
	lock, err := open("LOCK", os.O_RDWR|os.O_CREATE)
	if err != nil {
		return err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("flock: %w", err)
	}
	return ready()
}

// helperBboltWrite commits a key with fsync, then writes (without fsync)
// a transaction that bbolt considers committed, checks that it reads back
// through bbolt's mmap, and waits to be killed.
func helperBboltWrite(dir string) error {
	db, err := bolt.Open(filepath.Join(dir, "state.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return err
	}
	// bbolt does not fsync the directory after creating the file.
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("kv"))
		if err != nil {
			return err
		}
		return b.Put([]byte("committed"), []byte("synced"))
	})
	if err != nil {
		return err
	}

	db.NoSync = true
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("kv"))
		for i := range 500 {
			if err := b.Put(fmt.Appendf(nil, "unsynced-%03d", i), bytes.Repeat([]byte{'v'}, 100)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket([]byte("kv")).Get([]byte("unsynced-499")); v == nil {
			return errors.New("the unsynced transaction does not read back")
		}
		return nil
	})
	if err != nil {
		return err
	}
	return ready()
}

// helperBboltRead checks the database and prints its keys, one a line.
func helperBboltRead(dir string) error {
	db, err := bolt.Open(filepath.Join(dir, "state.db"), 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return fmt.Errorf("bbolt check: %w", err)
		}
		b := tx.Bucket([]byte("kv"))
		if b == nil {
			return errors.New("no bucket kv")
		}
		return b.ForEach(func(k, _ []byte) error {
			fmt.Printf("%s\n", k)
			return nil
		})
	})
}

// helper is a running helper process.
type helper struct {
	t      testing.TB
	cmd    *exec.Cmd
	lines  chan string
	stderr bytes.Buffer
	out    []string // lines read so far
	waited bool
}

func startHelper(t testing.TB, mode, dir string) *helper {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h := &helper{t: t, lines: make(chan string, 100)}
	h.cmd = exec.Command(exe)
	h.cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperDirEnv+"="+dir)
	h.cmd.Stderr = &h.stderr
	if _, err := h.cmd.StdinPipe(); err != nil { // never written: the helper waits on it
		t.Fatal(err)
	}
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(h.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		if !h.waited {
			h.cmd.Process.Kill()
			h.wait()
		}
	})
	return h
}

// waitReady waits for the helper to print "ready".
func (h *helper) waitReady() {
	h.t.Helper()
	timer := time.NewTimer(helperTimeout)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-h.lines:
			if !ok {
				err := h.wait()
				h.t.Fatalf("helper exited before getting ready: %v\n%s", err, h.stderr.String())
			}
			if line == "ready" {
				return
			}
			h.out = append(h.out, line)
		case <-timer.C:
			h.t.Fatalf("helper not ready after %v\n%s", helperTimeout, h.stderr.String())
		}
	}
}

// wait collects the remaining output and waits for the process to exit.
func (h *helper) wait() error {
	timer := time.NewTimer(helperTimeout)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-h.lines:
			if ok {
				h.out = append(h.out, line)
				continue
			}
			h.waited = true
			return h.cmd.Wait()
		case <-timer.C:
			h.cmd.Process.Kill()
		}
	}
}

// runHelperToEnd runs a helper that exits by itself and returns its output.
func runHelperToEnd(t testing.TB, mode, dir string) []string {
	t.Helper()
	h := startHelper(t, mode, dir)
	if err := h.wait(); err != nil {
		t.Fatalf("helper %s: %v\n%s", mode, err, h.stderr.String())
	}
	return h.out
}

// TestBboltCommittedSurvivesUnsyncedDoesNot is the end-to-end check: bbolt
// commits one transaction with fdatasync and writes a second one without,
// the process is killed, and after the power loss only the first is there
// and the database checks clean.
func TestBboltCommittedSurvivesUnsyncedDoesNot(t *testing.T) {
	r := newRig(t, nil)
	dir := r.path("data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	syncDir(t, r.mnt)

	h := startHelper(t, "bbolt-write", dir)
	h.waitReady()
	if err := h.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	st := r.crash(powerfs.CrashOptions{})
	h.wait()

	keys := runHelperToEnd(t, "bbolt-read", dir)
	if !slices.Equal(keys, []string{"committed"}) {
		t.Fatalf("after the crash the database holds %d keys %q, want only [committed]", len(keys), abbreviate(keys))
	}
	if st.DroppedBytes == 0 {
		t.Fatalf("the crash dropped nothing: %+v", st)
	}
}

func abbreviate(s []string) []string {
	if len(s) > 5 {
		return append(s[:5:5], "...")
	}
	return s
}

// TestKilledProcessHoldingFiles kills a process that holds files open (and
// a lock) on the mount and crashes at once, while the kernel may still be
// closing its files.
func TestKilledProcessHoldingFiles(t *testing.T) {
	r := newRig(t, nil)
	h := startHelper(t, "hold", r.mnt)
	h.waitReady()

	// The helper's flock is seen by this process.
	lock, err := os.OpenFile(r.path("LOCK"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("flock while the helper holds it: %v, want EWOULDBLOCK", err)
	}
	lock.Close()

	if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r.crash(powerfs.CrashOptions{})
	t.Logf("crash took %v", time.Since(start))
	if err := h.wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("helper exit: %v, want killed", err)
	}

	wantContent(t, r.path("synced"), "synced data")
	wantMissing(t, r.path("unsynced"))
	wantMissing(t, r.path("LOCK"))
}

// TestCrashAbortsOpenHandles crashes while this process still holds a file
// open: after Options.BusyTimeout the connection is aborted, the handle
// fails, and the mountpoint is usable again.
func TestCrashAbortsOpenHandles(t *testing.T) {
	r := newRig(t, durableFile("f", "durable"))
	if err := r.fs.Unmount(); err != nil {
		t.Fatal(err)
	}
	r.opts.BusyTimeout = 100 * time.Millisecond
	r.mount()

	f, err := os.OpenFile(r.path("f"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("CHANGED"), 0); err != nil {
		t.Fatal(err)
	}
	r.crash(powerfs.CrashOptions{})
	if _, err := f.WriteAt([]byte("late"), 0); err == nil {
		t.Fatal("a write through a handle of the crashed mount succeeded")
	}
	f.Close()
	wantContent(t, r.path("f"), "durable")
}
