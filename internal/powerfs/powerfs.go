package powerfs

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// stageName is the directory, at the root of the backing directory, that
// holds the durable content of files created since the mount. It exists
// only while the file system is mounted, and the name is reserved at the
// root of the mount.
const stageName = ".powerfs-stage"

// cacheTimeout is how long the kernel may cache entries and attributes. All
// changes pass through the kernel, so its caches never go stale.
const cacheTimeout = time.Second

// FS is a mounted power-loss simulating file system. Its methods are safe
// for concurrent use.
type FS struct {
	mountpoint string
	backing    string
	stage      string
	opts       Options
	log        *slog.Logger
	server     *fuse.Server

	// gate is held shared by every file system operation and exclusively
	// by Crash to freeze the state: once frozen, operations fail with EIO.
	gate   sync.RWMutex
	frozen bool

	// mu guards the namespace: the children, durable and nlink fields of
	// every inode, and inodes. Lock order: mu before inode.mu.
	mu      sync.Mutex
	root    *inode
	inodes  []*inode // every inode of this mount, by increasing ino
	nextIno uint64

	closeMu sync.Mutex
	closed  bool

	fileSyncs, dirSyncs          atomic.Int64
	droppedBytes, droppedEntries atomic.Int64
	tornBytes, skippedDirs       atomic.Int64
}

// Stats counts what the file system has done. Crash fills in the counts of
// what it dropped and kept.
type Stats struct {
	FileSyncs int64 // fsync and fdatasync calls on regular files
	DirSyncs  int64 // fsync calls on directories

	// DroppedBytes counts the bytes of file content that the crash
	// discarded: unsynced bytes past the durable content, and unsynced
	// bytes that differed from it. Torn bytes kept are excluded.
	DroppedBytes int64
	// DroppedEntries counts the directory entries whose unsynced creation,
	// removal or replacement the crash undid.
	DroppedEntries int64
	// TornBytes counts the bytes torn mode wrote (kept content and the
	// zeros after it), or the bytes of the pages reorder mode kept.
	TornBytes int64
	// SkippedDirs counts durable entries that named a directory already
	// materialized under another path, which a real file system cannot
	// hold; see the package documentation.
	SkippedDirs int64
}

// Mount mounts on mountpoint (an existing directory) a file system whose
// durable state is the backing directory, and serves it until Crash or
// Unmount. The two directories must not contain each other. Mount needs
// root and /dev/fuse. Files and directories found in backing are durable;
// regular files, directories and symbolic links are supported.
func Mount(mountpoint, backing string, opts Options) (*FS, error) {
	opts, err := opts.withDefaults()
	mountpoint, backing, pathErr := checkDirs(mountpoint, backing)
	if err := errors.Join(err, pathErr); err != nil {
		return nil, err
	}
	f := &FS{
		mountpoint: mountpoint,
		backing:    backing,
		stage:      filepath.Join(backing, stageName),
		opts:       opts,
		log:        opts.Logger.With("mountpoint", mountpoint),
		nextIno:    2,
	}
	if err := os.RemoveAll(f.stage); err != nil {
		return nil, fmt.Errorf("powerfs: remove stale stage: %w", err)
	}
	if err := f.load(); err != nil {
		return nil, err
	}
	if err := os.Mkdir(f.stage, 0o700); err != nil {
		return nil, fmt.Errorf("powerfs: create stage: %w", err)
	}

	timeout := cacheTimeout
	libLog := slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn)
	server, err := fs.Mount(mountpoint, &node{fsys: f, in: f.root}, &fs.Options{
		MountOptions: fuse.MountOptions{
			DirectMount:       true,
			DirectMountStrict: true, // no fusermount fallback: report the mount error itself
			FsName:            backing,
			Name:              "powerfs",
			DisableXAttrs:     true,
			// Every change passes through the kernel, so its page cache
			// never goes stale and needs no automatic invalidation. That
			// invalidation (on seeing the file's mtime or size change)
			// races with writes: it dropped pages a write(2) was filling,
			// and a concurrent read cached them again from powerfs before
			// the write reached it, leaving the cache holding the old
			// bytes under data already written
			// (TestReadersSeeWritesIntoZeroedPages).
			ExplicitDataCacheControl: true,
			Logger:                   libLog,
		},
		EntryTimeout:   &timeout,
		AttrTimeout:    &timeout,
		Logger:         libLog,
		RootStableAttr: &fs.StableAttr{Ino: 1, Gen: 1},
	})
	if err != nil {
		os.RemoveAll(f.stage)
		return nil, fmt.Errorf("powerfs: mount %s: %w", mountpoint, err)
	}
	f.server = server
	f.log.Info("mounted", "backing", backing)
	return f, nil
}

