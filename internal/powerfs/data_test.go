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

// TestTornWrites checks torn mode on files that grew, files overwritten
// in place and files both overwritten and grown: each keeps its synced
// content, then its unsynced changes in file order up to a 512-byte
// sector boundary (or all of them), and after that only what was durable
// there, or zeros where the file grew: never a byte that was not written
// there. The stats agree with the files; a seed reproduces the result and
// the seeds between them cut at every kind of place.
func TestTornWrites(t *testing.T) {
	const sector = 512
	// Each file is durable content, then one unsynced write at an offset.
	type file struct {
		name    string
		durable string
		off     int
		write   string
	}
	var files []file
	for i := range 4 {
		files = append(files,
			file{fmt.Sprintf("append%d", i), pattern(3000, 1), 3000, pattern(5000, 2)},
			file{fmt.Sprintf("over%d", i), pattern(3*4096, 1), 1000, pattern(8000, 3)},
			file{fmt.Sprintf("mixed%d", i), pattern(3000, 1), 1000, pattern(7000, 4)})
	}
	type outcome struct {
		cut, zeros int
	}
	run := func(seed uint64) ([]string, []outcome) {
		t.Helper()
		r := newRig(t, nil)
		for _, f := range files {
			writeFile(t, r.path(f.name), f.durable, true)
		}
		syncDir(t, r.mnt)
		var pending int64
		for _, f := range files {
			h, err := os.OpenFile(r.path(f.name), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := h.WriteAt([]byte(f.write), int64(f.off)); err != nil {
				t.Fatal(err)
			}
			h.Close()
			pending += int64(len(f.write)) // every written byte differs from what was there
		}
		st := r.crash(powerfs.CrashOptions{Torn: rand.New(rand.NewPCG(seed, 0))})
		var got []string
		var outs []outcome
		var kept, written int64
		for _, f := range files {
			b, err := os.ReadFile(r.path(f.name))
			if err != nil {
				t.Fatal(err)
			}
			cur := []byte(f.durable)
			if end := f.off + len(f.write); end > len(cur) {
				cur = append(cur, make([]byte, end-len(cur))...)
			}
			copy(cur[f.off:], f.write)
			hi := f.off + len(f.write) // the end of the changes
			old := func(i int) byte {
				if i < len(f.durable) {
					return f.durable[i]
				}
				return 0
			}
			if len(b) < len(f.durable) || len(b) > len(cur) {
				t.Fatalf("seed %d: %s has %d bytes, want %d to %d", seed, f.name, len(b), len(f.durable), len(cur))
			}
			if string(b[:f.off]) != f.durable[:f.off] {
				t.Fatalf("seed %d: %s lost synced bytes", seed, f.name)
			}
			cut := f.off
			for cut < min(len(b), hi) && b[cut] == cur[cut] {
				cut++
			}
			for i := cut; i < len(b); i++ {
				if b[i] != old(i) {
					t.Fatalf("seed %d: %s: after the kept changes (to offset %d), byte %d is %q: neither written there nor durable",
						seed, f.name, cut, i, b[i])
				}
			}
			if cut > f.off && cut%sector != 0 && cut != hi {
				t.Fatalf("seed %d: %s kept its changes up to offset %d: not a sector boundary, nor their end %d", seed, f.name, cut, hi)
			}
			end := max(cut, len(f.durable))
			zeros := len(b) - end
			if zeros > 0 && (cut < len(f.durable) || len(b)%sector != 0 && len(b) != len(cur)) {
				t.Fatalf("seed %d: %s: kept changes to offset %d and then %d zeros to %d: zeros only follow a cut past the durable size (%d), up to a sector boundary or the size (%d)",
					seed, f.name, cut, zeros, len(b), len(f.durable), len(cur))
			}
			if cut < len(f.durable) && len(b) != len(f.durable) {
				t.Fatalf("seed %d: %s: cut at %d, below its durable size %d, yet it has %d bytes", seed, f.name, cut, len(f.durable), len(b))
			}
			kept += int64(cut - f.off)
			if from := f.off / sector * sector; cut > f.off {
				written += int64(cut - from)
			}
			written += int64(zeros)
			got = append(got, string(b))
			outs = append(outs, outcome{cut, zeros})
		}
		if st.TornBytes != written {
			t.Fatalf("seed %d: stats count %d torn bytes, the files show %d written", seed, st.TornBytes, written)
		}
		if st.DroppedBytes != pending-kept {
			t.Fatalf("seed %d: stats count %d bytes dropped, want %d unsynced less %d kept", seed, st.DroppedBytes, pending, kept)
		}
		return got, outs
	}

	first, _ := run(1)
	if again, _ := run(1); !slices.Equal(first, again) {
		t.Fatal("seed 1 gave different files on a second run")
	}
	// Over a few seeds, every kind of cut happens to every kind of file.
	seen := map[string]bool{}
	for seed := range uint64(6) {
		got, outs := run(seed + 2)
		if seed == 0 && slices.Equal(first, got) {
			t.Fatal("seeds 1 and 2 gave the same files")
		}
		for i, o := range outs {
			f := files[i]
			kind := strings.TrimRight(f.name, "0123456789")
			hi := f.off + len(f.write)
			switch {
			case o.cut == f.off:
				seen[kind+": nothing kept"] = true
			case o.cut == hi:
				seen[kind+": all kept"] = true
			default:
				seen[kind+": cut inside"] = true
			}
			if o.zeros > 0 {
				seen[kind+": zeros after"] = true
			}
		}
	}
	for _, want := range []string{
		"append: nothing kept", "append: all kept", "append: cut inside", "append: zeros after",
		"over: nothing kept", "over: all kept", "over: cut inside",
		"mixed: nothing kept", "mixed: all kept", "mixed: cut inside", "mixed: zeros after",
	} {
		if !seen[want] {
			t.Errorf("no seed gave %q", want)
		}
	}
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
