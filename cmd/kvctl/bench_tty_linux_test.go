package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kvdstore/kvd/server"
)

// openPTY returns the two ends of a new pseudo-terminal, or skips the test
// where there are none.
func openPTY(t *testing.T) (ptmx, pts *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	fd := int(ptmx.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlocking the pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("naming the pseudo-terminal: %v", err)
	}
	pts, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("opening /dev/pts/%d: %v", n, err)
	}
	t.Cleanup(func() { pts.Close() })
	return ptmx, pts
}

func TestIsTerminal(t *testing.T) {
	_, pts := openPTY(t)
	devNull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	regular, err := os.Create(t.TempDir() + "/out")
	if err != nil {
		t.Fatal(err)
	}
	defer regular.Close()
	for _, tc := range []struct {
		name string
		w    io.Writer
		want bool
	}{
		{"pseudo-terminal", pts, true},
		{"/dev/null", devNull, false},
		{"regular file", regular, false},
		{"buffer", &bytes.Buffer{}, false},
	} {
		if got := isTerminal(tc.w); got != tc.want {
			t.Errorf("isTerminal(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestBenchProgress runs bench with its standard error on a terminal: it
// shows a progress line, updated in place, and clears it at the end.
func TestBenchProgress(t *testing.T) {
	ptmx, pts := openPTY(t)
	addr := startKVD(t, server.Config{})
	seen := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(ptmx) // until the terminal is closed
		seen <- string(b)
	}()
	var out strings.Builder
	err := run(t.Context(), []string{"--addr", addr, "bench", "--duration", "1s", "--clients", "2",
		"--warmup", "300ms", "--durability", "sync"}, strings.NewReader(""), &out, pts)
	if err != nil {
		t.Fatal(err)
	}
	pts.Close()
	got := <-seen
	const clear = "\r\x1b[2K"
	lines := strings.Split(got, clear)
	line := regexp.MustCompile(`^sync: [0-9.]+m?s of 1s, [0-9,]+ requests, [0-9,]+/s, 0 errors$`)
	updates := 0
	for _, l := range lines {
		if line.MatchString(l) {
			updates++
		}
	}
	// About four a second, but a loaded machine may miss some ticks.
	if updates < 2 || updates > 5 {
		t.Errorf("%d progress updates of a 1s pass, want about 4: %q", updates, got)
	}
	if !strings.Contains(got, clear+"sync warm-up: ") {
		t.Errorf("no progress line for the warm-up: %q", got)
	}
	if !strings.HasSuffix(got, clear) {
		t.Errorf("progress line not cleared at the end: %q", got)
	}
	if strings.Contains(out.String(), "\r") || !strings.HasPrefix(out.String(), "kvctl bench: ") {
		t.Errorf("standard output %q", out.String())
	}
}
