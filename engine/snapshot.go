package engine

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// A snapshot (format KVDSNAP, version 1) is the whole store at one revision
// R, as one stream: backups, restores and replication's snapshots use it.
//
//	+--------------------------------------------------------------------+
//	| header                                                             |
//	|   magic "KVDSNAP\n" | version uint16 | revision R uint64           |
//	|   state bytes uint64 | delta bytes uint64 | delta entries uint64   |
//	|   metadata length uint32 | metadata | crc32c of the header uint32  |
//	+--------------------------------------------------------------------+
//	| state section: the state file (bbolt) at its checkpoint C <= R,     |
//	|   as a read transaction writes it (Tx.WriteTo)                     |
//	+--------------------------------------------------------------------+
//	| delta section: the memtables' entries, C+1..R, in key order, each  |
//	|   framed: length uint32 | crc32c uint32 | entry                    |
//	|   entry: flags uint8 (1 deletion, 2 inherits its create revision)  |
//	|          | key length uvarint | key | batch time varint (ms)        |
//	|          | the key's value record (record.go), none for a deletion |
//	+--------------------------------------------------------------------+
//	| trailer: sha256 of everything before it (32 bytes)                 |
//	+--------------------------------------------------------------------+
//
// Integers are big-endian. The metadata is opaque to the engine: the caller
// of Snapshot.SetMetadata (replication puts its log index, term and
// configuration there) reads it back from SnapshotInfo.Metadata. Installing
// a snapshot applies the delta to the state section as a checkpoint would,
// and records R as the applied revision.
const (
	snapshotMagic   = "KVDSNAP\n"
	snapshotVersion = 1
	// snapshotFixedHeader is the header without metadata: magic, version,
	// revision, three sizes, metadata length, crc.
	snapshotFixedHeader = 8 + 2 + 8 + 8 + 8 + 8 + 4 + 4
	snapshotTrailer     = sha256.Size
	// maxSnapshotMetadata bounds the metadata field.
	maxSnapshotMetadata = 64 << 20
	// maxDeltaEntry bounds one framed delta entry: a key, a record header
	// and a value far above the largest value kvd accepts.
	maxDeltaEntry = 1 << 30

	deltaDel     = 1
	deltaInherit = 2
)

// ErrBadSnapshot is returned by ReadSnapshotInfo, RestoreSnapshot and
// DB.Restore for a stream that is not a whole, intact snapshot: a wrong
// magic or version, a short (torn) stream, or a checksum that does not
// match. Nothing is installed then.
var ErrBadSnapshot = errors.New("engine: bad snapshot")

// Snapshot is the store captured at one revision, ready to be streamed with
// WriteTo. It holds a read transaction on the state file until Close: a
// checkpoint that must grow the state file's memory map waits for it (the
// writes go on into the memtable meanwhile, up to MaxMemtableBytes), so
// close a snapshot promptly, and before closing the DB.
//
// A restore (DB.Restore, DB.RestoreReplica) cancels the snapshots still
// open instead of waiting for them to close: it ends their transactions,
// once a WriteTo or StateHash running has stopped at its next write or key,
// and they return ErrSnapshotCanceled from then on. Waiting could deadlock:
// Raft's FSM installs a snapshot while a snapshot of its own, taken
// earlier, waits for Raft's main loop, which waits for the install.
//
// A Snapshot's methods are not safe for concurrent use, except Close.
type Snapshot struct {
	db        *DB
	rev       uint64
	stateSize int64 // the state section's bytes: the transaction's Tx.Size
	delta     []snapEntry
	deltaLen  int64
	meta      []byte
	written   bool

	// mu is held while the transaction is read, and to end it: by WriteTo,
	// StateHash, Close and a restore's cancel.
	mu       sync.Mutex
	tx       *bolt.Tx // nil once closed or canceled
	canceled atomic.Bool
}

