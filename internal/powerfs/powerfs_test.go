package powerfs_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvdstore/kvd/internal/powerfs"
)

// TestMain also runs the helper processes of process_test.go: the test
// binary re-executes itself with helperEnv set.
func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		if err := runHelper(mode, os.Getenv(helperDirEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// requireFUSE skips the test unless it runs as root with /dev/fuse. With
// CI=true it fails instead, so that CI never passes by skipping.
func requireFUSE(t testing.TB) {
	t.Helper()
	var reason string
	if os.Geteuid() != 0 {
		reason = "mounting FUSE directly needs root"
	} else if _, err := os.Stat("/dev/fuse"); err != nil {
		reason = fmt.Sprintf("needs /dev/fuse: %v", err)
	}
	if reason == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("powerfs: %s (CI=true, so this fails instead of skipping)", reason)
	}
	t.Skipf("powerfs: %s", reason)
}

// rig is a mounted file system over a temporary backing directory.
type rig struct {
	t       testing.TB
	backing string
	mnt     string
	opts    powerfs.Options
	fs      *powerfs.FS
}

// newRig mounts a file system over an empty backing directory; setup, if
// not nil, fills the backing directory first. The mount is unmounted when
// the test ends.
func newRig(t testing.TB, setup func(backing string)) *rig {
	t.Helper()
	requireFUSE(t)
	r := &rig{
		t:       t,
		backing: t.TempDir(),
		mnt:     t.TempDir(),
		opts: powerfs.Options{
			Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		},
	}
	if setup != nil {
		setup(r.backing)
	}
	r.mount()
	// Registered after t.TempDir, so it runs before the directories are removed.
	t.Cleanup(func() {
		if err := r.fs.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return r
}

func (r *rig) mount() {
	r.t.Helper()
	f, err := powerfs.Mount(r.mnt, r.backing, r.opts)
	if err != nil {
		r.t.Fatalf("mount: %v", err)
	}
	r.fs = f
}

// crash crashes the file system, mounts the backing directory again and
// returns the stats of the crashed mount.
func (r *rig) crash(c powerfs.CrashOptions) powerfs.Stats {
	r.t.Helper()
	if err := r.fs.Crash(c); err != nil {
		r.t.Fatalf("crash: %v", err)
	}
	st := r.fs.Stats()
	r.mount()
	return st
}

// path returns the path of name on the mount.
func (r *rig) path(name ...string) string {
	return filepath.Join(append([]string{r.mnt}, name...)...)
}

// writeFile creates or truncates path, writes data, fsyncs the file if
// sync is set, and closes it.
func writeFile(t testing.TB, path, data string, sync bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// appendFile appends data to path, fsyncing it if sync is set.
func appendFile(t testing.TB, path, data string, sync bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// syncDir fsyncs the directory at path.
func syncDir(t testing.TB, path string) {
	t.Helper()
	d, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatalf("fsync directory %s: %v", path, err)
	}
}

// wantContent checks that the file at path holds want.
func wantContent(t testing.TB, path, want string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if !bytes.Equal(got, []byte(want)) {
		t.Fatalf("%s holds %q, want %q", path, short(got), short([]byte(want)))
	}
}

// wantMissing checks that nothing exists at path.
func wantMissing(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s: want it missing, stat says %v", path, err)
	}
}

// short abbreviates long contents in failure messages.
func short(b []byte) string {
	if len(b) <= 64 {
		return string(b)
	}
	return fmt.Sprintf("%s...(%d bytes)", b[:64], len(b))
}

// TestMountReportsEveryProblem needs neither root nor FUSE: Mount checks
// its arguments first.
func TestMountReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, mnt, backing string
		opts               powerfs.Options
		want               []string
	}{
		{"everything wrong", "", file, powerfs.Options{BusyTimeout: -1},
			[]string{"BusyTimeout", "mount directory not given", "is not a directory"}},
		{"backing inside the mount", dir, filepath.Join(dir, "sub"), powerfs.Options{}, []string{"overlap"}},
		{"overlap", dir, dir, powerfs.Options{}, []string{"overlap"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := powerfs.Mount(tt.mnt, tt.backing, tt.opts)
			if err == nil {
				f.Unmount()
				t.Fatal("Mount succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
