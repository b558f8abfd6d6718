package powerfs

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
)

// pageSize is the granularity at which unsynced file data is kept in memory.
const pageSize = 4096

// sectorSize is the unit in which torn mode persists a file's unsynced
// content: a disk writes a sector whole or not at all.
const sectorSize = 512

// page is one dirty page of a file. Bytes at or beyond the file's current
// size are always zero.
type page = [pageSize]byte

// inode is a file, directory or symbolic link of the current state, together
// with its durable state.
//
// A regular file's durable content lives in its storage file on the backing
// file system: for files found at mount, the file itself; for files created
// since, a file in the stage directory, created by the first fsync. Its
// current content is the storage content up to validSize, zeros after that,
// overlaid with the dirty pages, cut at size.
type inode struct {
	ino uint64
	typ uint32 // syscall.S_IFREG, S_IFDIR or S_IFLNK; immutable
	// target is the symbolic link's target; immutable.
	target string

	// Guarded by FS.mu.
	children map[string]*inode // directories: the current entries
	durable  map[string]*inode // directories: the entries as of the last fsync (or the mount)
	nlink    uint32            // regular files and symbolic links: current names

	mu                  sync.Mutex // guards the fields below
	perm                uint32     // permission bits
	uid, gid            uint32
	atime, mtime, ctime time.Time

	// Regular files.
	preexisting bool     // storagePath is the file found at mount
	stored      bool     // the storage file exists
	storagePath string   // absolute path of the file holding the durable content
	storage     *os.File // storagePath opened read-write; nil until needed
	durableSize int64    // size of the storage file
	validSize   int64    // storage bytes before validSize are still current; min(durableSize, every unsynced truncation)
	size        int64    // current size; validSize <= size
	pages       map[int64]*page
}

func (in *inode) isDir() bool  { return in.typ == syscall.S_IFDIR }
func (in *inode) isFile() bool { return in.typ == syscall.S_IFREG }

// touch records a change of content at t. The caller holds in.mu.
func (in *inode) touch(t time.Time) {
	in.mtime, in.ctime = t, t
}