// ErrSnapshotCanceled is returned by a Snapshot's WriteTo and StateHash
// once a restore replaced the store it was taken of.
var ErrSnapshotCanceled = errors.New("engine: snapshot canceled: a restore replaced the store")

// use returns the snapshot's transaction with mu held, or an error (mu
// not held) once it was closed or canceled.
func (s *Snapshot) use() (*bolt.Tx, error) {
	s.mu.Lock()
	if s.tx == nil {
		s.mu.Unlock()
		if s.canceled.Load() {
			return nil, ErrSnapshotCanceled
		}
		return nil, errors.New("engine: snapshot closed")
	}
	return s.tx, nil
}

// cancel ends the transaction of a snapshot still open, waiting for a
// WriteTo or StateHash running to stop (they check canceled at each write
// or key).
func (s *Snapshot) cancel() {
	s.canceled.Store(true)
	s.end()
}

// end ends the snapshot's transaction, once a WriteTo or StateHash running
// has returned.
func (s *Snapshot) end() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tx != nil {
		s.tx.Rollback()
		s.tx = nil
	}
}

// cancelSnapshots cancels every snapshot still open. Called by a restore
// before it closes the state file, with smu held (no snapshot begins
// meanwhile).
func (db *DB) cancelSnapshots() {
	db.snapMu.Lock()
	open := make([]*Snapshot, 0, len(db.snaps))
	for s := range db.snaps {
		open = append(open, s)
	}
	db.snapMu.Unlock()
	for _, s := range open {
		s.cancel()
	}
}

// snapEntry is one memtable entry of a snapshot's delta.
type snapEntry struct {
	key string
	e   memEntry
}

// Snapshot captures the store at its newest applied revision R. It is cheap:
// under the memtables' lock it copies the memtables' entries (O(memtable),
// sharing their values, which are never written in place) and begins a read
// transaction on the state file, whose checkpoint holds every revision the
// copied memtables do not. The revision R may not be durable yet: call
// Sync first or after to make it so.
func (db *DB) Snapshot() (*Snapshot, error) {
	db.smu.Lock()
	defer db.smu.Unlock()
	if db.active == nil {
		return nil, ErrClosed
	}
	tx, err := db.bdb.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("engine: snapshot: %w", err)
	}
	s := &Snapshot{db: db, tx: tx, rev: db.memRev.Load(), stateSize: tx.Size()}
	db.snapMu.Lock()
	if db.snaps == nil {
		db.snaps = map[*Snapshot]struct{}{}
	}
	db.snaps[s] = struct{}{}
	db.snapMu.Unlock()
	// The frozen memtable, if a checkpoint is committing it, may or may
	// not be in the transaction's state: its entries are then written
	// again by the delta, which applying them twice leaves unchanged.
	merged := make(map[string]memEntry, db.active.len())
	if db.frozen != nil {
		for k, e := range db.frozen.byKey {
			merged[k] = *e
		}
	}
	for k, e := range db.active.byKey {
		top := *e
		if below, ok := merged[k]; ok && top.inherit && !top.del {
			// As lookupLocked resolves a key over the frozen memtable.
			if top.inheritsFrom(below) {
				top.create, top.inherit, top.at = below.create, below.inherit, below.at
			} else {
				top.inherit = false
			}
		}
		merged[k] = top
	}
	s.delta = make([]snapEntry, 0, len(merged))
	for k, e := range merged {
		s.delta = append(s.delta, snapEntry{k, e})
		s.deltaLen += int64(deltaFrameLen(k, e))
	}
	slices.SortFunc(s.delta, func(a, b snapEntry) int { return strings.Compare(a.key, b.key) })
	return s, nil
}

// Revision returns R, the revision the snapshot holds the store at.
func (s *Snapshot) Revision() uint64 { return s.rev }

