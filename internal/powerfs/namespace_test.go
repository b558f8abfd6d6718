package powerfs_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kvdstore/kvd/internal/powerfs"
)

// durableTree returns a setup that creates, in the backing directory, the
// directories dirs and then the files (path to content).
func durableTree(dirs []string, files map[string]string) func(string) {
	return func(backing string) {
		for _, d := range dirs {
			if err := os.MkdirAll(filepath.Join(backing, d), 0o755); err != nil {
				panic(err)
			}
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(backing, name), []byte(content), 0o644); err != nil {
				panic(err)
			}
		}
	}
}

func TestNewFileNeedsDirSync(t *testing.T) {
	for _, dirSync := range []bool{false, true} {
		t.Run(map[bool]string{false: "no dir fsync", true: "dir fsync"}[dirSync], func(t *testing.T) {
			r := newRig(t, nil)
			writeFile(t, r.path("f"), "synced data", true)
			if names := list(t, r.mnt); !slices.Equal(names, []string{"f"}) {
				t.Fatalf("mount lists %q, want [f]", names)
			}
			if dirSync {
				syncDir(t, r.mnt)
			}
			if err := r.fs.Crash(powerfs.CrashOptions{}); err != nil {
				t.Fatal(err)
			}
			st := r.fs.Stats()
			backing := list(t, r.backing)
			r.mount()
			if dirSync {
				wantContent(t, r.path("f"), "synced data")
				return
			}
			wantMissing(t, r.path("f"))
			if len(backing) != 0 {
				t.Fatalf("backing directory holds %q after the crash, want nothing", backing)
			}
			if st.DroppedEntries != 1 {
				t.Fatalf("dropped %d entries, want 1", st.DroppedEntries)
			}
		})
	}
}

func TestDirSyncWithoutFileSyncKeepsEmptyFile(t *testing.T) {
	r := newRig(t, nil)
	writeFile(t, r.path("f"), "never synced", false)
	syncDir(t, r.mnt)
	r.crash(powerfs.CrashOptions{})
	wantContent(t, r.path("f"), "")
}

func TestUnlinkNeedsDirSync(t *testing.T) {
	r := newRig(t, durableFile("f", "durable"))
	if err := os.Remove(r.path("f")); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, r.path("f"))
	r.crash(powerfs.CrashOptions{})
	wantContent(t, r.path("f"), "durable")

	if err := os.Remove(r.path("f")); err != nil {
		t.Fatal(err)
	}
	syncDir(t, r.mnt)
	r.crash(powerfs.CrashOptions{})
	wantMissing(t, r.path("f"))
}

