package powerfs_test

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMmapReadersSeeWrites reads a file through a read-only shared mapping,
// as bbolt does, while another handle writes it with pwrite.
func TestMmapReadersSeeWrites(t *testing.T) {
	r := newRig(t, nil)
	const size = 3 * 4096
	want := []byte(pattern(size, 1))
	writeFile(t, r.path("db"), string(want), false)

	ro, err := os.Open(r.path("db"))
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	m, err := unix.Mmap(int(ro.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	check := func(step string) {
		t.Helper()
		// Fault the pages in with mlock(2), a system call: a page fault
		// outside one would block a thread the Go runtime counts as
		// running while this process serves the FUSE read.
		if err := unix.Mlock(m); err != nil {
			t.Fatalf("%s: mlock: %v", step, err)
		}
		for i := range want {
			if m[i] != want[i] {
				t.Fatalf("%s: mapping holds %q at %d, want %q", step, m[i], i, want[i])
			}
		}
	}
	check("before writing")

	w, err := os.OpenFile(r.path("db"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	pwrite := func(s string, off int) {
		t.Helper()
		if _, err := w.WriteAt([]byte(s), int64(off)); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], s)
	}
	pwrite("META", 0)
	pwrite("ACROSS-A-PAGE-BOUNDARY", 4096-10)
	pwrite("LAST", size-4)
	check("after pwrite")

	if err := unix.Fdatasync(int(w.Fd())); err != nil {
		t.Fatal(err)
	}
	pwrite("AFTER-SYNC", 8192)
	check("after fdatasync and another pwrite")

	// A new handle and mapping of the same file see the same content.
	ro2, err := os.Open(r.path("db"))
	if err != nil {
		t.Fatal(err)
	}
	defer ro2.Close()
	got := make([]byte, size)
	if _, err := ro2.ReadAt(got, 0); err != nil || string(got) != string(want) {
		t.Fatalf("read through a new handle: %q, %v", short(got), err)
	}
	check("after a new open")
}

func TestLocksBetweenOpens(t *testing.T) {
	r := newRig(t, nil)
	writeFile(t, r.path("LOCK"), "", false)
	open := func() *os.File {
		t.Helper()
		f, err := os.OpenFile(r.path("LOCK"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	a, b := open(), open()
	flock := func(f *os.File, how int) error {
		return unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
	}
	if err := flock(a, unix.LOCK_EX); err != nil {
		t.Fatalf("first exclusive lock: %v", err)
	}
	if err := flock(b, unix.LOCK_EX); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("second exclusive lock: %v, want EWOULDBLOCK", err)
	}
	if err := flock(b, unix.LOCK_SH); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("shared lock under an exclusive one: %v, want EWOULDBLOCK", err)
	}
	if err := flock(a, unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := flock(b, unix.LOCK_EX); err != nil {
		t.Fatalf("exclusive lock after unlock: %v", err)
	}
	// Closing the holder releases the lock.
	b.Close()
	if err := flock(a, unix.LOCK_SH); err != nil {
		t.Fatalf("shared lock after the holder closed: %v", err)
	}

	// Open file description locks (fcntl) conflict between two opens too.
	c, d := open(), open()
	lk := func(f *os.File, typ int16) error {
		l := unix.Flock_t{Type: typ, Whence: 0, Start: 0, Len: 10}
		return unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &l)
	}
	if err := lk(c, unix.F_WRLCK); err != nil {
		t.Fatalf("first write lock: %v", err)
	}
	if err := lk(d, unix.F_WRLCK); !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) {
		t.Fatalf("second write lock: %v, want EAGAIN", err)
	}
	if err := lk(c, unix.F_UNLCK); err != nil {
		t.Fatal(err)
	}
	if err := lk(d, unix.F_WRLCK); err != nil {
		t.Fatalf("write lock after unlock: %v", err)
	}
}