// checkDirs makes both paths absolute and checks that they are distinct
// directories, neither inside the other.
func checkDirs(mountpoint, backing string) (string, string, error) {
	var errs []error
	abs := func(what, p string) string {
		if p == "" {
			errs = append(errs, fmt.Errorf("powerfs: %s directory not given", what))
			return ""
		}
		a, err := filepath.Abs(p)
		if err == nil {
			a, err = filepath.EvalSymlinks(a)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("powerfs: %s directory: %w", what, err))
			return ""
		}
		if st, err := os.Stat(a); err != nil {
			errs = append(errs, fmt.Errorf("powerfs: %s directory: %w", what, err))
		} else if !st.IsDir() {
			errs = append(errs, fmt.Errorf("powerfs: %s directory %s is not a directory", what, a))
		}
		return a
	}
	m, b := abs("mount", mountpoint), abs("backing", backing)
	if m != "" && b != "" && (within(m, b) || within(b, m)) {
		errs = append(errs, fmt.Errorf("powerfs: mount directory %s and backing directory %s overlap", m, b))
	}
	return m, b, errors.Join(errs...)
}

// within reports whether path p is dir or inside it.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// Mountpoint returns the absolute path of the mount.
func (f *FS) Mountpoint() string { return f.mountpoint }

// Crash simulates a power loss: it freezes the file system (operations
// still in flight finish first; later ones fail with EIO), unmounts it
// without making any pending change durable, and leaves the backing
// directory holding exactly the durable state, plus torn tails or reordered
// pages if c.Torn or c.Reorder asks for them. Open files should be closed first; those still open after
// Options.BusyTimeout are cut off by aborting the FUSE connection. Mount the
// backing directory again to see the state a restarted machine would see.
//
// Crash returns ErrClosed if the file system was already crashed or
// unmounted. Even when it returns another error, it has done all it could:
// the file system is unmounted or detached, and the backing directory is
// rewritten as far as possible.
func (f *FS) Crash(c CrashOptions) error {
	f.closeMu.Lock()
	defer f.closeMu.Unlock()
	if f.closed {
		return ErrClosed
	}
	f.closed = true

	f.gate.Lock()
	f.frozen = true
	f.gate.Unlock()

	unmountErr := f.unmount()
	matErr := f.materialize(c)
	st := f.Stats()
	f.log.Info("crashed", "dropped_bytes", st.DroppedBytes, "dropped_entries", st.DroppedEntries,
		"torn_bytes", st.TornBytes, "torn", c.Torn != nil, "reorder", c.Reorder != nil)
	return errors.Join(unmountErr, matErr)
}

// Unmount is Crash without torn tails: a clean unmount also keeps only the
// durable state, since nothing writes back the unsynced changes. It
// returns nil if the file system was already crashed or unmounted.
func (f *FS) Unmount() error {
	if err := f.Crash(CrashOptions{}); err != nil && !errors.Is(err, ErrClosed) {
		return err
	}
	return nil
}

// Stats returns the counters. It may be called at any time, also after
// Crash.
func (f *FS) Stats() Stats {
	return Stats{
		FileSyncs:      f.fileSyncs.Load(),
		DirSyncs:       f.dirSyncs.Load(),
		DroppedBytes:   f.droppedBytes.Load(),
		DroppedEntries: f.droppedEntries.Load(),
		TornBytes:      f.tornBytes.Load(),
		SkippedDirs:    f.skippedDirs.Load(),
	}
}

// enter admits a file system operation; it returns false once the state is
// frozen. An admitted operation must call leave.
func (f *FS) enter() bool {
	f.gate.RLock()
	if f.frozen {
		f.gate.RUnlock()
		return false
	}
	return true
}

func (f *FS) leave() { f.gate.RUnlock() }

// newInode registers a new inode. The caller holds f.mu.
func (f *FS) newInode(typ, perm, uid, gid uint32, now time.Time) *inode {
	in := &inode{
		ino:  f.nextIno,
		typ:  typ,
		perm: perm & 0o7777,
		uid:  uid,
		gid:  gid,
	}
	in.atime, in.mtime, in.ctime = now, now, now
	f.nextIno++
	switch typ {
	case syscall.S_IFDIR:
		in.children = make(map[string]*inode)
		in.durable = make(map[string]*inode)
	case syscall.S_IFREG:
		in.storagePath = filepath.Join(f.stage, fmt.Sprint(in.ino))
	}
	f.inodes = append(f.inodes, in)
	return in
}