// SetMetadata sets the opaque metadata written in the snapshot's header;
// call it before Size and WriteTo. The snapshot keeps meta.
func (s *Snapshot) SetMetadata(meta []byte) error {
	if len(meta) > maxSnapshotMetadata {
		return fmt.Errorf("engine: snapshot metadata of %d bytes exceeds %d", len(meta), maxSnapshotMetadata)
	}
	s.meta = meta
	return nil
}

// Size returns the exact number of bytes WriteTo writes.
func (s *Snapshot) Size() int64 {
	return int64(snapshotFixedHeader+len(s.meta)) + s.stateSize + s.deltaLen + snapshotTrailer
}

// Keys returns the number of entries in the snapshot's delta section.
func (s *Snapshot) deltaEntries() int { return len(s.delta) }

// WriteTo streams the snapshot to w. It may be called once.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
	if s.written {
		return 0, errors.New("engine: snapshot already written")
	}
	s.written = true
	tx, err := s.use()
	if err != nil {
		return 0, err
	}
	defer s.mu.Unlock()
	sum := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, sum), canceled: &s.canceled}
	bw := bufio.NewWriterSize(cw, 256<<10)
	if _, err := bw.Write(s.header()); err != nil {
		return cw.n, fmt.Errorf("engine: write snapshot: %w", err)
	}
	if _, err := tx.WriteTo(bw); err != nil {
		return cw.n, fmt.Errorf("engine: write snapshot state: %w", err)
	}
	var buf []byte
	for _, d := range s.delta {
		buf = appendDeltaFrame(buf[:0], d.key, d.e)
		if _, err := bw.Write(buf); err != nil {
			return cw.n, fmt.Errorf("engine: write snapshot delta: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return cw.n, fmt.Errorf("engine: write snapshot: %w", err)
	}
	n, err := w.Write(sum.Sum(nil))
	cw.n += int64(n)
	if err != nil {
		return cw.n, fmt.Errorf("engine: write snapshot trailer: %w", err)
	}
	return cw.n, nil
}

// Close ends the snapshot's read transaction. It is idempotent and safe to
// call from any goroutine once WriteTo has returned.
func (s *Snapshot) Close() error {
	s.end()
	s.db.snapMu.Lock()
	delete(s.db.snaps, s)
	s.db.snapMu.Unlock()
	return nil
}

func (s *Snapshot) header() []byte {
	h := make([]byte, 0, snapshotFixedHeader+len(s.meta))
	h = append(h, snapshotMagic...)
	h = binary.BigEndian.AppendUint16(h, snapshotVersion)
	h = binary.BigEndian.AppendUint64(h, s.rev)
	h = binary.BigEndian.AppendUint64(h, uint64(s.stateSize))
	h = binary.BigEndian.AppendUint64(h, uint64(s.deltaLen))
	h = binary.BigEndian.AppendUint64(h, uint64(len(s.delta)))
	h = binary.BigEndian.AppendUint32(h, uint32(len(s.meta)))
	h = append(h, s.meta...)
	return binary.BigEndian.AppendUint32(h, crc32.Checksum(h, castagnoli))
}

func deltaEntryLen(key string, e memEntry) int {
	n := 1 + uvarintLen(uint64(len(key))) + len(key) + varintLen(e.at)
	if !e.del {
		n += recordHeaderLen + len(e.value)
	}
	return n
}

func deltaFrameLen(key string, e memEntry) int { return 8 + deltaEntryLen(key, e) }

func appendDeltaFrame(dst []byte, key string, e memEntry) []byte {
	f0 := len(dst)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0)
	p0 := len(dst)
	var flags byte
	if e.del {
		flags |= deltaDel
	}
	if e.inherit {
		flags |= deltaInherit
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	dst = append(dst, key...)
	dst = binary.AppendVarint(dst, e.at)
	if !e.del {
		dst = appendRecord(dst, []byte(key), e.create, e.mod, e.expires, e.value)
	}
	binary.BigEndian.PutUint32(dst[f0:], uint32(len(dst)-p0))
	binary.BigEndian.PutUint32(dst[f0+4:], crc32.Checksum(dst[p0:], castagnoli))
	return dst
}

// decodeDeltaEntry decodes the payload of a delta frame whose checksum was
// checked.
func decodeDeltaEntry(p []byte) (key []byte, e memEntry, err error) {
	bad := fmt.Errorf("%w: malformed delta entry", ErrBadSnapshot)
	if len(p) < 1 {
		return nil, e, bad
	}
	flags := p[0]
	p = p[1:]
	kl, n := binary.Uvarint(p)
	if n <= 0 || kl == 0 || kl > uint64(len(p)-n) {
		return nil, e, bad
	}
	key = p[n : n+int(kl)]
	p = p[n+int(kl):]
	at, n := binary.Varint(p)
	if n <= 0 {
		return nil, e, bad
	}
	p = p[n:]
	if flags&deltaDel != 0 {
		if len(p) != 0 {
			return nil, e, bad
		}
		return key, memEntry{del: true, at: at}, nil
	}
	e, ok := decodeRecord(key, p)
	if !ok {
		return nil, e, bad
	}
	e.at = at
	e.inherit = flags&deltaInherit != 0
	return key, e, nil
}

func uvarintLen(v uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], v)
}

