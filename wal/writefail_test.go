package wal_test

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvdstore/kvd/wal"
)

// TestWriteErrorIsSticky makes write(2) fail in a child process (a file size
// limit turns the write that crosses it into EFBIG) and checks that the
// writer gets the error, that nothing later is written or acknowledged, and
// that the log does not hang. The limit first stops the zero fill ahead of
// the tail (Options.Preallocate), as a full disk would: the log must say so
// and go on appending, so the records before the limit are acknowledged.
func TestWriteErrorIsSticky(t *testing.T) {
	if os.Getenv("KVD_WAL_WRITEFAIL_DIR") != "" {
		writeFailChild(os.Getenv("KVD_WAL_WRITEFAIL_DIR"))
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestWriteErrorIsSticky$")
	cmd.Env = append(os.Environ(), "KVD_WAL_WRITEFAIL_DIR="+dir)
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("child hung after the write error:\n%s", out)
	}
	if err != nil || !strings.Contains(string(out), "child ok") {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "level=WARN msg=\"wal: cannot zero-fill the tail segment ahead of its records; appending\"") {
		t.Errorf("the failed zero fill was not logged as a warning:\n%s", out)
	}
	// Every acknowledged record is on disk after the failure.
	var acked uint64
	for _, line := range strings.Split(string(out), "\n") {
		fmt.Sscanf(line, "acked %d", &acked)
	}
	var n uint64
	l, err := wal.Open(dir, 1, wal.Options{}, func(rev uint64, p []byte) error { n = rev; return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if acked == 0 || n < acked {
		t.Fatalf("reopen found %d records, %d were acknowledged", n, acked)
	}
}

func writeFailChild(dir string) {
	fail := func(format string, args ...any) {
		fmt.Printf(format+"\n", args...)
		os.Exit(1)
	}
	logger := slog.New(slog.NewTextHandler(os.Stdout, nil))
	l, err := wal.Open(dir, 1, wal.Options{Preallocate: 1 << 20, Logger: logger}, nil)
	if err != nil {
		fail("open: %v", err)
	}
	signal.Ignore(syscall.SIGXFSZ)
	lim := syscall.Rlimit{Cur: 64 << 10, Max: 64 << 10}
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		fail("setrlimit: %v", err)
	}
	payload := make([]byte, 1000)
	var acked uint64
	for i := 0; ; i++ {
		if i > 1000 {
			fail("no write failed under a 64 KiB file size limit")
		}
		rev, err := l.Enqueue(payload, nil)
		if err != nil {
			fail("enqueue before any failure: %v", err)
		}
		if err = l.WaitDurable(rev); err != nil {
			if !errors.Is(err, wal.ErrFailed) || !errors.Is(err, syscall.EFBIG) {
				fail("write error %v: want ErrFailed wrapping EFBIG", err)
			}
			break
		}
		acked = rev
	}
	fmt.Printf("acked %d\n", acked)
	if _, err := l.Enqueue(payload, nil); !errors.Is(err, wal.ErrFailed) {
		fail("enqueue after the failure: %v", err)
	}
	if err := l.Sync(); !errors.Is(err, wal.ErrFailed) {
		fail("sync after the failure: %v", err)
	}
	if st := l.Stats(); st.Written != acked || st.Err == nil {
		fail("stats after the failure: %+v", st)
	}
	l.Close()
	fmt.Println("child ok")
	os.Exit(0)
}
