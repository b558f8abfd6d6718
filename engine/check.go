package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// CheckReport is what Check found.
type CheckReport struct {
	Pages    int // pages of the state file's trees read
	Keys     int // value records checked
	Format   string
	Problems []Problem
	// Truncated is set when Check stopped listing problems at
	// CheckOptions.MaxProblems.
	Truncated bool
}

// OK reports whether Check found no damage.
func (r *CheckReport) OK() bool { return len(r.Problems) == 0 }

// Problem is one piece of damage in the state file.
type Problem struct {
	Page uint64 // the page it is on; 0 when it is not on one page
	Key  []byte // the key concerned, if any
	What string
}

func (p Problem) String() string {
	s := p.What
	if p.Key != nil {
		k := p.Key
		more := ""
		if len(k) > 64 {
			k, more = k[:64], "..."
		}
		s = fmt.Sprintf("key %q%s: %s", k, more, s)
	}
	if p.Page != 0 {
		s = fmt.Sprintf("page %d: %s", p.Page, s)
	}
	return s
}

// CheckOptions tune Check. The zero value is valid.
type CheckOptions struct {
	// MaxProblems stops the listing of problems after this many; 0: 1000.
	MaxProblems int
}

// Check checks the state file of the store in dir, which no process may
// have open: it returns ErrLocked if one has. It changes nothing. It walks
// every page of the file's trees, reading them with ordinary reads rather
// than through a memory map, so that no damage can make it fault; checks
// that each page is of the type its parent expects, that its elements lie
// within it and that no page is reached twice; checks the checksum of every
// value record (ErrCorruptValue for a read); and, if the pages are sound
// enough for bbolt to read, runs bbolt's own consistency check (free
// pages, unreachable pages, key order). Damage is reported in the
// CheckReport; the error is for a check that could not be made (no state
// file, a locked directory, a failed read).
func Check(dir string, opts CheckOptions) (CheckReport, error) {
	if opts.MaxProblems <= 0 {
		opts.MaxProblems = 1000
	}
	path := filepath.Join(dir, "state.db")
	if _, err := os.Stat(path); err != nil {
		return CheckReport{}, fmt.Errorf("engine: check: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return CheckReport{}, err
	}
	defer lock.Close()

	c := &checker{max: opts.MaxProblems}
	if err := checkStateFile(path); err != nil {
		if !errors.Is(err, ErrCorruptState) {
			return CheckReport{}, err
		}
		c.problem(0, nil, "%v", err)
		return c.report, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return CheckReport{}, fmt.Errorf("engine: check: %w", err)
	}
	defer f.Close()
	c.f = f
	if err := c.walk(); err != nil {
		return CheckReport{}, err
	}
	if c.structural == 0 {
		if err := c.boltCheck(path); err != nil {
			return CheckReport{}, err
		}
	}
	return c.report, nil
}

// The on-disk layout of bbolt's pages (go.etcd.io/bbolt/internal/common),
// in the machine's byte order, which is little-endian on every platform
// kvd builds for.
const (
	pageHeaderLen   = 16 // id uint64, flags uint16, count uint16, overflow uint32
	pageElemLen     = 16 // branch: pos, ksize uint32, pgid uint64; leaf: flags, pos, ksize, vsize uint32
	pageBranch      = 0x01
	pageLeaf        = 0x02
	pageFreelist    = 0x10
	leafBucket      = 0x01 // leaf element flag: the value is a bucket
	bucketHeaderLen = 16   // root pgid uint64, sequence uint64
	noFreelist      = ^uint64(0)
	maxTreeDepth    = 64
)

type checker struct {
	f          *os.File
	meta       boltMeta
	seen       map[uint64]bool
	report     CheckReport
	max        int
	structural int // problems that could make bbolt fault
}

func (c *checker) problem(page uint64, key []byte, format string, args ...any) {
	if len(c.report.Problems) >= c.max {
		c.report.Truncated = true
		return
	}
	c.report.Problems = append(c.report.Problems, Problem{Page: page, Key: bytes.Clone(key), What: fmt.Sprintf(format, args...)})
}

// structuralProblem is a problem in the shape of the trees.
func (c *checker) structuralProblem(page uint64, format string, args ...any) {
	c.structural++
	c.problem(page, nil, format, args...)
}

// walk reads the meta pages, then every page of every tree.
func (c *checker) walk() error {
	var best *boltMeta
	for _, off := range []int64{0, -1} {
		if off < 0 {
			off = 4096
			if best != nil {
				off = int64(best.pageSize)
			}
		}
		buf := make([]byte, boltMetaEnd)
		if _, err := c.f.ReadAt(buf, off); err != nil {
			continue
		}
		if m, ok := parseBoltMeta(buf); ok && (best == nil || m.txid > best.txid) {
			best = &m
		}
	}
	if best == nil { // checkStateFile found one
		return fmt.Errorf("engine: check: the meta pages became unreadable")
	}
	c.meta = *best
	c.seen = map[uint64]bool{0: true, 1: true}
	if err := c.freelist(); err != nil {
		return err
	}
	// The root bucket's tree holds the buckets; meta, which tells the
	// format of the records, is checked first.
	type bucket struct {
		page        uint64
		name, value []byte
	}
	var buckets []bucket
	err := c.tree(c.meta.root, 0, func(page uint64, key, value []byte, flags uint32) error {
		if flags&leafBucket == 0 {
			c.problem(page, key, "a value in the root bucket, where only buckets belong")
			return nil
		}
		b := bucket{page, bytes.Clone(key), bytes.Clone(value)}
		if bytes.Equal(key, bucketMeta) {
			buckets = append([]bucket{b}, buckets...)
		} else {
			buckets = append(buckets, b)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, b := range buckets {
		if err := c.bucket(b.page, b.name, b.value, 1); err != nil {
			return err
		}
	}
	return nil
}

// freelist checks that the free list page lies in the file and that its
// list of ids fits in it.
func (c *checker) freelist() error {
	id := c.meta.freelist
	if id == noFreelist {
		return nil
	}
	buf, err := c.page(id, pageFreelist)
	if err != nil || buf == nil {
		return err
	}
	n := uint64(binary.LittleEndian.Uint16(buf[10:]))
	start := uint64(pageHeaderLen)
	if n == 0xFFFF {
		if len(buf) < pageHeaderLen+8 {
			c.structuralProblem(id, "free list too short for its count")
			return nil
		}
		n, start = binary.LittleEndian.Uint64(buf[pageHeaderLen:]), pageHeaderLen+8
	}
	if n > uint64(len(buf)) || start+n*8 > uint64(len(buf)) {
		c.structuralProblem(id, "free list of %d ids does not fit in its %d bytes", n, len(buf))
	}
	return nil
}

// page reads the page id, with its overflow pages, checking that it lies
// within the file, was not reached before and has one of the flags in
// want. It
// returns nil, after noting the problem, for a page it cannot use.
func (c *checker) page(id uint64, want ...uint16) ([]byte, error) {
	if id < 2 || id >= c.meta.pgid {
		c.structuralProblem(0, "reference to page %d, outside the file's pages 2 to %d", id, c.meta.pgid-1)
		return nil, nil
	}
	if c.seen[id] {
		c.structuralProblem(id, "reached twice (a cycle, or two parents)")
		return nil, nil
	}
	c.seen[id] = true
	ps := int64(c.meta.pageSize)
	buf := make([]byte, ps)
	if _, err := c.f.ReadAt(buf, int64(id)*ps); err != nil {
		return nil, fmt.Errorf("engine: check: read page %d: %w", id, err)
	}
	c.report.Pages++
	if got := binary.LittleEndian.Uint64(buf); got != id {
		c.structuralProblem(id, "its header gives id %d", got)
		return nil, nil
	}
	if flags := binary.LittleEndian.Uint16(buf[8:]); !slices.Contains(want, flags) {
		c.structuralProblem(id, "page flags %#x where a page of type %#x belongs", flags, want)
		return nil, nil
	}
	if over := uint64(binary.LittleEndian.Uint32(buf[12:])); over > 0 {
		if id+over >= c.meta.pgid {
			c.structuralProblem(id, "overflow of %d pages runs past the file's %d pages", over, c.meta.pgid)
			return nil, nil
		}
		for i := uint64(1); i <= over; i++ {
			if c.seen[id+i] {
				c.structuralProblem(id, "its overflow page %d is reached twice", id+i)
				return nil, nil
			}
			c.seen[id+i] = true
		}
		buf = make([]byte, int64(over+1)*ps)
		if _, err := c.f.ReadAt(buf, int64(id)*ps); err != nil {
			return nil, fmt.Errorf("engine: check: read page %d: %w", id, err)
		}
	}
	return buf, nil
}

// leafFunc is called for each element of a leaf page.
type leafFunc func(page uint64, key, value []byte, flags uint32) error

// tree walks the tree of pages from root, calling fn for each leaf
// element.
func (c *checker) tree(root uint64, depth int, fn leafFunc) error {
	if depth > maxTreeDepth {
		c.structuralProblem(root, "tree deeper than %d pages", maxTreeDepth)
		return nil
	}
	buf, err := c.page(root, pageBranch, pageLeaf)
	if err != nil || buf == nil {
		return err
	}
	return c.elements(root, buf, depth, fn)
}

// elements checks the elements of page id, whose bytes are buf, and goes
// on to its children (a branch page) or calls fn (a leaf page).
func (c *checker) elements(id uint64, buf []byte, depth int, fn leafFunc) error {
	flags := binary.LittleEndian.Uint16(buf[8:])
	count := int(binary.LittleEndian.Uint16(buf[10:]))
	if pageHeaderLen+count*pageElemLen > len(buf) {
		c.structuralProblem(id, "%d elements do not fit in its %d bytes", count, len(buf))
		return nil
	}
	le := binary.LittleEndian
	for i := range count {
		e := pageHeaderLen + i*pageElemLen
		if flags&pageBranch != 0 {
			pos, ksize, child := uint64(le.Uint32(buf[e:])), uint64(le.Uint32(buf[e+4:])), le.Uint64(buf[e+8:])
			if uint64(e)+pos+ksize > uint64(len(buf)) {
				c.structuralProblem(id, "branch element %d: key at %d+%d past the page's %d bytes", i, e+int(pos), ksize, len(buf))
				continue
			}
			if err := c.tree(child, depth+1, fn); err != nil {
				return err
			}
			continue
		}
		eflags, pos, ksize, vsize := le.Uint32(buf[e:]), uint64(le.Uint32(buf[e+4:])), uint64(le.Uint32(buf[e+8:])), uint64(le.Uint32(buf[e+12:]))
		if uint64(e)+pos+ksize+vsize > uint64(len(buf)) {
			c.structuralProblem(id, "leaf element %d: key and value at %d+%d+%d past the page's %d bytes", i, e+int(pos), ksize, vsize, len(buf))
			continue
		}
		k := buf[uint64(e)+pos : uint64(e)+pos+ksize]
		v := buf[uint64(e)+pos+ksize : uint64(e)+pos+ksize+vsize]
		if err := fn(id, k, v, eflags); err != nil {
			return err
		}
	}
	return nil
}

// bucket checks the bucket name whose header value is on page: the value
// records of "kv", the format in "meta", and any other bucket's pages.
func (c *checker) bucket(page uint64, name, value []byte, depth int) error {
	if len(value) < bucketHeaderLen {
		c.structuralProblem(page, "bucket %q: header of %d bytes", name, len(value))
		return nil
	}
	var fn leafFunc
	switch {
	case depth == 1 && bytes.Equal(name, bucketKV):
		fn = func(page uint64, key, rec []byte, flags uint32) error {
			if flags&leafBucket != 0 {
				c.problem(page, key, "a bucket in the kv bucket")
				return nil
			}
			c.report.Keys++
			decode := decodeRecord
			switch c.report.Format {
			case stateFormatV1:
				return nil // bare values: nothing to check
			case stateFormatV2:
				decode = decodeRecordV2
			}
			if _, ok := decode(key, rec); !ok {
				c.problem(page, key, "value record does not match its checksum (%d bytes)", len(rec))
			}
			return nil
		}
	default:
		fn = func(page uint64, key, v []byte, flags uint32) error {
			if flags&leafBucket != 0 {
				return c.bucket(page, key, v, depth+1)
			}
			if depth == 1 && bytes.Equal(name, bucketMeta) && bytes.Equal(key, keyFormat) {
				c.report.Format = string(v)
			}
			return nil
		}
	}
	if root := binary.LittleEndian.Uint64(value); root != 0 {
		return c.tree(root, depth, fn)
	}
	// An inline bucket: its one leaf page follows the header.
	inline := value[bucketHeaderLen:]
	if len(inline) < pageHeaderLen || binary.LittleEndian.Uint16(inline[8:]) != pageLeaf {
		c.structuralProblem(page, "bucket %q: inline page is not a leaf page", name)
		return nil
	}
	return c.elements(page, inline, depth, fn)
}

// boltCheck opens the file read-only with bbolt and runs its consistency
// check, after walk found the pages sound enough for bbolt to read.
// bbolt's check runs in a goroutine of its own, which SetPanicOnFault
// cannot cover: that is why it runs only then.
func (c *checker) boltCheck(path string) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if !stateFault(r) {
				panic(r)
			}
			c.problem(0, nil, "bbolt: %v", r)
		}
	}()
	bdb, err := bolt.Open(path, 0o640, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return fmt.Errorf("%w: its state file is open", ErrLocked)
	}
	if err != nil {
		c.problem(0, nil, "bbolt cannot open it: %v", err)
		return nil
	}
	defer bdb.Close()
	return bdb.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			c.problem(0, nil, "bbolt: %v", err)
		}
		return nil
	})
}