func varintLen(v int64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutVarint(b[:], v)
}

type countWriter struct {
	w io.Writer
	n int64
	// canceled, if set, stops the writes once true (a restore canceled
	// the snapshot being written).
	canceled *atomic.Bool
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.canceled != nil && c.canceled.Load() {
		return 0, ErrSnapshotCanceled
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// SnapshotInfo describes a snapshot stream, as ReadSnapshotInfo found it.
type SnapshotInfo struct {
	Version      int
	Revision     uint64
	Size         int64 // bytes of the whole stream
	StateBytes   int64
	DeltaBytes   int64
	DeltaEntries int64
	Keys         int64 // keys of the store at Revision, expired or not
	Metadata     []byte
	SHA256       [sha256.Size]byte // the trailer, verified
}

// snapshotReader reads a snapshot stream, hashing what it reads, and
// reports a short stream as ErrBadSnapshot.
type snapshotReader struct {
	r    io.Reader
	sum  hash.Hash
	info SnapshotInfo
}

func newSnapshotReader(r io.Reader) *snapshotReader {
	return &snapshotReader{r: bufio.NewReaderSize(r, 256<<10), sum: sha256.New()}
}

func (sr *snapshotReader) full(p []byte, what string) error {
	if _, err := io.ReadFull(sr.r, p); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: stream ends inside the %s (torn)", ErrBadSnapshot, what)
		}
		return fmt.Errorf("engine: read snapshot %s: %w", what, err)
	}
	sr.sum.Write(p)
	return nil
}

// header reads and checks the header.
func (sr *snapshotReader) header() error {
	h := make([]byte, snapshotFixedHeader-4)
	if err := sr.full(h, "header"); err != nil {
		return err
	}
	if string(h[:8]) != snapshotMagic {
		return fmt.Errorf("%w: not a kvd snapshot (magic %q)", ErrBadSnapshot, h[:8])
	}
	be := binary.BigEndian
	if v := be.Uint16(h[8:]); v != snapshotVersion {
		return fmt.Errorf("%w: format version %d, this build reads %d", ErrBadSnapshot, v, snapshotVersion)
	}
	metaLen := be.Uint32(h[42:])
	if metaLen > maxSnapshotMetadata {
		return fmt.Errorf("%w: metadata of %d bytes", ErrBadSnapshot, metaLen)
	}
	rest := make([]byte, int(metaLen)+4)
	if err := sr.full(rest, "header"); err != nil {
		return err
	}
	crc := crc32.Update(crc32.Checksum(h, castagnoli), castagnoli, rest[:metaLen])
	if crc != be.Uint32(rest[metaLen:]) {
		return fmt.Errorf("%w: header checksum mismatch", ErrBadSnapshot)
	}
	i := &sr.info
	i.Version = snapshotVersion
	i.Revision = be.Uint64(h[10:])
	i.StateBytes = int64(be.Uint64(h[18:]))
	i.DeltaBytes = int64(be.Uint64(h[26:]))
	i.DeltaEntries = int64(be.Uint64(h[34:]))
	if i.StateBytes < 0 || i.DeltaBytes < 0 || i.DeltaEntries < 0 {
		return fmt.Errorf("%w: section size out of range", ErrBadSnapshot)
	}
	i.Metadata = rest[:metaLen:metaLen]
	i.Size = int64(snapshotFixedHeader+int(metaLen)) + i.StateBytes + i.DeltaBytes + snapshotTrailer
	return nil
}

