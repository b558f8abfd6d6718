package powerfs

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"syscall"
)

// placement is one durable entry: the inode that the path names.
type placement struct {
	rel string // path relative to the backing directory
	in  *inode
}

// materialize rewrites the backing directory to hold the durable state of
// the frozen file system, with torn tails or reordered pages as c asks. It
// must run after the freeze, when nothing else touches the inodes.
func (f *FS) materialize(c CrashOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()

	places := f.durablePlaces()
	f.countDropped(places, c)

	var errs []error
	for _, in := range f.inodes {
		if in.isFile() {
			if err := in.closeStorage(); err != nil {
				errs = append(errs, err)
			}
		}
	}

	// Move the durable content of every file found at mount into the
	// stage, where the content of new files already is, then rebuild the
	// tree from the durable namespace.
	for _, p := range places {
		in := p.in
		if in.isFile() && in.preexisting {
			staged := filepath.Join(f.stage, fmt.Sprint(in.ino))
			if err := os.Rename(in.storagePath, staged); err != nil {
				errs = append(errs, err)
				continue
			}
			in.preexisting, in.storagePath = false, staged
		}
	}
	entries, err := os.ReadDir(f.backing)
	if err != nil {
		errs = append(errs, err)
	}
	for _, e := range entries {
		if e.Name() != stageName {
			if err := os.RemoveAll(filepath.Join(f.backing, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	first := make(map[*inode]string) // files placed, by path of their first placement
	for _, p := range places {
		if err := f.place(p, first); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(f.stage); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		f.log.Error("crash: rewriting the backing directory failed", "backing", f.backing, "err", err)
		return fmt.Errorf("powerfs: rewrite %s: %w", f.backing, err)
	}
	return nil
}

// durablePlaces walks the durable namespace from the root, in lexical order,
// parents before children. A directory that is durably named more than once
// (possible when the directories of a rename are fsynced separately) is
// placed at the first path only. The caller holds f.mu.
func (f *FS) durablePlaces() []placement {
	var places []placement
	seen := map[*inode]bool{f.root: true}
	var walk func(dir *inode, rel string)
	walk = func(dir *inode, rel string) {
		for _, name := range slices.Sorted(maps.Keys(dir.durable)) {
			c := dir.durable[name]
			p := filepath.Join(rel, name)
			if c.isDir() {
				if seen[c] {
					f.skippedDirs.Add(1)
					f.log.Warn("crash: directory durably named twice, keeping the first name", "path", p)
					continue
				}
				seen[c] = true
			}
			places = append(places, placement{rel: p, in: c})
			if c.isDir() {
				walk(c, p)
			}
		}
	}
	walk(f.root, "")
	return places
}

// countDropped counts what the crash loses and, as c asks, tears the tails
// of durably named files or keeps some of their unsynced pages. The caller
// holds f.mu.
func (f *FS) countDropped(places []placement, c CrashOptions) {
	var dropped, torn int64
	for _, in := range f.inodes {
		switch {
		case in.isFile():
			in.mu.Lock()
			n, err := in.pendingBytes()
			in.mu.Unlock()
			if err != nil {
				f.log.Error("crash: counting unsynced bytes failed", "ino", in.ino, "err", err)
			}
			dropped += n
		case in.isDir():
			for name, c := range in.children {
				if in.durable[name] != c {
					f.droppedEntries.Add(1)
				}
			}
			for name := range in.durable {
				if _, ok := in.children[name]; !ok {
					f.droppedEntries.Add(1)
				}
			}
		}
	}
	if c.Torn != nil || c.Reorder != nil {
		done := make(map[*inode]bool)
		for _, p := range places {
			in := p.in
			if !in.isFile() || done[in] {
				continue
			}
			done[in] = true
			in.mu.Lock()
			var kept, written int64
			var err error
			if c.Reorder != nil {
				kept, written, err = in.scatter(c.Reorder)
			} else {
				kept, written, err = in.tear(c.Torn)
			}
			in.mu.Unlock()
			if err != nil {
				f.log.Error("crash: keeping unsynced data failed", "path", p.rel, "err", err)
				continue
			}
			dropped -= kept
			torn += written
		}
	}
	f.droppedBytes.Add(dropped)
	f.tornBytes.Add(torn)
}

// place creates one durable entry in the backing directory. The caller
// holds f.mu.
func (f *FS) place(p placement, first map[*inode]string) error {
	in := p.in
	path := filepath.Join(f.backing, p.rel)
	in.mu.Lock()
	defer in.mu.Unlock()
	switch in.typ {
	case syscall.S_IFDIR:
		if err := os.Mkdir(path, 0o700); err != nil {
			return err
		}
	case syscall.S_IFLNK:
		if err := os.Symlink(in.target, path); err != nil {
			return err
		}
		return os.Lchown(path, int(in.uid), int(in.gid))
	case syscall.S_IFREG:
		if prev, ok := first[in]; ok {
			return os.Link(prev, path)
		}
		first[in] = path
		if in.stored {
			if err := os.Rename(in.storagePath, path); err != nil {
				return err
			}
		} else if err := os.WriteFile(path, nil, 0o600); err != nil {
			return err
		}
	}
	if err := os.Chmod(path, os.FileMode(in.perm&0o777)|modeBits(in.perm)); err != nil {
		return err
	}
	return os.Lchown(path, int(in.uid), int(in.gid))
}

// modeBits converts the setuid, setgid and sticky bits of perm.
func modeBits(perm uint32) os.FileMode {
	var m os.FileMode
	if perm&syscall.S_ISUID != 0 {
		m |= os.ModeSetuid
	}
	if perm&syscall.S_ISGID != 0 {
		m |= os.ModeSetgid
	}
	if perm&syscall.S_ISVTX != 0 {
		m |= os.ModeSticky
	}
	return m
}
