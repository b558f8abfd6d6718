package engine_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
)

// histOp is one acknowledged write of a test's history.
type histOp struct {
	rev uint64
	key string
	val string // "" for a deletion
}

// stateAt replays a history up to rev and returns the state it leaves, as
// sorted "key=value create mod" lines.
func stateAt(hist []histOp, rev uint64) []string {
	type ent struct {
		val         string
		create, mod uint64
	}
	m := map[string]ent{}
	for _, op := range hist {
		if op.rev > rev {
			continue
		}
		if op.val == "" {
			delete(m, op.key)
			continue
		}
		e, ok := m[op.key]
		if !ok {
			e.create = op.rev
		}
		e.val, e.mod = op.val, op.rev
		m[op.key] = e
	}
	var out []string
	for k, e := range m {
		out = append(out, fmt.Sprintf("%s=%s %d %d", k, e.val, e.create, e.mod))
	}
	slices.Sort(out)
	return out
}

// dbState returns db's state in stateAt's form.
func dbState(t testing.TB, db *engine.DB) []string {
	t.Helper()
	kvs, err := db.Scan(engine.ScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range kvs {
		out = append(out, fmt.Sprintf("%s=%s %d %d", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision))
	}
	slices.Sort(out)
	return out
}

func stateHash(lines []string) string {
	h := sha256.New()
	for _, l := range lines {
		fmt.Fprintln(h, l)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// writeLoad writes puts and deletes on a small key space until stop is
// closed, and returns the acknowledged history.
func writeLoad(t testing.TB, db *engine.DB, seed uint64, stop <-chan struct{}) func() []histOp {
	var hist []histOp
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := rand.New(rand.NewPCG(seed, 1))
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := fmt.Sprintf("k%03d", r.IntN(300))
			var rev uint64
			var err error
			var v string
			if r.IntN(5) == 0 {
				rev, err = db.Delete([]byte(k), engine.WriteOptions{})
			} else {
				v = fmt.Sprintf("v%d-%s", i, bytes.Repeat([]byte{'x'}, r.IntN(200)))
				rev, err = db.Put([]byte(k), []byte(v), engine.WriteOptions{})
			}
			if err != nil {
				t.Error(err)
				return
			}
			hist = append(hist, histOp{rev, k, v})
		}
	}()
	return func() []histOp { <-done; return hist }
}

func snapshotBytes(t testing.TB, db *engine.DB, meta []byte) ([]byte, uint64) {
	t.Helper()
	s, err := db.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SetMetadata(meta); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	n, err := s.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != s.Size() || int64(buf.Len()) != s.Size() {
		t.Fatalf("WriteTo wrote %d bytes (buffer %d), Size said %d", n, buf.Len(), s.Size())
	}
	return buf.Bytes(), s.Revision()
}

// TestSnapshotUnderWrites takes snapshots while writes and checkpoints run,
// restores each into a fresh directory, and compares the restored state
// with the source's history replayed up to the snapshot's revision.
func TestSnapshotUnderWrites(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	db := open(t, t.TempDir(), engine.Options{
		CommitMode:         engine.CommitAsync,
		CheckpointInterval: time.Millisecond,
		CheckpointBytes:    16 << 10,
	})
	stop := make(chan struct{})
	hist := writeLoad(t, db, seed, stop)
	type snap struct {
		b   []byte
		rev uint64
	}
	var snaps []snap
	for len(snaps) < 4 {
		time.Sleep(20 * time.Millisecond) // let writes and checkpoints happen between snapshots
		b, rev := snapshotBytes(t, db, []byte("meta"))
		snaps = append(snaps, snap{b, rev})
	}
	close(stop)
	h := hist()
	for i, s := range snaps {
		dir := filepath.Join(t.TempDir(), "restored")
		info, err := engine.RestoreSnapshot(bytes.NewReader(s.b), dir)
		if err != nil {
			t.Fatal(err)
		}
		if info.Revision != s.rev || string(info.Metadata) != "meta" {
			t.Fatalf("snapshot %d: info %+v, want revision %d", i, info, s.rev)
		}
		want := stateAt(h, s.rev)
		if info.Keys != int64(len(want)) {
			t.Errorf("snapshot %d: info says %d keys, want %d", i, info.Keys, len(want))
		}
		rdb := open(t, dir, engine.Options{})
		got := dbState(t, rdb)
		if stateHash(got) != stateHash(want) {
			t.Fatalf("snapshot %d at revision %d: restored state differs from the history's\ngot  %d keys %.5q\nwant %d keys %.5q", i, s.rev, len(got), got, len(want), want)
		}
		if rev := mustPut(t, rdb, "after", "x"); rev != s.rev+1 {
			t.Fatalf("first write after restoring revision %d got revision %d", s.rev, rev)
		}
		rdb.Close()
	}
}

// TestSnapshotDamageRefused checks that every torn or bit-flipped copy of a
// snapshot is refused, by ReadSnapshotInfo and by RestoreSnapshot.
func TestSnapshotDamageRefused(t *testing.T) {
	// Part checkpointed, part in the memtable, with deletions.
	dir := t.TempDir()
	db2 := open(t, dir, engine.Options{})
	for i := range 300 {
		mustPut(t, db2, fmt.Sprintf("b%03d", i), fmt.Sprintf("value %d", i))
	}
	db2.Close()
	db2 = open(t, dir, engine.Options{})
	for i := range 50 {
		if _, err := db2.Delete([]byte(fmt.Sprintf("b%03d", i)), engine.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		mustPut(t, db2, fmt.Sprintf("c%03d", i), "new")
	}
	good, _ := snapshotBytes(t, db2, []byte("m"))
	if _, err := engine.ReadSnapshotInfo(bytes.NewReader(good)); err != nil {
		t.Fatalf("intact snapshot refused: %v", err)
	}
	refused := func(what string, bad []byte) {
		t.Helper()
		if _, err := engine.ReadSnapshotInfo(bytes.NewReader(bad)); !errors.Is(err, engine.ErrBadSnapshot) {
			t.Fatalf("%s: ReadSnapshotInfo: %v, want ErrBadSnapshot", what, err)
		}
		dir := filepath.Join(t.TempDir(), "r")
		if _, err := engine.RestoreSnapshot(bytes.NewReader(bad), dir); !errors.Is(err, engine.ErrBadSnapshot) {
			t.Fatalf("%s: RestoreSnapshot: %v, want ErrBadSnapshot", what, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "state.db")); err == nil {
			t.Fatalf("%s: a refused restore left a state file", what)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	cuts := []int{0, 1, 8, 50, len(good) / 2, len(good) - 33, len(good) - 32, len(good) - 1}
	for range 20 {
		cuts = append(cuts, r.IntN(len(good)))
	}
	for _, n := range cuts {
		refused(fmt.Sprintf("torn at %d of %d", n, len(good)), good[:n])
	}
	refused("with a byte more", append(slices.Clone(good), 0))
	// Bit flips: in the header, the state section, the delta and the trailer.
	pos := []int{0, 9, 20, 45, 60, 4096, len(good) / 2, len(good) - 200, len(good) - 40, len(good) - 1}
	for range 30 {
		pos = append(pos, r.IntN(len(good)))
	}
	for _, p := range pos {
		bad := slices.Clone(good)
		bad[p] ^= 1 << r.IntN(8)
		refused(fmt.Sprintf("bit flipped at %d of %d", p, len(good)), bad)
	}
}

// TestRestoreOnline replaces an open store's content with a snapshot and
// checks the state, the revisions after it, and a reopen.
func TestRestoreOnline(t *testing.T) {
	dir := t.TempDir()
	db, err := engine.Open(dir, engine.Options{CheckpointInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { db.Close() }()
	var hist []histOp
	put := func(k, v string) {
		hist = append(hist, histOp{mustPut(t, db, k, v), k, v})
	}
	for i := range 100 {
		put(fmt.Sprintf("k%03d", i), "one")
	}
	b, rev := snapshotBytes(t, db, nil)
	want := stateAt(hist, rev)
	for i := range 150 {
		put(fmt.Sprintf("k%03d", i), "two")
	}
	var mu sync.Mutex // readers run during the restore
	stopRead := make(chan struct{})
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			select {
			case <-stopRead:
				return
			default:
			}
			mu.Lock()
			_, err := db.Get([]byte("k001"))
			mu.Unlock()
			if err != nil {
				t.Error(err)
				return
			}
		}
	}()
	info, err := db.Restore(bytes.NewReader(b))
	close(stopRead)
	<-readDone
	if err != nil {
		t.Fatal(err)
	}
	if info.Revision != rev {
		t.Fatalf("restored revision %d, want %d", info.Revision, rev)
	}
	if got := dbState(t, db); stateHash(got) != stateHash(want) {
		t.Fatalf("state after restore differs: got %d keys, want %d", len(got), len(want))
	}
	if r := mustPut(t, db, "next", "x"); r != rev+1 {
		t.Fatalf("write after restore got revision %d, want %d", r, rev+1)
	}
	want = append(want, fmt.Sprintf("next=x %d %d", rev+1, rev+1))
	slices.Sort(want)
	db.Close()
	db = open(t, dir, engine.Options{})
	if got := dbState(t, db); stateHash(got) != stateHash(want) {
		t.Fatalf("state after reopen differs: got %q", got)
	}
	// A damaged snapshot changes nothing.
	bad := slices.Clone(b)
	bad[len(bad)/2] ^= 1
	if _, err := db.Restore(bytes.NewReader(bad)); !errors.Is(err, engine.ErrBadSnapshot) {
		t.Fatalf("damaged snapshot: %v, want ErrBadSnapshot", err)
	}
	if got := dbState(t, db); stateHash(got) != stateHash(want) {
		t.Fatalf("a refused restore changed the state")
	}
}

// TestDefrag deletes most of a large store and defragments it while a
// writer runs: the state file shrinks, and every write, before and during,
// is there, before and after a reopen.
func TestDefrag(t *testing.T) {
	dir := t.TempDir()
	// Little change history, so that what a defrag gives back is the
	// deleted values' space.
	opts := engine.Options{CommitMode: engine.CommitAsync, CheckpointInterval: 5 * time.Millisecond, HistoryBytes: 64 << 10}
	db, err := engine.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { db.Close() }()
	big := bytes.Repeat([]byte{'x'}, 4096)
	for i := range 3000 {
		if _, err := db.Put([]byte(fmt.Sprintf("big%05d", i)), big, engine.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	db = open(t, dir, opts)
	for i := range 2900 {
		db.Delete([]byte(fmt.Sprintf("big%05d", i)), engine.WriteOptions{})
	}
	db.Close()
	db = open(t, dir, opts)
	stop := make(chan struct{})
	hist := writeLoad(t, db, 7, stop)
	rep, err := db.Defrag()
	close(stop)
	h := hist()
	if err != nil {
		t.Fatal(err)
	}
	if rep.After >= rep.Before/2 {
		t.Fatalf("defrag: %d bytes before, %d after", rep.Before, rep.After)
	}
	check := func(what string) {
		t.Helper()
		got := dbState(t, db)
		var bigs, others []string
		for _, l := range got {
			if strings.HasPrefix(l, "big") {
				bigs = append(bigs, l)
			} else {
				others = append(others, l)
			}
		}
		if len(bigs) != 100 || stateHash(others) != stateHash(stateAt(h, ^uint64(0))) {
			t.Fatalf("%s: %d of 100 big keys; load keys match the history: %v", what, len(bigs), stateHash(others) == stateHash(stateAt(h, ^uint64(0))))
		}
	}
	check("after defrag")
	db.Close()
	db = open(t, dir, engine.Options{})
	check("after reopen")
}
