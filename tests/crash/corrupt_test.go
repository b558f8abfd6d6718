package crash_test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The tests of this file corrupt the files of a stopped store and start kvd
// on them. DESIGN.md §1 and wal/doc.go ("Repair"): what only a crash can
// leave (a last record whose write did not complete, a hole in the last
// segment that no later record's watermark proves fsynced) and damage
// confined to records the state file already holds are cut at startup and
// logged at Warn; damage to data that was on stable storage (a last record
// written whole, a hole a watermark covers, a bad record in a needed sealed
// segment) stops startup with the segment name and offset, the files left
// alone. kvd refuses by exiting with status 1 and the reason on stderr.

// seqWrite is one write of a sequential history, whose revisions are known.
type seqWrite struct {
	kind opKind
	keys []string
	vals []string
}

// seqState returns the state after the first n writes of ws.
func seqState(ws []seqWrite, n int) map[string]string {
	m := map[string]string{}
	for _, w := range ws[:n] {
		for i, key := range w.keys {
			if w.kind == opDel {
				delete(m, key)
			} else {
				m[key] = w.vals[i]
			}
		}
	}
	return m
}

// writeSeq makes the writes of ws one after the other on a store that holds
// revisions 1..first-1, checking that write i gets revision first+i.
func writeSeq(t testing.TB, k *kvd, ws []seqWrite, first uint64) {
	t.Helper()
	rdb := k.redis()
	defer rdb.Close()
	ctx := context.Background()
	for i, w := range ws {
		want := first + uint64(i)
		switch w.kind {
		case opSet:
			req, err := http.NewRequest(http.MethodPut, k.url("/v1/kv/"+w.keys[0]), strings.NewReader(w.vals[0]))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := k.hc.Do(req)
			if err != nil {
				t.Fatalf("PUT %s: %v", w.keys[0], err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if rev := resp.Header.Get("X-Kvd-Revision"); resp.StatusCode != http.StatusOK || rev != strconv.FormatUint(want, 10) {
				t.Fatalf("PUT %s: %s, revision %s, want 200 and revision %d", w.keys[0], resp.Status, rev, want)
			}
		case opMSet:
			args := []any{"mset"}
			for j := range w.keys {
				args = append(args, w.keys[j], w.vals[j])
			}
			if err := rdb.Do(ctx, args...).Err(); err != nil {
				t.Fatalf("MSET: %v", err)
			}
		case opDel:
			args := []any{"del"}
			for _, key := range w.keys {
				args = append(args, key)
			}
			n, err := rdb.Do(ctx, args...).Int()
			if err != nil || n != len(w.keys) {
				t.Fatalf("DEL %v: %d, %v", w.keys, n, err)
			}
		}
		if got := k.status().Revisions.Written; got != want {
			t.Fatalf("after write %d the committed revision is %d, want %d", i, got, want)
		}
	}
}

// smallHistory returns n writes of small values (and a few of some KiB);
// the last one is an MSET of three keys of some hundred bytes each, so
// that a torn last record is a torn batch and spans a 512-byte sector
// boundary.
func smallHistory(rng *rand.Rand, n int) []seqWrite {
	var ws []seqWrite
	var live []string
	val := func(id, size int) string {
		p := fmt.Sprintf("%d.", id)
		return p + strings.Repeat(string(rune('a'+id%26)), max(0, size-len(p)))
	}
	for i := range n {
		w := seqWrite{kind: opSet}
		switch {
		case i == n-1:
			w.kind = opMSet
		case len(live) >= 2 && rng.IntN(4) == 0:
			w.kind = opDel
		case rng.IntN(3) == 0:
			w.kind = opMSet
		}
		switch w.kind {
		case opDel:
			for range 1 + rng.IntN(min(2, len(live))) {
				j := rng.IntN(len(live))
				w.keys = append(w.keys, live[j])
				live = append(live[:j], live[j+1:]...)
			}
		default:
			nk := 1
			if w.kind == opMSet {
				nk = 3
			}
			for j := range nk {
				key := fmt.Sprintf("seq/%04d/%d", i, j)
				w.keys = append(w.keys, key)
				size := 4 + rng.IntN(60)
				switch {
				case i == n-1:
					size = 300 + rng.IntN(1200)
				case rng.IntN(10) == 0:
					size = 1000 + rng.IntN(5000)
				}
				w.vals = append(w.vals, val(i*10+j, size))
				live = append(live, key)
			}
		}
		ws = append(ws, w)
	}
	return ws
}

// fixedConfig is a kvd that does not checkpoint while a test runs, so that
// its log keeps every record; segSize 0 is kvd's default segment size.
func fixedConfig(dir string, segSize int) kvdConfig {
	return kvdConfig{dataDir: dir, mode: "sync", checkpointInterval: time.Hour, walRetain: 1 << 40, segmentSize: segSize}
}

// expectState checks that k recovered exactly revision rev and state want.
func expectState(t testing.TB, k *kvd, rev uint64, want map[string]string, what string) bool {
	t.Helper()
	st := k.status()
	got := k.scanAll()
	ok := true
	if st.Revisions.Written != rev {
		t.Errorf("%s: recovered revision %d, want %d", what, st.Revisions.Written, rev)
		ok = false
	}
	if !maps.Equal(got, want) {
		var diff []string
		for key, v := range want {
			if g, found := got[key]; !found {
				diff = append(diff, "missing "+key)
			} else if g != v {
				diff = append(diff, "wrong value of "+key)
			}
		}
		for key := range got {
			if _, found := want[key]; !found {
				diff = append(diff, "extra "+key)
			}
		}
		t.Errorf("%s: recovered state differs from revisions 1..%d: %v", what, rev, first(diff, 10))
		ok = false
	}
	return ok
}

// tailLog is what kvd must log when it repairs the tail of its log.
type tailLog int

const (
	cleanEnd tailLog = iota // nothing: the log ends with a whole record
	zeroTail                // the zero fill cut off (at Info), no recovery cut
	tornCut                 // one recovery cut (at Warn) of a torn last record
)

// expectRepaired starts kvd on cfg's data dir: it must start, recover
// exactly revisions 1..rev of ws and log what want says at offset off of
// segment seg. The row counts the start and whether kvd cut.
func expectRepaired(t testing.TB, row *resultRow, cfg kvdConfig, ws []seqWrite, rev int, seg string, off int64, want tailLog, what string) bool {
	t.Helper()
	k, exit := launch(t, cfg)
	if exit != nil {
		t.Errorf("%s: kvd refused to start (exit %d), want a repaired tail:\n%s", what, exit.Code, tail(exit.Log, 2000))
		return false
	}
	defer k.kill()
	ok := expectState(t, k, uint64(rev), seqState(ws, rev), what)
	log := k.Log()
	cs := cuts(log)
	row.recovered(len(cs) > 0)
	switch want {
	case cleanEnd, zeroTail:
		if len(cs) > 0 {
			t.Errorf("%s: kvd logged a recovery cut, want none: %+v", what, cs)
			ok = false
		}
		if want == zeroTail && !loggedAt(log, seg, off) {
			t.Errorf("%s: kvd did not log cutting the zeroed tail of segment %s at offset %d:\n%s", what, seg, off, tail(log, 2000))
			ok = false
		}
	case tornCut:
		if len(cs) != 1 || cs[0].Segment != seg || cs[0].Offset != off || cs[0].kind() != "torn" || cs[0].Records != 0 || cs[0].Level != "WARN" {
			t.Errorf("%s: kvd logged the recovery cuts %+v, want one at Warn, of a torn write at offset %d of segment %s, dropping no valid record:\n%s",
				what, cs, off, seg, tail(log, 2000))
			ok = false
		}
	}
	return ok
}

// loggedAt reports whether a JSON log line names segment seg and offset off.
func loggedAt(log, seg string, off int64) bool {
	for line := range strings.SplitSeq(log, "\n") {
		var rec struct {
			Segment string `json:"segment"`
			Offset  *int64 `json:"offset"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Segment == seg && rec.Offset != nil && *rec.Offset == off {
			return true
		}
	}
	return false
}

// expectRefusal starts kvd on a corrupt dir: it must exit with status 1
// and a message on stderr that matches every one of want, without a panic,
// and leave the files of its log as they were.
func expectRefusal(t testing.TB, cfg kvdConfig, what string, want ...*regexp.Regexp) bool {
	t.Helper()
	before := dirFiles(t, cfg.dataDir)
	k, exit := launch(t, cfg)
	if exit == nil {
		n := len(k.scanAll())
		k.kill()
		t.Errorf("%s: kvd started and serves %d keys, want a refusal", what, n)
		return false
	}
	ok := true
	if exit.Code != 1 {
		t.Errorf("%s: kvd exited with %v, want exit status 1", what, exit.Err)
		ok = false
	}
	msg := refusal(exit.Log)
	for _, re := range want {
		if !re.MatchString(msg) {
			t.Errorf("%s: kvd's error message does not match %q:\n%s", what, re, tail(exit.Log, 2000))
			ok = false
		}
	}
	if crashed(exit.Log) {
		t.Errorf("%s: kvd crashed instead of refusing:\n%s", what, excerpt(exit.Log, 3000))
		ok = false
	}
	if after := dirFiles(t, cfg.dataDir); !maps.Equal(before, after) {
		t.Errorf("%s: kvd changed its files while refusing to start: before %v, after %v", what, before, after)
		ok = false
	}
	return ok
}

// dirFiles returns a digest of every file of dataDir's log, by path. (The
// state file is left out: kvd commits a bbolt transaction to it at every
// start, before it opens the log, which rewrites a meta page.)
func dirFiles(t testing.TB, dataDir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	paths, err := filepath.Glob(filepath.Join(dataDir, "wal", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			files[p] = err.Error()
			continue
		}
		files[p] = fmt.Sprintf("%d bytes, sha256 %x", len(b), sha256.Sum256(b))
	}
	return files
}

// refusal returns what kvd wrote to stderr besides its JSON log lines:
// the error it exits with.
func refusal(stderr string) string {
	var msg []string
	for line := range strings.SplitSeq(stderr, "\n") {
		if line != "" && !strings.HasPrefix(line, "{") {
			msg = append(msg, line)
		}
	}
	return strings.Join(msg, "\n")
}

var crashRE = regexp.MustCompile(`(?m)^(panic: |fatal error: |unexpected fault address|goroutine \d+ \[)|SIGBUS|SIGSEGV`)

func crashed(stderr string) bool { return crashRE.MatchString(stderr) }

// atOffset matches the segment name and the offset in a refusal.
func atOffset(seg string, off int64) []*regexp.Regexp {
	return []*regexp.Regexp{
		regexp.MustCompile(`corrupt record in segment ` + regexp.QuoteMeta(seg) + ` at offset ` + strconv.FormatInt(off, 10) + `\b`),
	}
}

// copyDir copies the regular files of the tree src into dst, replacing dst.
func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	if err := os.RemoveAll(dst); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
}

func truncate(t testing.TB, path string, size int64) {
	t.Helper()
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
}

func appendBytes(t testing.TB, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

// writeAt overwrites bytes of path at off and returns what was there.
func writeAt(t testing.TB, path string, off int64, b []byte) []byte {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	old := make([]byte, len(b))
	if _, err := f.ReadAt(old, off); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	return old
}

// nonZeroBytes returns n random bytes, none of them zero: garbage in which
// no sector can read as never written.
func nonZeroBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(1 + rng.IntN(255))
	}
	return b
}

// sector is the unit in which a disk persists a write, and in which kvd
// recognises a torn one (wal/recover.go).
const sector = 512

// zeroSector reports whether the entry at [off, end) of b has a piece
// between sector boundaries (or its ends) that is all zeros: what a write
// cut short leaves in a zero-filled log. Tests use it only to check that
// the damage they make is what they mean it to be.
func zeroSector(b []byte, off, end int64) bool {
	for a := off; a < end; {
		e := min((a/sector+1)*sector, end)
		if len(bytes.Trim(b[a:e], "\x00")) == 0 {
			return true
		}
		a = e
	}
	return false
}

// uvarintLen is the size of the length prefix of a tidwall/wal entry.
func uvarintLen(b []byte) int64 {
	_, n := binary.Uvarint(b)
	return int64(n)
}

// TestTornTail damages the last record of the log's last segment and what
// follows it, on a stopped store, as a crash can and as a crash cannot
// (DESIGN.md §1, wal/doc.go "Repair"). What a crash leaves is cut at
// startup, logged, and kvd recovers exactly the records before: the last
// record cut at every offset (the file ends inside it), cut at a sector
// boundary with zeros after, or with a zeroed sector; zeros after the last
// record (the zero fill); garbage after it whose first entry runs past
// the end of the file. A last record written whole but damaged (a flipped
// bit, or garbage from inside it to past its end) and a whole entry of
// garbage after it are refused, naming the segment and offset, with the
// files left alone ("last-record bit flip" row), as is a bad record with
// valid records after it that were written once it was fsynced.
// Histories use one segment or many small ones.
func TestTornTail(t *testing.T) {
	rng := seeded(t)
	row := results.row("torn tail", "sync")
	flips := results.row("last-record bit flip", "sync")
	failures, prefixRefusals := 0, 0
	defer func() {
		if prefixRefusals > 0 {
			row.setNote("kvd refused %d last records cut inside their length prefix (the file ends inside them)", prefixRefusals)
		}
	}()
	for h := range pick(2, 4) {
		work := scratchDir(t)
		pristine := filepath.Join(work, "pristine")
		dir := filepath.Join(work, "data")
		segSize := [...]int{0, 4 << 10}[h%2]
		cfg := fixedConfig(dir, segSize)
		ws := smallHistory(rng, 12+rng.IntN(pick(10, 60)))
		k := startKVD(t, fixedConfig(pristine, segSize))
		writeSeq(t, k, ws, 1)
		segs := segments(t, pristine)
		seg := segs[len(segs)-1]
		if len(readRecords(t, filepath.Join(pristine, "wal", seg))) == 0 {
			// The last write filled its segment and left an empty one
			// behind: write once more, so that the last segment has a
			// last record to tear. The record (three values of 500
			// bytes, about 1.6 KB) is smaller than the 4 KiB segment,
			// so it cannot fill the empty one and leave another.
			more := []seqWrite{{kind: opMSet, keys: []string{"seq/last/0", "seq/last/1", "seq/last/2"}}}
			for i := range more[0].keys {
				more[0].vals = append(more[0].vals, strings.Repeat(string(rune('x'+i)), 500))
			}
			writeSeq(t, k, more, uint64(len(ws))+1)
			ws = append(ws, more...)
			if now := segments(t, pristine); len(now) != len(segs) {
				t.Fatalf("history %d: the extra write left segments %v, want it in the empty last segment of %v", h, now, segs)
			}
		}
		k.kill() // the log keeps every record: nothing is checkpointed
		segPath := filepath.Join(dir, "wal", seg)
		recs := readRecords(t, filepath.Join(pristine, "wal", seg))
		n := len(ws)
		if len(recs) == 0 || recs[len(recs)-1].rev != uint64(n) {
			t.Fatalf("history %d: the last segment %s does not end with revision %d: %v", h, seg, n, recs)
		}
		last := recs[len(recs)-1]
		name := fmt.Sprintf("history %d (%d records, %d segments)", h, n, len(segs))
		// Only the last segment changes, by the test's hand or by kvd's
		// repair: restore just that file.
		copyDir(t, pristine, dir)
		pristineSeg, err := os.ReadFile(segPath)
		if err != nil {
			t.Fatal(err)
		}
		// The kill left the zero fill after the last record: start from
		// the records alone.
		pristineSeg = pristineSeg[:last.end]
		fresh := func() []byte {
			if err := os.WriteFile(segPath, pristineSeg, 0o640); err != nil {
				t.Fatal(err)
			}
			return slices.Clone(pristineSeg)
		}
		put := func(b []byte) {
			if err := os.WriteFile(segPath, b, 0o640); err != nil {
				t.Fatal(err)
			}
		}
		prefix := uvarintLen(pristineSeg[last.off:])
		if zeroSector(pristineSeg, last.off, last.end) || last.end/sector == last.off/sector || prefix < 2 {
			t.Fatalf("%s: the last record [%d, %d) holds a zero sector, spans no sector boundary, or has a one-byte length: the cases below need it whole, across a boundary, with a longer length",
				name, last.off, last.end)
		}
		check := func(r *resultRow, ok bool, acked int) {
			bad := 0
			if !ok {
				bad = 1
				if failures++; failures >= 10 {
					r.count(acked, bad)
					t.Fatalf("%d cases failed; stopping", failures)
				}
			}
			r.count(acked, bad)
		}

		// The last record cut at every offset, its length prefix
		// included: a crash in the middle of appending it, the file
		// ending inside it.
		step := max(1, (last.end-last.off)/pick(int64(120), int64(1000)))
		var cutsAt []int64
		for cut := last.off; cut < last.off+prefix; cut++ {
			cutsAt = append(cutsAt, cut)
		}
		for cut := last.off + prefix; cut < last.end; cut += step {
			cutsAt = append(cutsAt, cut)
		}
		for _, cut := range cutsAt {
			fresh()
			truncate(t, segPath, cut)
			want := tornCut
			if cut == last.off {
				want = cleanEnd // nothing torn: a clean end
			}
			ok := expectRepaired(t, row, cfg, ws, n-1, seg, last.off, want, fmt.Sprintf("%s, last record cut at offset %d", name, cut))
			if !ok && cut > last.off && cut < last.off+prefix {
				prefixRefusals++
			}
			check(row, ok, n-1)
		}
		// The last record cut at a sector boundary inside it, followed by
		// zeros (to its end, or further): the sectors from there on were
		// never written over the zero fill.
		for b := (last.off/sector + 1) * sector; b < last.end; b += sector {
			for _, extra := range []int64{0, 1 + rng.Int64N(4096)} {
				buf := fresh()[:b]
				buf = append(buf, make([]byte, last.end-b+extra)...)
				put(buf)
				check(row, expectRepaired(t, row, cfg, ws, n-1, seg, last.off, tornCut,
					fmt.Sprintf("%s, last record cut at sector boundary %d, %d zeros after", name, b, last.end-b+extra)), n-1)
			}
		}
		// One sector's piece of the last record zeroed, the rest intact:
		// a sector of its write that never reached the disk.
		for a := (last.off/sector + 1) * sector; a < last.end; a += sector {
			buf := fresh()
			clear(buf[a:min(a+sector, last.end)])
			put(buf)
			check(row, expectRepaired(t, row, cfg, ws, n-1, seg, last.off, tornCut,
				fmt.Sprintf("%s, last record's sector at %d zeroed", name, a)), n-1)
		}
		// Zeros after the last record: the zero fill.
		for _, size := range []int{1, 16, 100, 4096, 70000} {
			put(append(fresh(), make([]byte, size)...))
			check(row, expectRepaired(t, row, cfg, ws, n, seg, last.end, zeroTail, fmt.Sprintf("%s, %d zero bytes after the last record", name, size)), n)
		}
		// Garbage after the last record whose first entry runs past the
		// end of the file: a write cut short.
		for _, size := range []int{1, 16, 100, 4096, 70000} {
			g := nonZeroBytes(rng, size)
			l := binary.AppendUvarint(nil, uint64(size)+1+rng.Uint64N(1000))
			if size == 1 {
				l = []byte{byte(2 + rng.IntN(126))}
			}
			copy(g, l)
			put(append(fresh(), g...))
			check(row, expectRepaired(t, row, cfg, ws, n, seg, last.end, tornCut,
				fmt.Sprintf("%s, %d garbage bytes after the last record, their entry running past the end", name, size)), n)
		}
		// Garbage after the last record holding a whole entry with no
		// zero sector: written whole, so not a crash's leftover.
		for _, size := range []int{100, 4096, 70000} {
			g := nonZeroBytes(rng, size)
			l := binary.AppendUvarint(nil, uint64(size))
			l = binary.AppendUvarint(nil, uint64(size-len(l)))
			copy(g, l)
			buf := append(fresh(), g...)
			if zeroSector(buf, last.end, int64(len(buf))) {
				t.Fatalf("garbage with a zero sector")
			}
			put(buf)
			check(flips, expectRefusal(t, cfg, fmt.Sprintf("%s, a whole entry of %d garbage bytes after the last record", name, size),
				atOffset(seg, last.end)...), 0)
		}
		// The last record cut at a random byte, then garbage: if the
		// file ends inside the record, a write cut short; if the garbage
		// reaches past its end, it was written whole, and damaged.
		for range pick(3, 10) {
			cut := last.off + prefix + rng.Int64N(last.end-last.off-prefix)
			short := fresh()[:cut]
			short = append(short, nonZeroBytes(rng, int(rng.Int64N(last.end-cut)))...)
			put(short)
			check(row, expectRepaired(t, row, cfg, ws, n-1, seg, last.off, tornCut,
				fmt.Sprintf("%s, last record cut at %d plus %d garbage bytes, the file ending inside it", name, cut, int64(len(short))-cut)), n-1)
			long := fresh()[:cut]
			long = append(long, nonZeroBytes(rng, int(last.end-cut+rng.Int64N(100)))...)
			for long[cut] == pristineSeg[cut] || long[cut] == 0 {
				long[cut]++ // garbage, not the record's own byte
			}
			if zeroSector(long, last.off, last.end) {
				t.Fatalf("a last record with garbage and a zero sector")
			}
			put(long)
			check(flips, expectRefusal(t, cfg, fmt.Sprintf("%s, last record cut at %d and garbage to %d, past its end %d", name, cut, len(long), last.end),
				atOffset(seg, last.off)...), 0)
		}
		// The last record zeroed: the zero fill, never written over.
		put(append(fresh()[:last.off], make([]byte, last.end-last.off)...))
		check(row, expectRepaired(t, row, cfg, ws, n-1, seg, last.off, zeroTail, name+", last record zeroed"), n-1)

		// A bit of the last record flipped, outside its length prefix:
		// written whole, then damaged.
		for range pick(4, 20) {
			buf := fresh()
			off := last.off + prefix + rng.Int64N(last.end-last.off-prefix)
			buf[off] ^= 1 << rng.IntN(8)
			if zeroSector(buf, last.off, last.end) {
				continue // the flip zeroed a sector's piece: that reads as torn
			}
			put(buf)
			check(flips, expectRefusal(t, cfg, fmt.Sprintf("%s, a bit at offset %d of the last record flipped", name, off),
				atOffset(seg, last.off)...), 0)
		}

		// A bad record with valid records after it that were written
		// once it was fsynced (their watermark): damage to fsynced data.
		if len(recs) >= 2 {
			for _, i := range []int{0, (len(recs) - 1) / 2, len(recs) - 2} {
				r := recs[i]
				if w := slices.MaxFunc(recs[i+1:], func(a, b walRecord) int { return cmp.Compare(a.watermark, b.watermark) }).watermark; w < r.rev {
					t.Fatalf("%s: no record after revision %d carries a watermark covering it (highest %d), though every write was synced", name, r.rev, w)
				}
				fresh()
				flipBit(t, rng, segPath, r.off+frameHeaderOffset(rng, r))
				check(flips, expectRefusal(t, cfg, fmt.Sprintf("%s, a bit of revision %d flipped in the last segment", name, r.rev), atOffset(seg, r.off)...), 0)
			}
		}
	}
}

// frameHeaderOffset returns a random offset within record r, relative to
// its start: half the time within the length prefix and frame header.
func frameHeaderOffset(rng *rand.Rand, r walRecord) int64 {
	size := r.end - r.off
	if rng.IntN(2) == 0 {
		return rng.Int64N(min(size, frameHeader+2))
	}
	return rng.Int64N(size)
}

// flipBit flips one random bit of the byte at off.
func flipBit(t testing.TB, rng *rand.Rand, path string, off int64) {
	t.Helper()
	old := writeAt(t, path, off, []byte{0})
	writeAt(t, path, off, []byte{old[0] ^ 1<<rng.IntN(8)})
}

// segmentedStore makes a store of small segments holding a history of
// small writes, and kills it: its log holds every record.
func segmentedStore(t testing.TB, rng *rand.Rand, dir string) ([]seqWrite, []string) {
	t.Helper()
	ws := smallHistory(rng, pick(150, 400))
	k := startKVD(t, fixedConfig(dir, 4<<10))
	writeSeq(t, k, ws, 1)
	k.kill()
	segs := segments(t, dir)
	if len(segs) < 3 {
		t.Fatalf("the log has segments %v, want at least three", segs)
	}
	return ws, segs
}

// TestCorruptSegment flips bits in, cuts, zeroes and removes sealed
// segments: kvd must refuse to start, naming the segment and the offset of
// the bad record, and start again once the damage is undone.
func TestCorruptSegment(t *testing.T) {
	rng := seeded(t)
	row := results.row("corrupt sealed segment", "sync")
	dir := t.TempDir()
	ws, segs := segmentedStore(t, rng, dir)
	cfg := fixedConfig(dir, 4<<10)
	check := func(ok bool) {
		bad := 0
		if !ok {
			bad = 1
		}
		row.count(0, bad)
	}
	sealed := segs[:len(segs)-1]
	for range pick(6, 30) {
		seg := sealed[rng.IntN(len(sealed))]
		path := filepath.Join(dir, "wal", seg)
		recs := readRecords(t, path)
		// The last record of a sealed segment is not a tail: never torn.
		i := len(recs) - 1
		if rng.IntN(2) == 0 {
			i = rng.IntN(len(recs))
		}
		r := recs[i]
		off := r.off + frameHeaderOffset(rng, r)
		old := writeAt(t, path, off, []byte{0})
		writeAt(t, path, off, []byte{old[0] ^ 1<<rng.IntN(8)})
		check(expectRefusal(t, cfg, fmt.Sprintf("bit flipped at offset %d of revision %d in sealed segment %s", off, r.rev, seg), atOffset(seg, r.off)...))
		writeAt(t, path, off, old)
	}
	for range pick(2, 6) {
		seg := sealed[rng.IntN(len(sealed))]
		path := filepath.Join(dir, "wal", seg)
		recs := readRecords(t, path)
		last := recs[len(recs)-1]
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		cut := last.off + 1 + rng.Int64N(last.end-last.off-1)
		truncate(t, path, cut)
		check(expectRefusal(t, cfg, fmt.Sprintf("sealed segment %s cut at offset %d", seg, cut), atOffset(seg, last.off)...))
		appendBytes(t, path, b[cut:])
		zero := last.off + rng.Int64N(last.end-last.off)
		old := writeAt(t, path, zero, make([]byte, last.end-zero))
		check(expectRefusal(t, cfg, fmt.Sprintf("sealed segment %s zeroed from offset %d", seg, zero), atOffset(seg, last.off)...))
		writeAt(t, path, zero, old)
	}
	// A sealed segment gone or emptied: the log has a hole.
	mid := sealed[1+rng.IntN(len(sealed)-1)]
	path := filepath.Join(dir, "wal", mid)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	truncate(t, path, 0)
	check(expectRefusal(t, cfg, "sealed segment "+mid+" emptied", regexp.MustCompile(`segment \d{20}`)))
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	check(expectRefusal(t, cfg, "sealed segment "+mid+" removed", regexp.MustCompile(`segment \d{20}`)))
	if err := os.WriteFile(path, b, 0o640); err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		return
	}

	// Undone, the damage leaves the store as it was.
	k := startKVD(t, cfg)
	ok := expectState(t, k, uint64(len(ws)), seqState(ws, len(ws)), "after undoing the corruption")
	k.kill()
	row.count(len(ws), map[bool]int{true: 0, false: 1}[ok])
}

// TestLogHole zeroes one record in the middle of the last segment, with
// valid records after it, on a stopped store. When the history was
// written in async mode with no fsync since (a flush interval of an hour),
// no record after the hole carries a watermark covering it: that is what a
// power loss that kept later unsynced pages and not earlier ones leaves,
// and kvd cuts the log at the hole, with the records after it, logs the
// cut and starts with the revisions before ("hole after the last fsync").
// When it was written in sync mode, the records after the hole were
// written once it was fsynced: the same hole is damage to fsynced data,
// and kvd refuses, naming the segment and offset, and leaves the files
// alone ("hole in fsynced data").
func TestLogHole(t *testing.T) {
	rng := seeded(t)
	for _, mode := range []string{"async", "sync"} {
		row := results.row(map[string]string{"async": "hole after the last fsync", "sync": "hole in fsynced data"}[mode], mode)
		for h := range pick(2, 5) {
			work := scratchDir(t)
			pristine := filepath.Join(work, "pristine")
			dir := filepath.Join(work, "data")
			cfg := fixedConfig(pristine, 0)
			cfg.mode, cfg.flushInterval = mode, time.Hour
			ws := smallHistory(rng, 10+rng.IntN(pick(20, 60)))
			k := startKVD(t, cfg)
			writeSeq(t, k, ws, 1)
			k.kill() // the log keeps every record, unsynced or not
			cfg.dataDir = dir
			segs := segments(t, pristine)
			seg := segs[len(segs)-1]
			recs := readRecords(t, filepath.Join(pristine, "wal", seg))
			n := len(ws)
			if len(segs) != 1 || len(recs) != n {
				t.Fatalf("the log holds segments %v, the last with %d records; want one segment with all %d", segs, len(recs), n)
			}
			fi, err := os.Stat(filepath.Join(pristine, "wal", seg))
			if err != nil {
				t.Fatal(err)
			}
			size := fi.Size()
			for range pick(3, 8) {
				i := rng.IntN(n - 1)
				r := recs[i]
				w := slices.MaxFunc(recs[i+1:], func(a, b walRecord) int { return cmp.Compare(a.watermark, b.watermark) })
				copyDir(t, pristine, dir)
				writeAt(t, filepath.Join(dir, "wal", seg), r.off, make([]byte, r.end-r.off))
				what := fmt.Sprintf("history %d (%d records, %s), revision %d zeroed, the highest watermark after it %d (revision %d)",
					h, n, mode, r.rev, w.watermark, w.rev)
				if mode == "sync" {
					if w.watermark < r.rev {
						t.Fatalf("%s: sync writes, yet no record after revision %d says it was fsynced", what, r.rev)
					}
					ok := expectRefusal(t, cfg, what, append(atOffset(seg, r.off), regexp.MustCompile(`fsynced`))...)
					row.count(0, map[bool]int{true: 0, false: 1}[ok])
					continue
				}
				if w.watermark >= r.rev {
					t.Fatalf("%s: async writes with no fsync, yet a record after revision %d says it was fsynced", what, r.rev)
				}
				kept := int(r.rev) - 1
				k, exit := launch(t, cfg)
				if exit != nil {
					row.fail("kvd refused a hole after the last fsync")
					t.Fatalf("%s: kvd refused to start, want it to cut the log at the hole:\n%s", what, tail(exit.Log, 2000))
				}
				ok := expectState(t, k, uint64(kept), seqState(ws, kept), what)
				cs := cuts(k.Log())
				row.recovered(len(cs) > 0)
				// The cut takes the rest of the file, zero fill included.
				want := logCut{Level: "WARN", Segment: seg, Offset: r.off, Bytes: size - r.off, Records: n - 1 - i, FirstRev: r.rev + 1, LastRev: uint64(n)}
				var got logCut
				if len(cs) == 1 {
					got = cs[0]
					got.Reason = ""
				}
				if len(cs) != 1 || cs[0].kind() != "hole" || got != want {
					t.Errorf("%s: kvd logged the recovery cuts %+v, want one of a hole: %+v", what, cs, want)
					ok = false
				}
				k.kill()
				// The cut is made for good: the next start finds a clean log.
				k = startKVD(t, cfg)
				if !expectState(t, k, uint64(kept), seqState(ws, kept), what+", started again") {
					ok = false
				}
				if cs := cuts(k.Log()); len(cs) > 0 {
					t.Errorf("%s: started again, kvd cut again: %+v", what, cs)
					ok = false
				}
				k.kill()
				row.count(kept, map[bool]int{true: 0, false: 1}[ok])
			}
			if t.Failed() {
				return
			}
		}
	}
}

// TestDamageBelowCheckpoint flips bits in log records that the state file
// already holds, on a stopped store that keeps its old segments
// (--wal-retain) and has written more since its last checkpoint: the log
// may then start later, so kvd cuts it (removing the segments below the
// damage, or rewriting the segment that holds the checkpointed revision's
// successor), logs the cut, and starts with every acknowledged write.
func TestDamageBelowCheckpoint(t *testing.T) {
	rng := seeded(t)
	row := results.row("damage below the checkpoint", "sync")
	work := scratchDir(t)
	pristine := filepath.Join(work, "pristine")
	dir := filepath.Join(work, "data")
	cfg := fixedConfig(pristine, 4<<10)
	ws := smallHistory(rng, pick(150, 400))
	k := startKVD(t, cfg)
	writeSeq(t, k, ws, 1)
	// Small writes last, until one of them starts a segment: that segment
	// then has room for the writes after the checkpoint too, and holds
	// both sides of it. (A fixed number of them could leave the segment
	// of the history's last records just full, and the checkpoint at a
	// segment's end.)
	history := uint64(len(ws))
	for i := 0; ; i++ {
		segs := segments(t, pristine)
		// The last segment holds a small write (a segment is made as soon
		// as the one before it is full, before anything is written to it).
		if first, err := strconv.ParseUint(segs[len(segs)-1], 10, 64); err == nil && first > history && first <= uint64(len(ws)) {
			t.Logf("history of %d writes, then %d small writes; the last segment starts at %d", history, i, first)
			break
		}
		if i == 200 {
			t.Fatalf("200 small writes after the history started no segment: %v", segs)
		}
		w := seqWrite{kind: opSet, keys: []string{fmt.Sprintf("pre/%d", i)}, vals: []string{fmt.Sprint("before the checkpoint ", i)}}
		writeSeq(t, k, []seqWrite{w}, uint64(len(ws))+1)
		ws = append(ws, w)
	}
	if err := k.stop(); err != nil { // a clean stop checkpoints
		t.Fatalf("kvd stop: %v\n%s", err, tail(k.Log(), 2000))
	}
	applied := uint64(len(ws))
	// More writes, which only the log holds.
	more := smallHistory(rng, 10+rng.IntN(30))
	for i := range more {
		for j := range more[i].keys {
			more[i].keys[j] = "more/" + more[i].keys[j]
		}
	}
	k = startKVD(t, cfg)
	if got := k.status().Revisions.Checkpointed; got != applied {
		t.Fatalf("after a clean stop the state file holds revision %d, want %d", got, applied)
	}
	writeSeq(t, k, more, applied+1)
	k.kill()
	all := append(slices.Clone(ws), more...)
	n := len(all)
	segs := segments(t, pristine)
	if segs[0] != "00000000000000000001" || len(segs) < 3 {
		t.Fatalf("the log holds segments %v: want every revision since 1 (--wal-retain), in several segments", segs)
	}
	// Where each checkpointed record lies.
	type place struct {
		seg string
		rec walRecord
	}
	var below, besideNext []place // besideNext: in the segment holding applied+1
	for _, seg := range segs {
		recs := readRecords(t, filepath.Join(pristine, "wal", seg))
		holdsNext := slices.ContainsFunc(recs, func(r walRecord) bool { return r.rev == applied+1 })
		for _, r := range recs {
			if r.rev <= applied {
				below = append(below, place{seg, r})
				if holdsNext {
					besideNext = append(besideNext, place{seg, r})
				}
			}
		}
	}
	if len(below) != int(applied) || len(besideNext) == 0 {
		for _, seg := range segs {
			recs := readRecords(t, filepath.Join(pristine, "wal", seg))
			if len(recs) > 0 {
				t.Logf("segment %s: revisions %d..%d", seg, recs[0].rev, recs[len(recs)-1].rev)
			} else {
				t.Logf("segment %s: no records", seg)
			}
		}
		t.Fatalf("found %d records of revisions 1..%d in the log, %d of them in the segment holding %d; want all, and some",
			len(below), applied, len(besideNext), applied+1)
	}
	cfg.dataDir = dir
	for c := range pick(4, 16) {
		p := below[rng.IntN(len(below))]
		switch {
		case c == 0:
			p = below[len(below)-1] // the last checkpointed record
		case c == 1:
			// In the segment the log must now start in, rewritten from
			// revision applied+1 on.
			p = besideNext[rng.IntN(len(besideNext))]
		}
		copyDir(t, pristine, dir)
		off := p.rec.off + frameHeaderOffset(rng, p.rec)
		flipBit(t, rng, filepath.Join(dir, "wal", p.seg), off)
		what := fmt.Sprintf("a bit at offset %d of revision %d (segment %s) flipped, the state file at revision %d", off, p.rec.rev, p.seg, applied)
		k, exit := launch(t, cfg)
		if exit != nil {
			row.fail("kvd refused damage below the checkpoint")
			t.Fatalf("%s: kvd refused to start, want it to cut the log:\n%s", what, tail(exit.Log, 2000))
		}
		ok := expectState(t, k, uint64(n), seqState(all, n), what)
		cs := cuts(k.Log())
		row.recovered(len(cs) > 0)
		t.Logf("%s: kvd cut %+v; the log now holds %v", what, cs, segments(t, dir))
		if len(cs) != 1 || cs[0].kind() != "checkpointed" || cs[0].Segment != p.seg || cs[0].Offset != p.rec.off || cs[0].Level != "WARN" {
			t.Errorf("%s: kvd logged the recovery cuts %+v, want one at Warn naming segment %s and offset %d, below the checkpoint",
				what, cs, p.seg, p.rec.off)
			ok = false
		}
		k.kill()
		k = startKVD(t, cfg)
		if !expectState(t, k, uint64(n), seqState(all, n), what+", started again") {
			ok = false
		}
		if cs := cuts(k.Log()); len(cs) > 0 {
			t.Errorf("%s: started again, kvd cut again: %+v", what, cs)
			ok = false
		}
		k.kill()
		row.count(n, map[bool]int{true: 0, false: 1}[ok])
		if t.Failed() {
			return
		}
	}
}

// TestTruncatedState truncates the state file (bbolt) of a checkpointed
// store whose log no longer holds the first revisions: kvd must refuse to
// start with a clear message, or start with every acknowledged write; it
// must never crash nor serve a partial state.
func TestTruncatedState(t *testing.T) {
	rng := seeded(t)
	row := results.row("truncated state file", "sync")
	work := t.TempDir()
	pristine := filepath.Join(work, "pristine")
	ws, _ := segmentedStore(t, rng, pristine)
	// Checkpoint everything and drop the log's front: start, write once
	// more, stop cleanly.
	cfg := kvdConfig{dataDir: pristine, mode: "sync", checkpointInterval: time.Hour, segmentSize: 4 << 10}
	k := startKVD(t, cfg)
	extra := []seqWrite{{kind: opSet, keys: []string{"extra"}, vals: []string{"after restart"}}}
	writeSeq(t, k, extra, uint64(len(ws))+1)
	if err := k.stop(); err != nil {
		t.Fatalf("kvd stop: %v\n%s", err, tail(k.Log(), 2000))
	}
	ws = append(ws, extra...)
	want := seqState(ws, len(ws))
	if segs := segments(t, pristine); segs[0] == "00000000000000000001" {
		t.Fatalf("the clean stop left the log's first segment: %v", segs)
	}
	fi, err := os.Stat(filepath.Join(pristine, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()
	dir := filepath.Join(work, "data")
	sizes := []int64{0, 4096, 8192, 16384, size / 2, size - 4096, size - 1}
	for range pick(2, 10) {
		sizes = append(sizes, rng.Int64N(size))
	}
	cfg.dataDir = dir
	for _, s := range sizes {
		copyDir(t, pristine, dir)
		truncate(t, filepath.Join(dir, "state.db"), s)
		what := fmt.Sprintf("state.db (%d bytes) truncated to %d bytes", size, s)
		k, exit := launch(t, cfg)
		switch {
		case exit == nil:
			ok := expectState(t, k, uint64(len(ws)), want, what+": kvd started")
			k.kill()
			row.count(len(ws), map[bool]int{true: 0, false: 1}[ok])
		case exit.Code != 1 || crashed(exit.Log) || !strings.Contains(refusal(exit.Log), "state"):
			t.Errorf("%s: kvd exited with %v, want a clean refusal (exit status 1, a message naming the state file):\n%s",
				what, exit.Err, excerpt(exit.Log, 3000))
			row.count(0, 1)
		default:
			row.count(0, 0)
		}
	}
}