// state copies the state section to w.
func (sr *snapshotReader) state(w io.Writer) error {
	n, err := io.Copy(io.MultiWriter(w, sr.sum), io.LimitReader(sr.r, sr.info.StateBytes))
	if err != nil {
		return fmt.Errorf("engine: read snapshot state: %w", err)
	}
	if n != sr.info.StateBytes {
		return fmt.Errorf("%w: stream ends inside the state section (torn)", ErrBadSnapshot)
	}
	return nil
}

// delta reads the delta section and calls fn for each entry; the key is
// valid during the call only, the entry's value for good.
func (sr *snapshotReader) delta(fn func(key []byte, e memEntry)) error {
	left := sr.info.DeltaBytes
	var hdr [8]byte
	var entries int64
	for left > 0 {
		if left < 8 {
			return fmt.Errorf("%w: delta section ends inside a frame", ErrBadSnapshot)
		}
		if err := sr.full(hdr[:], "delta section"); err != nil {
			return err
		}
		n := int64(binary.BigEndian.Uint32(hdr[:]))
		if n > maxDeltaEntry || n > left-8 {
			return fmt.Errorf("%w: delta frame of %d bytes overruns its section", ErrBadSnapshot, n)
		}
		p := make([]byte, n)
		if err := sr.full(p, "delta section"); err != nil {
			return err
		}
		if crc32.Checksum(p, castagnoli) != binary.BigEndian.Uint32(hdr[4:]) {
			return fmt.Errorf("%w: delta frame checksum mismatch", ErrBadSnapshot)
		}
		key, e, err := decodeDeltaEntry(p)
		if err != nil {
			return err
		}
		fn(key, e)
		entries++
		left -= 8 + n
	}
	if entries != sr.info.DeltaEntries {
		return fmt.Errorf("%w: %d delta entries, header says %d", ErrBadSnapshot, entries, sr.info.DeltaEntries)
	}
	return nil
}

// trailer reads the sha256 trailer and checks it against what was read.
func (sr *snapshotReader) trailer() error {
	want := sr.sum.Sum(nil)
	var got [sha256.Size]byte
	if _, err := io.ReadFull(sr.r, got[:]); err != nil {
		return fmt.Errorf("%w: stream ends inside the trailer (torn)", ErrBadSnapshot)
	}
	if !bytes.Equal(want, got[:]) {
		return fmt.Errorf("%w: sha256 mismatch: the stream was damaged", ErrBadSnapshot)
	}
	if n, _ := io.ReadFull(sr.r, got[:1]); n != 0 {
		return fmt.Errorf("%w: bytes after the trailer", ErrBadSnapshot)
	}
	sr.info.SHA256 = got
	return nil
}

// ReadSnapshotInfo reads a whole snapshot stream and returns what it holds,
// after checking its header, every delta frame and its sha256 trailer:
// a torn or damaged stream gives ErrBadSnapshot. It copies the state
// section into a temporary file to count the keys, and removes it.
func ReadSnapshotInfo(r io.Reader) (SnapshotInfo, error) {
	tmp, err := os.MkdirTemp("", "kvd-snapinfo-")
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("engine: snapshot info: %w", err)
	}
	defer os.RemoveAll(tmp)
	sr, err := stageSnapshot(r, filepath.Join(tmp, "state.db"), false, nil)
	if err != nil {
		return SnapshotInfo{}, err
	}
	return sr.info, nil
}