func TestUnlinkedOpenFileKeepsDurableContent(t *testing.T) {
	r := newRig(t, durableFile("f", "durable"))
	f, err := os.OpenFile(r.path("f"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Remove(r.path("f")); err != nil {
		t.Fatal(err)
	}
	// Writing and syncing through the open handle changes the durable
	// content the still durable name shows after the crash.
	if _, err := f.WriteAt([]byte("DUR"), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r.crash(powerfs.CrashOptions{})
	wantContent(t, r.path("f"), "DURable")
}

func TestRenameSameDir(t *testing.T) {
	for _, dirSync := range []bool{false, true} {
		t.Run(map[bool]string{false: "no dir fsync", true: "dir fsync"}[dirSync], func(t *testing.T) {
			r := newRig(t, durableFile("final", "old"))
			writeFile(t, r.path("tmp"), "new", true)
			if err := os.Rename(r.path("tmp"), r.path("final")); err != nil {
				t.Fatal(err)
			}
			wantContent(t, r.path("final"), "new")
			wantMissing(t, r.path("tmp"))
			if dirSync {
				syncDir(t, r.mnt)
			}
			r.crash(powerfs.CrashOptions{})
			wantMissing(t, r.path("tmp"))
			if dirSync {
				wantContent(t, r.path("final"), "new")
			} else {
				wantContent(t, r.path("final"), "old")
			}
		})
	}
}

// TestRenameAcrossDirs shows the per-directory model: each directory's
// entries become durable when it is fsynced, so a rename is durable once
// both directories are.
func TestRenameAcrossDirs(t *testing.T) {
	tests := []struct {
		name         string
		sync         []string
		wantA, wantB bool
	}{
		{"neither fsynced", nil, true, false},
		{"both fsynced", []string{"a", "b"}, false, true},
		{"only the target fsynced", []string{"b"}, true, true},
		{"only the source fsynced", []string{"a"}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, durableTree([]string{"a", "b"}, map[string]string{"a/x": "content"}))
			if err := os.Rename(r.path("a", "x"), r.path("b", "x")); err != nil {
				t.Fatal(err)
			}
			for _, d := range tt.sync {
				syncDir(t, r.path(d))
			}
			r.crash(powerfs.CrashOptions{})
			for _, c := range []struct {
				path string
				want bool
			}{{r.path("a", "x"), tt.wantA}, {r.path("b", "x"), tt.wantB}} {
				if c.want {
					wantContent(t, c.path, "content")
				} else {
					wantMissing(t, c.path)
				}
			}
			if tt.wantA && tt.wantB {
				// One file under two names: a hard link.
				a, b := stat(t, r.path("a", "x")), stat(t, r.path("b", "x"))
				if a.Ino != b.Ino || a.Nlink != 2 {
					t.Fatalf("a/x (ino %d, %d links) and b/x (ino %d) are not one file", a.Ino, a.Nlink, b.Ino)
				}
			}
		})
	}
}

func TestRenameDir(t *testing.T) {
	r := newRig(t, durableTree([]string{"d"}, map[string]string{"d/f": "in d"}))
	if err := os.Rename(r.path("d"), r.path("e")); err != nil {
		t.Fatal(err)
	}
	r.crash(powerfs.CrashOptions{})
	wantContent(t, r.path("d", "f"), "in d")
	wantMissing(t, r.path("e"))

	if err := os.Rename(r.path("d"), r.path("e")); err != nil {
		t.Fatal(err)
	}
	syncDir(t, r.mnt)
	r.crash(powerfs.CrashOptions{})
	wantContent(t, r.path("e", "f"), "in d")
	wantMissing(t, r.path("d"))
}

func TestMkdirNeedsParentSync(t *testing.T) {
	tests := []struct {
		name              string
		syncSub, syncRoot bool
		wantSub, wantFile bool
	}{
		{"nothing fsynced", false, false, false, false},
		{"only the new directory fsynced", true, false, false, false},
		{"only the parent fsynced", false, true, true, false},
		{"both fsynced", true, true, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, nil)
			if err := os.Mkdir(r.path("sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, r.path("sub", "f"), "data", true)
			if tt.syncSub {
				syncDir(t, r.path("sub"))
			}
			if tt.syncRoot {
				syncDir(t, r.mnt)
			}
			r.crash(powerfs.CrashOptions{})
			switch {
			case tt.wantFile:
				wantContent(t, r.path("sub", "f"), "data")
			case tt.wantSub:
				if names := list(t, r.path("sub")); len(names) != 0 {
					t.Fatalf("sub holds %q, want nothing", names)
				}
			default:
				wantMissing(t, r.path("sub"))
			}
		})
	}
}

func TestRmdirNeedsDirSync(t *testing.T) {
	r := newRig(t, durableTree([]string{"d"}, nil))
	if err := os.Remove(r.path("d")); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, r.path("d"))
	r.crash(powerfs.CrashOptions{})
	if st := stat(t, r.path("d")); st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		t.Fatalf("d came back with mode %#o, want a directory", st.Mode)
	}
}

func TestLinkAndSymlink(t *testing.T) {
	r := newRig(t, durableFile("f", "linked"))
	if err := os.Link(r.path("f"), r.path("g")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", r.path("s")); err != nil {
		t.Fatal(err)
	}
	if st := stat(t, r.path("f")); st.Nlink != 2 {
		t.Fatalf("f has %d links, want 2", st.Nlink)
	}
	syncDir(t, r.mnt)
	r.crash(powerfs.CrashOptions{})
	wantContent(t, r.path("g"), "linked")
	if f, g := stat(t, r.path("f")), stat(t, r.path("g")); f.Ino != g.Ino {
		t.Fatalf("f (ino %d) and g (ino %d) are not one file", f.Ino, g.Ino)
	}
	if target, err := os.Readlink(r.path("s")); err != nil || target != "f" {
		t.Fatalf("readlink s: %q, %v; want f", target, err)
	}
	wantContent(t, r.path("s"), "linked")
}

func TestStageNameReserved(t *testing.T) {
	r := newRig(t, nil)
	err := os.Mkdir(r.path(".powerfs-stage"), 0o755)
	if !errors.Is(err, syscall.EPERM) {
		t.Fatalf("mkdir .powerfs-stage: %v, want EPERM", err)
	}
	if names := list(t, r.mnt); len(names) != 0 {
		t.Fatalf("mount lists %q, want nothing", names)
	}
}

func list(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func stat(t testing.TB, path string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return &st
}

func TestRenameFlags(t *testing.T) {
	r := newRig(t, durableTree(nil, map[string]string{"a": "A", "b": "B"}))
	if err := unix.Renameat2(unix.AT_FDCWD, r.path("a"), unix.AT_FDCWD, r.path("b"), unix.RENAME_NOREPLACE); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("RENAME_NOREPLACE onto an existing name: %v, want EEXIST", err)
	}
	if err := unix.Renameat2(unix.AT_FDCWD, r.path("a"), unix.AT_FDCWD, r.path("b"), unix.RENAME_EXCHANGE); err != nil {
		t.Fatalf("RENAME_EXCHANGE: %v", err)
	}
	wantContent(t, r.path("a"), "B")
	wantContent(t, r.path("b"), "A")
	syncDir(t, r.mnt)
	r.crash(powerfs.CrashOptions{})
	wantContent(t, r.path("a"), "B")
	wantContent(t, r.path("b"), "A")
}
