package powerfs_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kvdstore/kvd/internal/powerfs"
)

// pattern returns n bytes that differ from those of another tag and from
// zeros, so that misplaced or lost bytes show.
func pattern(n int, tag byte) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte((i+int(tag))%26)
	}
	return string(b)
}

// durableFile returns a setup that puts a file with content in the
// backing directory, where it is durable from the start.
func durableFile(name, content string) func(string) {
	return func(backing string) {
		if err := os.WriteFile(filepath.Join(backing, name), []byte(content), 0o644); err != nil {
			panic(err)
		}
	}
}

func TestSyncedDataSurvivesCrash(t *testing.T) {
	r := newRig(t, nil)
	data := pattern(3*4096+17, 1)
	writeFile(t, r.path("f"), data, true)
	syncDir(t, r.mnt)
	st := r.crash(powerfs.CrashOptions{})
	wantContent(t, r.path("f"), data)
	wantContent(t, filepath.Join(r.backing, "f"), data)
	if st.FileSyncs != 1 || st.DirSyncs != 1 || st.DroppedBytes != 0 || st.DroppedEntries != 0 {
		t.Fatalf("stats %+v, want 1 file sync, 1 directory sync, nothing dropped", st)
	}
}

func TestUnsyncedDataDropped(t *testing.T) {
	durable := pattern(5000, 1)
	r := newRig(t, durableFile("f", durable))
	changed := pattern(9000, 2)
	writeFile(t, r.path("f"), changed, false)
	wantContent(t, r.path("f"), changed) // the current state has it
	st := r.crash(powerfs.CrashOptions{})
	wantContent(t, r.path("f"), durable)
	if st.DroppedBytes != int64(len(changed)) {
		t.Fatalf("dropped %d bytes, want %d", st.DroppedBytes, len(changed))
	}
}