// stageSnapshot reads the snapshot stream r into a bbolt file at path: the
// state section, then (once the trailer verifies) the delta applied as a
// checkpoint would, with the snapshot's revision as the applied revision.
// With durable the file is fsynced. It returns the reader, whose info
// has Keys set. On error the file may exist and should be removed.
//
// With replicaIndex set, the file is a replica's: replicaIndex gives, from
// the snapshot's metadata, the log index the file holds the store at.
func stageSnapshot(r io.Reader, path string, durable bool, replicaIndex func(meta []byte) (uint64, error)) (*snapshotReader, error) {
	sr := newSnapshotReader(r)
	if err := sr.header(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, fmt.Errorf("engine: stage snapshot: %w", err)
	}
	err = sr.state(f)
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("engine: stage snapshot: %w", cerr)
	}
	if err != nil {
		return nil, err
	}
	delta := newMemtable()
	if err := sr.delta(func(key []byte, e memEntry) { delta.set(key, e) }); err != nil {
		return nil, err
	}
	if err := sr.trailer(); err != nil {
		return nil, err
	}
	if err := checkStateFile(path); err != nil {
		return nil, fmt.Errorf("%w: its state section: %w", ErrBadSnapshot, err)
	}
	bdb, err := bolt.Open(path, 0o640, &bolt.Options{FreelistType: bolt.FreelistMapType, NoSync: !durable})
	if err != nil {
		return nil, fmt.Errorf("%w: its state section does not open: %w", ErrBadSnapshot, err)
	}
	defer bdb.Close()
	// A minimal DB, for the checkpoint's transaction and its reports.
	stub := &DB{log: slog.New(slog.DiscardHandler), noHistory: true}
	err = stub.readState(nil, func() {
		err = bdb.Update(func(tx *bolt.Tx) error {
			for _, b := range [][]byte{bucketKV, bucketMeta} {
				if tx.Bucket(b) == nil {
					return fmt.Errorf("%w: its state section has no bucket %q", ErrBadSnapshot, b)
				}
			}
			if f := tx.Bucket(bucketMeta).Get(keyFormat); string(f) != stateFormat {
				return fmt.Errorf("%w: its state section has format %q, want %q", ErrBadSnapshot, f, stateFormat)
			}
			if _, err := tx.CreateBucketIfNotExists(bucketExpiry); err != nil {
				return err
			}
			var keys, n int64
			if err := stub.checkpointTx(delta, sr.info.Revision, 0, &keys, &n)(tx); err != nil {
				return err
			}
			// The change history goes on after R: the snapshot holds the
			// changes of no revision after its state section's checkpoint.
			if replicaIndex != nil {
				index, err := replicaIndex(sr.info.Metadata)
				if err != nil {
					return fmt.Errorf("%w: %w", ErrBadSnapshot, err)
				}
				if err := tx.Bucket(bucketMeta).Put(keyAppliedIndex, binary.BigEndian.AppendUint64(nil, index)); err != nil {
					return err
				}
			}
			return restartHistory(tx.Bucket(bucketMeta), sr.info.Revision+1)
		})
		if err == nil {
			err = bdb.View(func(tx *bolt.Tx) error {
				c := tx.Bucket(bucketKV).Cursor()
				for k, _ := c.First(); k != nil; k, _ = c.Next() {
					sr.info.Keys++
				}
				return nil
			})
		}
	})
	if err != nil {
		if !errors.Is(err, ErrBadSnapshot) {
			err = fmt.Errorf("%w: %w", ErrBadSnapshot, err)
		}
		return nil, err
	}
	return sr, nil
}
