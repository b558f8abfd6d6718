package kvtest

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// BoltPage is a page of the tree of a bucket in a bbolt file, as
// StatePages finds it. Offsets are from the start of the file.
type BoltPage struct {
	ID       uint64
	Offset   int64 // of the page header: id uint64, flags uint16, count uint16, overflow uint32
	Branch   bool  // a branch page (flags 0x01); else a leaf page (0x02)
	Count    int
	Depth    int      // 0 for the bucket's root page
	Keys     [][]byte // the keys of its elements, in order
	Children []uint64 // a branch page's child pages, in order
}

// Field offsets within a page, from its Offset.
const (
	PageFlagsOff    = 8
	PageCountOff    = 10
	PageOverflowOff = 12
	pageHeaderLen   = 16
	pageElemLen     = 16
)

// BranchElemOff returns the offset in the file of element i of branch page
// p: pos uint32, ksize uint32, pgid uint64.
func (p BoltPage) BranchElemOff(i int) int64 { return p.Offset + pageHeaderLen + int64(i)*pageElemLen }

// LeafValueOff returns the offset in the file of the value of element i of
// leaf page p (elements are flags, pos, ksize, vsize uint32).
func (p BoltPage) LeafValueOff(t testing.TB, f []byte, i int) int64 {
	t.Helper()
	e := p.Offset + pageHeaderLen + int64(i)*pageElemLen
	pos := int64(binary.LittleEndian.Uint32(f[e+4:]))
	ksize := int64(binary.LittleEndian.Uint32(f[e+8:]))
	return e + pos + ksize
}

// StatePages parses the bbolt file at path, which must be sound, and
// returns the pages of the tree of its top-level bucket named bucket,
// root first, then depth first; and the file's bytes. It reads bbolt's
// on-disk layout itself (little-endian), so that tests can damage chosen
// fields of chosen pages.
func StatePages(t testing.TB, path, bucket string) ([]BoltPage, []byte) {
	t.Helper()
	f, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	// Meta page 0 (the first page), or 1 if newer: page size at 24, root
	// bucket's page at 32, txid at 64 (after the 16-byte page header).
	ps := int64(le.Uint32(f[24:]))
	meta := f[16:]
	if m1 := f[ps+16:]; le.Uint64(m1[48:]) > le.Uint64(meta[48:]) {
		meta = m1
	}
	root := le.Uint64(meta[16:])
	var broot uint64
	walk(t, f, ps, root, 0, func(page BoltPage) {}, func(k, v []byte, flags uint32) {
		if flags&1 != 0 && string(k) == bucket {
			broot = le.Uint64(v)
		}
	})
	if broot == 0 {
		t.Fatalf("%s: bucket %q not found, or inline", path, bucket)
	}
	var pages []BoltPage
	walk(t, f, ps, broot, 0, func(p BoltPage) { pages = append(pages, p) }, func(k, v []byte, flags uint32) {})
	return pages, f
}

func walk(t testing.TB, f []byte, ps int64, id uint64, depth int, page func(BoltPage), leaf func(k, v []byte, flags uint32)) {
	t.Helper()
	le := binary.LittleEndian
	off := int64(id) * ps
	b := f[off:]
	p := BoltPage{ID: id, Offset: off, Depth: depth, Count: int(le.Uint16(b[PageCountOff:]))}
	switch flags := le.Uint16(b[PageFlagsOff:]); flags {
	case 1:
		p.Branch = true
	case 2:
	default:
		t.Fatalf("page %d: flags %#x", id, flags)
	}
	for i := range p.Count {
		e := b[pageHeaderLen+i*pageElemLen:]
		if p.Branch {
			pos, ksize := le.Uint32(e), le.Uint32(e[4:])
			p.Keys = append(p.Keys, bytes.Clone(e[pos:pos+ksize]))
			p.Children = append(p.Children, le.Uint64(e[8:]))
			continue
		}
		flags, pos, ksize, vsize := le.Uint32(e), le.Uint32(e[4:]), le.Uint32(e[8:]), le.Uint32(e[12:])
		k := e[pos : pos+ksize]
		p.Keys = append(p.Keys, bytes.Clone(k))
		leaf(k, e[pos+ksize:pos+ksize+vsize], flags)
	}
	page(p)
	for _, c := range p.Children {
		walk(t, f, ps, c, depth+1, page, leaf)
	}
}

// XorFile xors the byte at off of the file at path with mask.
func XorFile(t testing.TB, path string, off int64, mask byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= mask
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// DamageValue replaces the value record of key in the state file
// (state.db, bucket "kv") of the closed store in dir with what damage
// returns for it, through bbolt, so that the file stays sound and only the
// record is wrong.
func DamageValue(t testing.TB, dir, key string, damage func(k, rec []byte) []byte) {
	t.Helper()
	bdb, err := bolt.Open(filepath.Join(dir, "state.db"), 0o640, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = bdb.Update(func(tx *bolt.Tx) error {
		kv := tx.Bucket([]byte("kv"))
		rec := bytes.Clone(kv.Get([]byte(key)))
		if rec == nil {
			t.Fatalf("no record of %s", key)
		}
		return kv.Put([]byte(key), damage([]byte(key), rec))
	})
	if cerr := bdb.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// FlipLastBit is a DamageValue damage: it flips the lowest bit of the
// record's last byte (of the value, unless it is empty).
func FlipLastBit(_, rec []byte) []byte {
	rec[len(rec)-1] ^= 0x01
	return rec
}