func TestPartiallySyncedFileKeepsSyncedPrefix(t *testing.T) {
	r := newRig(t, nil)
	synced := pattern(6000, 1)
	writeFile(t, r.path("log"), synced, true)
	syncDir(t, r.mnt)
	appendFile(t, r.path("log"), pattern(7000, 2), false)

	// An unsynced overwrite inside the synced part is dropped too.
	f, err := os.OpenFile(r.path("log"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("OVERWRITE"), 4090); err != nil {
		t.Fatal(err)
	}
	f.Close()
	cur, err := os.ReadFile(r.path("log"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cur) != 13000 || string(cur[4090:4099]) != "OVERWRITE" {
		t.Fatalf("current state: %d bytes, %q at 4090; want 13000 bytes and the overwrite", len(cur), cur[4090:4099])
	}

	st := r.crash(powerfs.CrashOptions{})
	wantContent(t, r.path("log"), synced)
	if st.DroppedBytes != int64(7000+len("OVERWRITE")) {
		t.Fatalf("dropped %d bytes, want %d", st.DroppedBytes, 7000+len("OVERWRITE"))
	}

	// The next fsync persists everything written since.
	appendFile(t, r.path("log"), "tail", true)
	r.crash(powerfs.CrashOptions{})
	wantContent(t, r.path("log"), synced+"tail")
}

func TestTruncate(t *testing.T) {
	durable := pattern(10000, 1)
	tests := []struct {
		name   string
		change func(t *testing.T, f *os.File)
		sync   bool
		want   string // after the change, and after the crash if sync
	}{
		{"shrink", func(t *testing.T, f *os.File) { truncate(t, f, 100) }, false, durable[:100]},
		{"shrink synced", func(t *testing.T, f *os.File) { truncate(t, f, 100) }, true, durable[:100]},
		{"shrink then grow reads zeros", func(t *testing.T, f *os.File) {
			truncate(t, f, 100)
			truncate(t, f, 5000)
		}, true, durable[:100] + strings.Repeat("\x00", 4900)},
		{"shrink then write past the end leaves a hole", func(t *testing.T, f *os.File) {
			truncate(t, f, 4100)
			if _, err := f.WriteAt([]byte("xyz"), 9000); err != nil {
				t.Fatal(err)
			}
		}, true, durable[:4100] + strings.Repeat("\x00", 4900) + "xyz"},
		{"grow", func(t *testing.T, f *os.File) { truncate(t, f, 12345) }, false, durable + strings.Repeat("\x00", 2345)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, durableFile("f", durable))
			f, err := os.OpenFile(r.path("f"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			tt.change(t, f)
			if tt.sync {
				if err := f.Sync(); err != nil {
					t.Fatal(err)
				}
			}
			f.Close()
			wantContent(t, r.path("f"), tt.want)
			r.crash(powerfs.CrashOptions{})
			if tt.sync {
				wantContent(t, r.path("f"), tt.want)
			} else {
				wantContent(t, r.path("f"), durable)
			}
		})
	}
}

func truncate(t *testing.T, f *os.File, size int64) {
	t.Helper()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

func TestFallocate(t *testing.T) {
	durable := pattern(8192, 1)
	r := newRig(t, durableFile("f", durable))
	f, err := os.OpenFile(r.path("f"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	size := func() int64 {
		t.Helper()
		st, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		return st.Size()
	}
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, 20000); err != nil {
		t.Fatal(err)
	}
	if got := size(); got != 8192 {
		t.Fatalf("size after fallocate KEEP_SIZE: %d, want 8192", got)
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 4096, 12000); err != nil {
		t.Fatal(err)
	}
	if got := size(); got != 16096 {
		t.Fatalf("size after fallocate: %d, want 16096", got)
	}
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 100, 200); err != nil {
		t.Fatal(err)
	}
	want := durable[:100] + strings.Repeat("\x00", 200) + durable[300:] + strings.Repeat("\x00", 16096-8192)
	wantContent(t, r.path("f"), want)
	f.Close()

	r.crash(powerfs.CrashOptions{})
	wantContent(t, r.path("f"), durable)

	f, err = os.OpenFile(r.path("f"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, 10000); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r.crash(powerfs.CrashOptions{})
	wantContent(t, r.path("f"), durable+strings.Repeat("\x00", 10000-8192))
}

func TestHandlesShareStateAndAppend(t *testing.T) {
	r := newRig(t, nil)
	appender, err := os.OpenFile(r.path("f"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer appender.Close()
	rw, err := os.OpenFile(r.path("f"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()

	if _, err := appender.WriteString("first."); err != nil {
		t.Fatal(err)
	}
	if _, err := rw.WriteAt([]byte("second, through the other handle."), 6); err != nil {
		t.Fatal(err)
	}
	if _, err := appender.WriteString("third, appended."); err != nil {
		t.Fatal(err)
	}
	want := "first.second, through the other handle.third, appended."
	buf := make([]byte, 100)
	n, err := rw.ReadAt(buf, 0)
	if string(buf[:n]) != want {
		t.Fatalf("read %q (%v), want %q", buf[:n], err, want)
	}
	// fsync through one handle makes what both wrote durable.
	if err := appender.Sync(); err != nil {
		t.Fatal(err)
	}
	syncDir(t, r.mnt)
	appender.Close()
	rw.Close()
	r.crash(powerfs.CrashOptions{})
	wantContent(t, r.path("f"), want)
}

func TestODSyncWritesAreDurable(t *testing.T) {
	r := newRig(t, nil)
	writeFile(t, r.path("f"), "", true)
	syncDir(t, r.mnt)
	f, err := os.OpenFile(r.path("f"), os.O_WRONLY|unix.O_DSYNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("written with O_DSYNC"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r.crash(powerfs.CrashOptions{})
	wantContent(t, r.path("f"), "written with O_DSYNC")
}

// TestTornTail checks torn mode on several files: each keeps its synced
// content followed by a prefix of its unsynced tail and at most a few bytes
// of zeros or garbage, never more than it had; a seed reproduces the result
// and another seed gives another.
func TestTornTail(t *testing.T) {
	const files = 8
	synced := pattern(3000, 1)
	tail := pattern(5000, 2)

	run := func(seed uint64) ([]string, powerfs.Stats) {
		t.Helper()
		r := newRig(t, nil)
		for i := range files {
			name := r.path(string(rune('a' + i)))
			writeFile(t, name, synced, true)
			appendFile(t, name, tail, false)
		}
		syncDir(t, r.mnt)
		st := r.crash(powerfs.CrashOptions{Torn: rand.New(rand.NewPCG(seed, 0))})
		t.Logf("seed %d: %+v", seed, st)
		var got []string
		var kept int64
		for i := range files {
			b, err := os.ReadFile(r.path(string(rune('a' + i))))
			if err != nil {
				t.Fatal(err)
			}
			if len(b) < len(synced) || string(b[:len(synced)]) != synced {
				t.Fatalf("seed %d: file %d lost synced bytes: %q", seed, i, short(b))
			}
			rest := b[len(synced):]
			if len(rest) > len(tail) {
				t.Fatalf("seed %d: file %d has %d bytes after the synced part, more than the %d written", seed, i, len(rest), len(tail))
			}
			k := commonPrefix(rest, []byte(tail))
			if len(rest)-k > 16 {
				t.Fatalf("seed %d: file %d: after %d kept bytes come %d bytes that were never written there", seed, i, k, len(rest)-k)
			}
			kept += int64(len(rest))
			got = append(got, string(b))
		}
		if st.TornBytes != kept {
			t.Fatalf("seed %d: stats count %d torn bytes, the files hold %d", seed, st.TornBytes, kept)
		}
		return got, st
	}

	var garbage int64
	check := func(seed uint64) []string {
		t.Helper()
		got, st := run(seed)
		// DroppedBytes + kept prefixes == unsynced bytes; TornBytes == kept prefixes + garbage.
		g := st.TornBytes - (files*int64(len(tail)) - st.DroppedBytes)
		if g < 0 || g > files*16 {
			t.Fatalf("seed %d: stats %+v imply %d bytes of garbage", seed, st, g)
		}
		garbage += g
		return got
	}
	first := check(1)
	if again := check(1); !slices.Equal(first, again) {
		t.Fatal("seed 1 gave different files on a second run")
	}
	other := check(2)
	if slices.Equal(first, other) {
		t.Fatal("seeds 1 and 2 gave the same files")
	}
	if garbage == 0 {
		t.Fatal("no torn file got garbage or zeros after its kept prefix")
	}
	lengths := make(map[int]bool)
	for _, s := range append(first, other...) {
		lengths[len(s)] = true
	}
	if len(lengths) < 4 {
		t.Fatalf("only %d distinct file lengths over 16 torn files", len(lengths))
	}
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// TestConcurrentWritersAndSyncs runs writers, each appending to its own
// file and fsyncing every other record, beside a goroutine that lists and
// fsyncs the directory; after the crash every file holds exactly what was
// written up to its last fsync.
func TestConcurrentWritersAndSyncs(t *testing.T) {
	r := newRig(t, nil)
	const writers, rounds = 4, 50
	synced := make([]string, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			f, err := os.OpenFile(r.path(fmt.Sprintf("w%d", w)), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			var all strings.Builder
			for i := range rounds {
				rec := fmt.Sprintf("w%d-r%03d|", w, i)
				if _, err := f.WriteString(rec); err != nil {
					t.Error(err)
					return
				}
				all.WriteString(rec)
				if i%2 == 0 {
					if err := f.Sync(); err != nil {
						t.Error(err)
						return
					}
					synced[w] = all.String()
				}
			}
		})
	}
	stop := make(chan struct{})
	var lister sync.WaitGroup
	lister.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := os.ReadDir(r.mnt); err != nil {
				t.Error(err)
				return
			}
			d, err := os.Open(r.mnt)
			if err != nil {
				t.Error(err)
				return
			}
			if err := d.Sync(); err != nil {
				t.Error(err)
			}
			d.Close()
		}
	})
	wg.Wait()
	close(stop)
	lister.Wait()
	if t.Failed() {
		t.FailNow()
	}
	syncDir(t, r.mnt)
	r.crash(powerfs.CrashOptions{})
	for w := range writers {
		wantContent(t, r.path(fmt.Sprintf("w%d", w)), synced[w])
	}
}

// TestReorderedPages: reorder mode keeps each unsynced page whole or not at
// all, in place, and some seeds keep a later page without an earlier one.
func TestReorderedPages(t *testing.T) {
	const page = 4096
	durable := pattern(3*page, 1)  // pages 0-2, synced
	over := pattern(page, 2)       // unsynced overwrite of pages 0 and 2
	tail := pattern(3*page-100, 3) // unsynced append: pages 3-5, the last one short

	run := func(seed uint64) ([]byte, powerfs.Stats) {
		t.Helper()
		r := newRig(t, nil)
		name := r.path("f")
		writeFile(t, name, durable, true)
		syncDir(t, r.mnt)
		f, err := os.OpenFile(name, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, off := range []int64{0, 2 * page} {
			if _, err := f.WriteAt([]byte(over), off); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := f.WriteAt([]byte(tail), 3*page); err != nil {
			t.Fatal(err)
		}
		f.Close()
		st := r.crash(powerfs.CrashOptions{Reorder: rand.New(rand.NewPCG(seed, 0))})
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		return b, st
	}

	current := durable[:0] + over + durable[page:2*page] + over + tail
	outOfOrder := false
	for seed := range uint64(16) {
		b, st := run(seed)
		if len(b) < len(durable) || len(b) > len(current) {
			t.Fatalf("seed %d: %d bytes, want %d to %d", seed, len(b), len(durable), len(current))
		}
		var kept []bool
		written := int64(0)
		for start := 0; start < len(b); start += page {
			end := min(start+page, len(b))
			got := string(b[start:end])
			old := strings.Repeat("\x00", end-start)
			if start < len(durable) {
				old = durable[start:end]
			}
			switch {
			case got == current[start:end] && got != old:
				kept = append(kept, true)
				written += int64(end - start)
			case got == old:
				kept = append(kept, false)
			default:
				t.Fatalf("seed %d: page %d is neither its durable nor its current content: %q", seed, start/page, short([]byte(got)))
			}
		}
		if last := len(kept) - 1; len(b) > len(durable) && !kept[last] {
			t.Fatalf("seed %d: the file grew to %d bytes but its last page was not kept", seed, len(b))
		}
		if st.TornBytes != written {
			t.Fatalf("seed %d: stats count %d bytes kept, the file holds %d", seed, st.TornBytes, written)
		}
		// Every byte of the unsynced pages differs from what lies under it.
		if pending := int64(2*len(over) + len(tail)); st.DroppedBytes != pending-written {
			t.Fatalf("seed %d: stats count %d bytes dropped, want %d unsynced less %d kept", seed, st.DroppedBytes, pending, written)
		}
		keptPage := func(i int) bool { return i < len(kept) && kept[i] }
		dirty := []int{0, 2, 3, 4, 5}
		for i, a := range dirty {
			for _, b := range dirty[i+1:] {
				if keptPage(b) && !keptPage(a) {
					outOfOrder = true
				}
			}
		}
		if again, _ := run(seed); string(again) != string(b) {
			t.Fatalf("seed %d gave different files on a second run", seed)
		}
	}
	if !outOfOrder {
		t.Fatal("no seed kept a later unsynced page without an earlier one")
	}
}
