package powerfs

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// load builds the inode tree from the backing directory. Everything found
// there is durable.
func (f *FS) load() error {
	var st syscall.Stat_t
	if err := syscall.Stat(f.backing, &st); err != nil {
		return fmt.Errorf("powerfs: load %s: %w", f.backing, err)
	}
	f.root = &inode{
		ino:      1,
		typ:      syscall.S_IFDIR,
		children: make(map[string]*inode),
		durable:  make(map[string]*inode),
	}
	setStat(f.root, &st)
	f.inodes = append(f.inodes, f.root)
	l := loader{f: f, files: make(map[[2]uint64]*inode)}
	if err := l.dir(f.root, f.backing); err != nil {
		return fmt.Errorf("powerfs: load %s: %w", f.backing, err)
	}
	return nil
}

type loader struct {
	f     *FS
	files map[[2]uint64]*inode // regular files by device and inode number, for hard links
}

func (l *loader) dir(dir *inode, path string) error {
	entries, err := os.ReadDir(path)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if dir == l.f.root && name == stageName {
			continue
		}
		p := filepath.Join(path, name)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		var child *inode
		switch typ := st.Mode & syscall.S_IFMT; typ {
		case syscall.S_IFDIR:
			child = l.f.newInode(typ, 0, 0, 0, time.Time{})
			if err := l.dir(child, p); err != nil {
				return err
			}
		case syscall.S_IFREG:
			key := [2]uint64{uint64(st.Dev), st.Ino}
			if child = l.files[key]; child == nil {
				child = l.f.newInode(typ, 0, 0, 0, time.Time{})
				child.preexisting, child.stored, child.storagePath = true, true, p
				child.durableSize, child.validSize, child.size = st.Size, st.Size, st.Size
				l.files[key] = child
			}
			child.nlink++
		case syscall.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			child = l.f.newInode(typ, 0, 0, 0, time.Time{})
			child.target = target
			child.nlink = 1
		default:
			return fmt.Errorf("%s: unsupported file type %#o", p, typ)
		}
		setStat(child, &st)
		dir.children[name] = child
		dir.durable[name] = child
	}
	return nil
}

// setStat copies permissions, owner and times from st.
func setStat(in *inode, st *syscall.Stat_t) {
	in.perm = st.Mode & 0o7777
	in.uid, in.gid = st.Uid, st.Gid
	in.atime = time.Unix(st.Atim.Unix())
	in.mtime = time.Unix(st.Mtim.Unix())
	in.ctime = time.Unix(st.Ctim.Unix())
}
