package powerfs

import (
	"context"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Namespace operations change the current entries of directories at once;
// the durable entries change only when a directory is fsynced (see Fsync).

// add creates an inode named name in dir. The new entry is current, not
// durable.
func (f *FS) add(ctx context.Context, dir *inode, name string, typ, perm uint32, target string) (*inode, syscall.Errno) {
	var uid, gid uint32
	if caller, ok := fuse.FromContext(ctx); ok {
		uid, gid = caller.Uid, caller.Gid
	}
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if errno := f.checkNewName(dir, name); errno != 0 {
		return nil, errno
	}
	in := f.newInode(typ, perm, uid, gid, now)
	in.target = target
	if typ != syscall.S_IFDIR {
		in.nlink = 1
	}
	dir.children[name] = in
	dir.mu.Lock()
	dir.touch(now)
	dir.mu.Unlock()
	return in, 0
}

// checkNewName checks that name can be added to dir. The caller holds f.mu.
func (f *FS) checkNewName(dir *inode, name string) syscall.Errno {
	switch {
	case !dir.isDir():
		return syscall.ENOTDIR
	case dir == f.root && name == stageName:
		return syscall.EPERM
	case dir.children[name] != nil:
		return syscall.EEXIST
	}
	return 0
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	f := n.fsys
	if !f.enter() {
		return nil, nil, 0, syscall.EIO
	}
	defer f.leave()
	in, errno := f.add(ctx, n.in, name, syscall.S_IFREG, mode, "")
	if errno != 0 {
		return nil, nil, 0, errno
	}
	f.attr(in, &out.Attr)
	return n.child(ctx, in), nil, openFlags, 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.fsys
	if !f.enter() {
		return nil, syscall.EIO
	}
	defer f.leave()
	in, errno := f.add(ctx, n.in, name, syscall.S_IFDIR, mode, "")
	if errno != 0 {
		return nil, errno
	}
	f.attr(in, &out.Attr)
	return n.child(ctx, in), 0
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.fsys
	if !f.enter() {
		return nil, syscall.EIO
	}
	defer f.leave()
	in, errno := f.add(ctx, n.in, name, syscall.S_IFLNK, 0o777, target)
	if errno != 0 {
		return nil, errno
	}
	f.attr(in, &out.Attr)
	return n.child(ctx, in), 0
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.fsys
	if !f.enter() {
		return nil, syscall.EIO
	}
	defer f.leave()
	t, ok := target.(*node)
	if !ok || t.fsys != f {
		return nil, syscall.EXDEV
	}
	if t.in.isDir() {
		return nil, syscall.EPERM
	}
	now := time.Now()
	f.mu.Lock()
	if errno := f.checkNewName(n.in, name); errno != 0 {
		f.mu.Unlock()
		return nil, errno
	}
	n.in.children[name] = t.in
	t.in.nlink++
	f.mu.Unlock()
	n.in.mu.Lock()
	n.in.touch(now)
	n.in.mu.Unlock()
	t.in.mu.Lock()
	t.in.ctime = now
	t.in.mu.Unlock()
	f.attr(t.in, &out.Attr)
	return n.child(ctx, t.in), 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, false)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, true)
}

// remove removes the current entry name from n.
func (n *node) remove(name string, wantDir bool) syscall.Errno {
	f := n.fsys
	if !f.enter() {
		return syscall.EIO
	}
	defer f.leave()
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	c := n.in.children[name]
	switch {
	case c == nil:
		return syscall.ENOENT
	case wantDir && !c.isDir():
		return syscall.ENOTDIR
	case !wantDir && c.isDir():
		return syscall.EISDIR
	case c.isDir() && len(c.children) > 0:
		return syscall.ENOTEMPTY
	}
	delete(n.in.children, name)
	f.unref(c, now)
	n.in.mu.Lock()
	n.in.touch(now)
	n.in.mu.Unlock()
	return 0
}

// unref records that in lost a current name. The caller holds f.mu.
func (f *FS) unref(in *inode, now time.Time) {
	if !in.isDir() {
		in.nlink--
	}
	in.mu.Lock()
	in.ctime = now
	in.mu.Unlock()
}

// Rename supports renameat2 flags RENAME_NOREPLACE and RENAME_EXCHANGE.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	f := n.fsys
	if !f.enter() {
		return syscall.EIO
	}
	defer f.leave()
	np, ok := newParent.(*node)
	if !ok || np.fsys != f {
		return syscall.EXDEV
	}
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return syscall.EINVAL
	}
	src, dst := n.in, np.in
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	c := src.children[name]
	if c == nil {
		return syscall.ENOENT
	}
	if !dst.isDir() {
		return syscall.ENOTDIR
	}
	if dst == f.root && newName == stageName {
		return syscall.EPERM
	}
	old := dst.children[newName]
	switch {
	case flags&unix.RENAME_EXCHANGE != 0:
		if old == nil {
			return syscall.ENOENT
		}
		src.children[name], dst.children[newName] = old, c
	case old == c:
		return 0 // two names of one file: rename(2) does nothing
	case old != nil && flags&unix.RENAME_NOREPLACE != 0:
		return syscall.EEXIST
	default:
		if old != nil {
			switch {
			case old.isDir() && !c.isDir():
				return syscall.EISDIR
			case !old.isDir() && c.isDir():
				return syscall.ENOTDIR
			case old.isDir() && len(old.children) > 0:
				return syscall.ENOTEMPTY
			}
			f.unref(old, now)
		}
		delete(src.children, name)
		dst.children[newName] = c
	}
	for _, d := range []*inode{src, dst} {
		d.mu.Lock()
		d.touch(now)
		d.mu.Unlock()
	}
	c.mu.Lock()
	c.ctime = now
	c.mu.Unlock()
	return 0
}
