package crash_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The tests of this file corrupt the files of a stopped store and start kvd
// on them. DESIGN.md §1: a torn record at the tail of the last segment (a
// short record, zeros, a bad CRC with nothing valid after it) is truncated
// and logged; a bad record anywhere else stops startup with the segment
// name and offset. kvd refuses by exiting with status 1 and the reason on
// stderr.

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
		if got := k.status().Revisions.Committed; got != want {
			t.Fatalf("after write %d the committed revision is %d, want %d", i, got, want)
		}
	}
}

// smallHistory returns n writes of small values (and a few of some KiB);
// the last one is an MSET of three keys, so that a torn last record is a
// torn batch.
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
				if rng.IntN(10) == 0 {
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
	if st.Revisions.Committed != rev {
		t.Errorf("%s: recovered revision %d, want %d", what, st.Revisions.Committed, rev)
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

// expectRepaired starts kvd on dir, which must start and recover exactly
// revisions 1..rev of ws. If truncatedAt >= 0 it must log the truncation
// of segment seg at that offset.
func expectRepaired(t testing.TB, cfg kvdConfig, ws []seqWrite, rev int, seg string, truncatedAt int64, what string) bool {
	t.Helper()
	k, exit := launch(t, cfg)
	if exit != nil {
		t.Errorf("%s: kvd refused to start (exit %d), want a repaired torn tail:\n%s", what, exit.code, tail(exit.stderr, 2000))
		return false
	}
	defer k.kill()
	ok := expectState(t, k, uint64(rev), seqState(ws, rev), what)
	if truncatedAt >= 0 && !loggedAt(k.log.String(), seg, truncatedAt) {
		t.Errorf("%s: kvd did not log the truncation of segment %s at offset %d:\n%s", what, seg, truncatedAt, tail(k.log.String(), 2000))
		ok = false
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
// and a message on stderr that matches every one of want, without a panic.
func expectRefusal(t testing.TB, cfg kvdConfig, what string, want ...*regexp.Regexp) bool {
	t.Helper()
	k, exit := launch(t, cfg)
	if exit == nil {
		n := len(k.scanAll())
		k.kill()
		t.Errorf("%s: kvd started and serves %d keys, want a refusal", what, n)
		return false
	}
	ok := true
	if exit.code != 1 {
		t.Errorf("%s: kvd exited with %v, want exit status 1", what, exit.err)
		ok = false
	}
	msg := refusal(exit.stderr)
	for _, re := range want {
		if !re.MatchString(msg) {
			t.Errorf("%s: kvd's error message does not match %q:\n%s", what, re, tail(exit.stderr, 2000))
			ok = false
		}
	}
	if crashed(exit.stderr) {
		t.Errorf("%s: kvd crashed instead of refusing:\n%s", what, excerpt(exit.stderr, 3000))
		ok = false
	}
	return ok
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
		regexp.MustCompile(regexp.QuoteMeta(seg)),
		regexp.MustCompile(`\boffset\D{0,3}` + strconv.FormatInt(off, 10) + `\b`),
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

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// TestTornTail cuts the last record of the log at every offset, appends
// zeros and garbage, zeroes and flips bits of the last record: kvd repairs
// each by truncating the tail, logs it, and recovers exactly the records
// before. A flipped bit in an earlier record of the last segment is
// corruption: kvd refuses. Histories use one segment or many small ones.
func TestTornTail(t *testing.T) {
	rng := seeded(t)
	row := results.row("torn tail", "sync")
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
			// last record to tear.
			more := []seqWrite{{kind: opMSet, keys: []string{"seq/last/0", "seq/last/1"}, vals: []string{"tail 0", "tail 1"}}}
			writeSeq(t, k, more, uint64(len(ws))+1)
			ws = append(ws, more...)
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
		fresh := func() {
			if err := os.WriteFile(segPath, pristineSeg, 0o640); err != nil {
				t.Fatal(err)
			}
		}
		check := func(ok bool, acked int) {
			bad := 0
			if !ok {
				bad = 1
			}
			row.count(acked, bad)
		}

		// The last record cut at every offset: a crash in the middle of
		// appending it.
		step := max(1, (last.end-last.off)/pick(int64(120), int64(1000)))
		for cut := last.off; cut < last.end; cut += step {
			fresh()
			truncate(t, segPath, cut)
			at := last.off
			if cut == last.off {
				at = -1 // nothing torn: a clean end
			}
			check(expectRepaired(t, cfg, ws, n-1, seg, at, fmt.Sprintf("%s, last record cut at offset %d", name, cut)), n-1)
			if t.Failed() {
				return
			}
		}
		// Zeros and garbage after the last record (a preallocated or
		// half-written block), and instead of part of it.
		for _, size := range []int{1, 16, 100, 4096, 70000} {
			fresh()
			appendBytes(t, segPath, make([]byte, size))
			check(expectRepaired(t, cfg, ws, n, seg, last.end, fmt.Sprintf("%s, %d zero bytes after the last record", name, size)), n)
			fresh()
			appendBytes(t, segPath, randomBytes(rng, size))
			check(expectRepaired(t, cfg, ws, n, seg, last.end, fmt.Sprintf("%s, %d garbage bytes after the last record", name, size)), n)
		}
		for range pick(3, 10) {
			cut := last.off + 1 + rng.Int64N(last.end-last.off-1)
			size := 1 + rng.IntN(64)
			fresh()
			truncate(t, segPath, cut)
			appendBytes(t, segPath, make([]byte, size))
			check(expectRepaired(t, cfg, ws, n-1, seg, last.off, fmt.Sprintf("%s, last record cut at %d plus %d zeros", name, cut, size)), n-1)
			fresh()
			truncate(t, segPath, cut)
			appendBytes(t, segPath, randomBytes(rng, size))
			check(expectRepaired(t, cfg, ws, n-1, seg, last.off, fmt.Sprintf("%s, last record cut at %d plus %d garbage bytes", name, cut, size)), n-1)
		}
		fresh()
		writeAt(t, segPath, last.off, make([]byte, last.end-last.off))
		check(expectRepaired(t, cfg, ws, n-1, seg, last.off, name+", last record zeroed"), n-1)
		for range pick(4, 20) {
			fresh()
			flipBit(t, rng, segPath, last.off+frameHeaderOffset(rng, last))
			check(expectRepaired(t, cfg, ws, n-1, seg, last.off, name+", a bit of the last record flipped"), n-1)
		}

		// A bad record with valid records after it is not a torn tail.
		if len(recs) >= 2 {
			for _, i := range []int{0, (len(recs) - 1) / 2, len(recs) - 2} {
				r := recs[i]
				fresh()
				flipBit(t, rng, segPath, r.off+frameHeaderOffset(rng, r))
				check(expectRefusal(t, cfg, fmt.Sprintf("%s, a bit of revision %d flipped in the last segment", name, r.rev), atOffset(seg, r.off)...), 0)
			}
		}
		if t.Failed() {
			return
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
		t.Fatalf("kvd stop: %v\n%s", err, tail(k.log.String(), 2000))
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
		case exit.code != 1 || crashed(exit.stderr) || !strings.Contains(refusal(exit.stderr), "state"):
			t.Errorf("%s: kvd exited with %v, want a clean refusal (exit status 1, a message naming the state file):\n%s",
				what, exit.err, excerpt(exit.stderr, 3000))
			row.count(0, 1)
		default:
			row.count(0, 0)
		}
	}
}