// openStorage opens (creating, for a new file) the storage file. The caller
// holds in.mu.
func (in *inode) openStorage() error {
	if in.storage != nil {
		return nil
	}
	f, err := os.OpenFile(in.storagePath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	in.storage, in.stored = f, true
	return nil
}

// closeStorage closes the storage file if it is open. The caller holds in.mu.
func (in *inode) closeStorage() error {
	if in.storage == nil {
		return nil
	}
	err := in.storage.Close()
	in.storage = nil
	return err
}

// readBase fills p with the content that lies under the dirty pages at off:
// storage bytes below validSize, zeros after. The caller holds in.mu.
func (in *inode) readBase(p []byte, off int64) error {
	clear(p)
	if off >= in.validSize {
		return nil
	}
	n := min(int64(len(p)), in.validSize-off)
	if err := in.openStorage(); err != nil {
		return err
	}
	if _, err := in.storage.ReadAt(p[:n], off); err != nil {
		return fmt.Errorf("read %s at %d: %w", in.storagePath, off, err)
	}
	return nil
}

// read copies the current content at off into p and returns the number of
// bytes copied, which is short only at the end of the file. The caller holds
// in.mu.
func (in *inode) read(p []byte, off int64) (int, error) {
	if off >= in.size {
		return 0, nil
	}
	n := min(int64(len(p)), in.size-off)
	p = p[:n]
	if err := in.readBase(p, off); err != nil {
		return 0, err
	}
	if len(in.pages) == 0 {
		return int(n), nil
	}
	end := off + n
	for idx := off / pageSize; idx*pageSize < end; idx++ {
		pg := in.pages[idx]
		if pg == nil {
			continue
		}
		start := idx * pageSize
		lo, hi := max(off, start), min(end, start+pageSize)
		copy(p[lo-off:hi-off], pg[lo-start:hi-start])
	}
	return int(n), nil
}

// dirtyPage returns page idx, making it dirty. The caller holds in.mu.
func (in *inode) dirtyPage(idx int64) (*page, error) {
	if pg := in.pages[idx]; pg != nil {
		return pg, nil
	}
	pg := new(page)
	// readBase yields zeros from validSize on, and validSize <= size, so
	// the bytes past the end of the file are zero as required.
	if err := in.readBase(pg[:], idx*pageSize); err != nil {
		return nil, err
	}
	if in.pages == nil {
		in.pages = make(map[int64]*page)
	}
	in.pages[idx] = pg
	return pg, nil
}

// write stores data at off in the current state. The caller holds in.mu.
func (in *inode) write(data []byte, off int64) error {
	for len(data) > 0 {
		pg, err := in.dirtyPage(off / pageSize)
		if err != nil {
			return err
		}
		n := copy(pg[off%pageSize:], data)
		data = data[n:]
		off += int64(n)
	}
	in.size = max(in.size, off)
	return nil
}

// zero writes zeros over [off, end) without changing the size. The caller
// holds in.mu.
func (in *inode) zero(off, end int64) error {
	end = min(end, in.size)
	var zeros [pageSize]byte
	for off < end {
		n := min(end-off, pageSize-off%pageSize)
		if err := in.write(zeros[:n], off); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// truncate sets the current size. The caller holds in.mu.
func (in *inode) truncate(size int64) {
	if size < in.size {
		for idx := range in.pages {
			if idx*pageSize >= size {
				delete(in.pages, idx)
			}
		}
		if pg := in.pages[size/pageSize]; pg != nil {
			clear(pg[size%pageSize:])
		}
		in.validSize = min(in.validSize, size)
	}
	in.size = size
}

// dirty reports whether the file has unsynced changes. The caller holds in.mu.
func (in *inode) dirty() bool {
	return len(in.pages) > 0 || in.validSize != in.durableSize || in.size != in.durableSize
}

// sync makes the current content durable: it is written to the storage file,
// which is then fsynced. The caller holds in.mu.
func (in *inode) sync() error {
	if !in.dirty() {
		return nil
	}
	if err := in.openStorage(); err != nil {
		return err
	}
	if in.validSize < in.durableSize {
		if err := in.storage.Truncate(in.validSize); err != nil {
			return err
		}
	}
	for _, idx := range slices.Sorted(maps.Keys(in.pages)) {
		start := idx * pageSize
		n := min(pageSize, in.size-start)
		if _, err := in.storage.WriteAt(in.pages[idx][:n], start); err != nil {
			return err
		}
	}
	if err := in.storage.Truncate(in.size); err != nil {
		return err
	}
	if err := in.storage.Sync(); err != nil {
		return err
	}
	in.durableSize, in.validSize, in.pages = in.size, in.size, nil
	return nil
}

// pendingBytes counts the bytes of current content that are not durable:
// those from validSize to size, and those below that differ from the
// storage content. The caller holds in.mu.
func (in *inode) pendingBytes() (int64, error) {
	n := in.size - in.validSize
	var base page
	for idx, pg := range in.pages {
		start := idx * pageSize
		end := min(start+pageSize, in.validSize)
		if end <= start {
			continue
		}
		if err := in.readBase(base[:end-start], start); err != nil {
			return 0, err
		}
		for i := range end - start {
			if pg[i] != base[i] {
				n++
			}
		}
	}
	return n, nil
}

// tear persists the unsynced content of the file in file order up to a
// random sector boundary, as a disk that writes its queue in order and
// loses power midway does: every changed byte below the cut reaches the
// storage, none at or above it. The cut is a multiple of sectorSize (file
// offsets), or the end of the changes; when it lies past the durable size,
// the file ends at the cut, or half the time is followed by zeros up to a
// later sector boundary or the file's size before the crash (the size was
// persisted, the data of those sectors not), never by anything else. Files
// with an unsynced truncation below the durable size are left alone. It
// returns the number of unsynced bytes saved from being dropped, and the
// number of bytes written (kept content and zeros). The caller holds in.mu.
func (in *inode) tear(rng *rand.Rand) (kept, written int64, err error) {
	if in.validSize < in.durableSize {
		return 0, 0, nil
	}
	lo, hi, err := in.changed()
	if err != nil || lo >= hi {
		return 0, 0, err
	}
	// The cut: a sector boundary above the sector holding the first
	// change, or the end of the changes; the lowest choice keeps nothing.
	from := lo / sectorSize * sectorSize
	cuts := (hi-from+sectorSize-1)/sectorSize + 1 // from, from+512, ..., and hi
	cut := min(from+rng.Int64N(cuts)*sectorSize, hi)
	end := max(in.durableSize, cut)
	zeros := int64(0)
	if rest := in.size - end; cut >= in.durableSize && rest > 0 && rng.IntN(2) == 0 {
		// Up to a sector boundary past end, or the size.
		z := (end/sectorSize + 1 + rng.Int64N((rest+sectorSize-1)/sectorSize)) * sectorSize
		zeros = min(z, in.size) - end
	}
	if cut == from && zeros == 0 {
		return 0, 0, nil
	}
	before, err := in.pendingBytes()
	if err != nil {
		return 0, 0, err
	}
	buf := make([]byte, cut-from+zeros)
	if _, err := in.read(buf[:cut-from], from); err != nil {
		return 0, 0, err
	}
	if err := in.openStorage(); err != nil {
		return 0, 0, err
	}
	if cut > from {
		if _, err := in.storage.WriteAt(buf[:cut-from], from); err != nil {
			return 0, 0, err
		}
	}
	if zeros > 0 {
		if _, err := in.storage.WriteAt(buf[cut-from:], end); err != nil {
			return 0, 0, err
		}
	}
	if err := in.storage.Sync(); err != nil {
		return 0, 0, err
	}
	in.durableSize = end + zeros
	in.validSize = in.durableSize
	after, err := in.pendingBytes()
	if err != nil {
		return 0, 0, err
	}
	return before - after, int64(len(buf)), nil
}

// changed returns the span [lo, hi) of the file's unsynced changes: from
// the first byte that differs from the durable content (or the durable
// size, if the file grew) to the last one that differs, or the size if
// the file grew. lo == hi when nothing changed. The caller holds in.mu,
// and validSize equals durableSize.
func (in *inode) changed() (lo, hi int64, err error) {
	lo, hi = in.size, 0
	if in.size > in.durableSize {
		lo, hi = in.durableSize, in.size
	}
	var base page
	for idx, pg := range in.pages {
		start := idx * pageSize
		end := min(start+pageSize, in.durableSize)
		if end <= start {
			continue
		}
		if err := in.readBase(base[:end-start], start); err != nil {
			return 0, 0, err
		}
		for i := range end - start {
			if pg[i] != base[i] {
				lo = min(lo, start+i)
				hi = max(hi, start+i+1)
			}
		}
	}
	return min(lo, hi), hi, nil
}

// scatter persists a random subset of the dirty pages, each whole and in
// place, growing the file to cover the last one kept. Files with an unsynced
// truncation below the durable size are left alone. It returns the number
// of unsynced bytes the kept pages saved from being dropped, and the number
// of bytes written. The caller holds in.mu.
func (in *inode) scatter(rng *rand.Rand) (kept, written int64, err error) {
	if in.validSize < in.durableSize || len(in.pages) == 0 {
		return 0, 0, nil
	}
	before, err := in.pendingBytes()
	if err != nil {
		return 0, 0, err
	}
	end := in.durableSize
	for _, idx := range slices.Sorted(maps.Keys(in.pages)) {
		start := idx * pageSize
		n := min(pageSize, in.size-start)
		if n <= 0 || rng.IntN(2) == 0 {
			continue
		}
		if err := in.openStorage(); err != nil {
			return 0, 0, err
		}
		if _, err := in.storage.WriteAt(in.pages[idx][:n], start); err != nil {
			return 0, 0, err
		}
		written += n
		end = max(end, start+n)
	}
	if written == 0 {
		return 0, 0, nil
	}
	if err := in.storage.Truncate(end); err != nil {
		return 0, 0, err
	}
	if err := in.storage.Sync(); err != nil {
		return 0, 0, err
	}
	// The storage now holds the current content wherever a page was kept,
	// and the durable content, or zeros past the old durable size, where
	// none was: pendingBytes counts what is still lost.
	in.durableSize, in.validSize = end, end
	after, err := in.pendingBytes()
	if err != nil {
		return 0, 0, err
	}
	return before - after, written, nil
}
