package powerfs

import (
	"context"
	"maps"
	"slices"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// node is the go-fuse face of an inode. go-fuse may make several for one
// inode and keeps one per inode number; all state lives in the inode.
type node struct {
	fs.Inode
	fsys *FS
	in   *inode
}

var (
	_ fs.NodeLookuper   = (*node)(nil)
	_ fs.NodeGetattrer  = (*node)(nil)
	_ fs.NodeSetattrer  = (*node)(nil)
	_ fs.NodeOpener     = (*node)(nil)
	_ fs.NodeCreater    = (*node)(nil)
	_ fs.NodeReader     = (*node)(nil)
	_ fs.NodeWriter     = (*node)(nil)
	_ fs.NodeFsyncer    = (*node)(nil)
	_ fs.NodeAllocater  = (*node)(nil)
	_ fs.NodeMkdirer    = (*node)(nil)
	_ fs.NodeSymlinker  = (*node)(nil)
	_ fs.NodeReadlinker = (*node)(nil)
	_ fs.NodeLinker     = (*node)(nil)
	_ fs.NodeUnlinker   = (*node)(nil)
	_ fs.NodeRmdirer    = (*node)(nil)
	_ fs.NodeRenamer    = (*node)(nil)
	_ fs.NodeReaddirer  = (*node)(nil)
	_ fs.NodeStatfser   = (*node)(nil)
)

// openFlags are returned for every open file. FOPEN_NOFLUSH spares a FLUSH
// request per close(2), which powerfs would ignore anyway. Page caching
// stays on: every write passes through the kernel's page cache into
// powerfs (there is no writeback caching), so the cache always holds the
// current content and mmap readers see what write(2) wrote. For the same
// reason an open keeps the file's cached pages (FOPEN_KEEP_CACHE): without
// it the kernel drops them at every open(2), and that races with writes
// as the automatic invalidation did (see ExplicitDataCacheControl in
// Mount): a page a write(2) had filled but not yet sent to powerfs was
// dropped and read back with the old bytes, which the cache then kept
// under the written data. kvd's log opens a segment file to read it while
// records are written to it; the leader of a cluster test read zeros
// where its own log held an entry (TestReadersSeeWritesIntoZeroedPages,
// the reopen runs).
const openFlags = fuse.FOPEN_NOFLUSH | fuse.FOPEN_KEEP_CACHE

// child returns the go-fuse inode for in, a child of n.
func (n *node) child(ctx context.Context, in *inode) *fs.Inode {
	return n.NewInode(ctx, &node{fsys: n.fsys, in: in}, fs.StableAttr{Mode: in.typ, Ino: in.ino, Gen: 1})
}

// attr fills out with the current attributes of in.
func (f *FS) attr(in *inode, out *fuse.Attr) {
	f.mu.Lock()
	nlink := in.nlink
	if in.isDir() {
		nlink = 2
		for _, c := range in.children {
			if c.isDir() {
				nlink++
			}
		}
	}
	f.mu.Unlock()

	in.mu.Lock()
	defer in.mu.Unlock()
	out.Ino = in.ino
	out.Mode = in.typ | in.perm
	out.Nlink = nlink
	out.Uid, out.Gid = in.uid, in.gid
	switch in.typ {
	case syscall.S_IFREG:
		out.Size = uint64(in.size)
	case syscall.S_IFLNK:
		out.Size = uint64(len(in.target))
	}
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = pageSize
	out.SetTimes(&in.atime, &in.mtime, &in.ctime)
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.fsys
	if !f.enter() {
		return nil, syscall.EIO
	}
	defer f.leave()
	f.mu.Lock()
	c := n.in.children[name]
	f.mu.Unlock()
	if c == nil {
		return nil, syscall.ENOENT
	}
	f.attr(c, &out.Attr)
	return n.child(ctx, c), 0
}

func (n *node) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f := n.fsys
	if !f.enter() {
		return syscall.EIO
	}
	defer f.leave()
	f.attr(n.in, &out.Attr)
	return 0
}

func (n *node) Setattr(ctx context.Context, _ fs.FileHandle, sa *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	f := n.fsys
	if !f.enter() {
		return syscall.EIO
	}
	defer f.leave()
	in := n.in
	now := time.Now()
	in.mu.Lock()
	if size, ok := sa.GetSize(); ok {
		if !in.isFile() {
			in.mu.Unlock()
			if in.isDir() {
				return syscall.EISDIR
			}
			return syscall.EINVAL
		}
		in.truncate(int64(size))
		in.touch(now)
	}
	if perm, ok := sa.GetMode(); ok {
		in.perm = perm
	}
	if uid, ok := sa.GetUID(); ok {
		in.uid = uid
	}
	if gid, ok := sa.GetGID(); ok {
		in.gid = gid
	}
	if t, ok := sa.GetATime(); ok {
		in.atime = t
	}
	if t, ok := sa.GetMTime(); ok {
		in.mtime = t
	}
	in.ctime = now
	in.mu.Unlock()
	f.attr(in, &out.Attr)
	return 0
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if !n.fsys.enter() {
		return nil, 0, syscall.EIO
	}
	defer n.fsys.leave()
	return nil, openFlags, 0
}

func (n *node) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f := n.fsys
	if !f.enter() {
		return nil, syscall.EIO
	}
	defer f.leave()
	in := n.in
	in.mu.Lock()
	defer in.mu.Unlock()
	got, err := in.read(dest, off)
	if err != nil {
		f.log.Error("read failed", "ino", in.ino, "err", err)
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:got]), 0
}

func (n *node) Write(ctx context.Context, _ fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	f := n.fsys
	if !f.enter() {
		return 0, syscall.EIO
	}
	defer f.leave()
	in := n.in
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := in.write(data, off); err != nil {
		f.log.Error("write failed", "ino", in.ino, "err", err)
		return 0, syscall.EIO
	}
	in.touch(time.Now())
	return uint32(len(data)), 0
}

// Fsync makes a file's content, or a directory's entries, durable.
func (n *node) Fsync(ctx context.Context, _ fs.FileHandle, flags uint32) syscall.Errno {
	f := n.fsys
	if !f.enter() {
		return syscall.EIO
	}
	defer f.leave()
	in := n.in
	switch {
	case in.isDir():
		f.dirSyncs.Add(1)
		f.mu.Lock()
		in.durable = maps.Clone(in.children)
		f.mu.Unlock()
	case in.isFile():
		f.fileSyncs.Add(1)
		in.mu.Lock()
		defer in.mu.Unlock()
		if err := in.sync(); err != nil {
			f.log.Error("fsync failed", "ino", in.ino, "err", err)
			return syscall.EIO
		}
	}
	return 0
}

// Allocate implements fallocate(2) modes 0 (extend the size), KEEP_SIZE
// (nothing to do), PUNCH_HOLE and ZERO_RANGE (write zeros) as unsynced
// changes.
func (n *node) Allocate(ctx context.Context, _ fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	f := n.fsys
	if !f.enter() {
		return syscall.EIO
	}
	defer f.leave()
	in := n.in
	if !in.isFile() {
		return syscall.ENODEV
	}
	start, end := int64(off), int64(off+size)
	if start < 0 || end < start {
		return syscall.EFBIG
	}
	keepSize := mode&unix.FALLOC_FL_KEEP_SIZE != 0
	in.mu.Lock()
	defer in.mu.Unlock()
	switch mode &^ unix.FALLOC_FL_KEEP_SIZE {
	case 0:
	case unix.FALLOC_FL_PUNCH_HOLE, unix.FALLOC_FL_ZERO_RANGE:
		if err := in.zero(start, end); err != nil {
			f.log.Error("fallocate failed", "ino", in.ino, "err", err)
			return syscall.EIO
		}
	default:
		return syscall.EOPNOTSUPP
	}
	if !keepSize && end > in.size {
		in.size = end
	}
	in.touch(time.Now())
	return 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if !n.fsys.enter() {
		return nil, syscall.EIO
	}
	defer n.fsys.leave()
	if n.in.typ != syscall.S_IFLNK {
		return nil, syscall.EINVAL
	}
	return []byte(n.in.target), 0
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	f := n.fsys
	if !f.enter() {
		return nil, syscall.EIO
	}
	defer f.leave()
	f.mu.Lock()
	defer f.mu.Unlock()
	names := slices.Sorted(maps.Keys(n.in.children))
	entries := make([]fuse.DirEntry, 0, len(names))
	for _, name := range names {
		c := n.in.children[name]
		entries = append(entries, fuse.DirEntry{Name: name, Ino: c.ino, Mode: c.typ})
	}
	return fs.NewListDirStream(entries), 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	if !n.fsys.enter() {
		return syscall.EIO
	}
	defer n.fsys.leave()
	var st syscall.Statfs_t
	if err := syscall.Statfs(n.fsys.backing, &st); err != nil {
		return fs.ToErrno(err)
	}
	out.FromStatfsT(&st)
	return 0
}
