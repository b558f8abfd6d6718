package replication

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/kvdstore/kvd/wal"
)

// quiet are log options under which only StoreLogs fsyncs: the flusher's
// interval is an hour.
var quiet = wal.Options{FlushInterval: time.Hour}

func openStore(t *testing.T, dir string, from uint64) *LogStore {
	t.Helper()
	s, err := OpenLogStore(dir, from, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func command(index uint64, data string, sync bool) *raft.Log {
	e := &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: []byte(data)}
	if sync {
		e.Extensions = []byte{SyncFlag}
	}
	return e
}

func commands(first, n uint64, sync bool) []*raft.Log {
	var es []*raft.Log
	for i := range n {
		es = append(es, command(first+i, fmt.Sprintf("cmd %d", first+i), sync))
	}
	return es
}

func wantBounds(t *testing.T, s *LogStore, first, last uint64) {
	t.Helper()
	f, _ := s.FirstIndex()
	l, _ := s.LastIndex()
	if f != first || l != last {
		t.Fatalf("log holds %d..%d, want %d..%d", f, l, first, last)
	}
}

func wantData(t *testing.T, s *LogStore, index uint64, data string) {
	t.Helper()
	var e raft.Log
	if err := s.GetLog(index, &e); err != nil {
		t.Fatalf("GetLog(%d): %v", index, err)
	}
	if e.Index != index || string(e.Data) != data {
		t.Fatalf("GetLog(%d) = index %d, data %q; want %q", index, e.Index, e.Data, data)
	}
}

// TestEntryRoundTrip stores entries of every shape and reads them back,
// before and after a reopen.
func TestEntryRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, 1)
	wantBounds(t, s, 0, 0)
	var e raft.Log
	if err := s.GetLog(1, &e); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog on an empty log: %v, want ErrLogNotFound", err)
	}
	at := time.Unix(1700000000, 123456789)
	in := []*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogConfiguration, Data: []byte("config")},
		{Index: 2, Term: 1, Type: raft.LogNoop},
		{Index: 3, Term: 2, Type: raft.LogCommand, Data: []byte("set a 1"), Extensions: []byte{SyncFlag, 7}, AppendedAt: at},
		{Index: 4, Term: 1 << 40, Type: raft.LogBarrier, Data: bytes.Repeat([]byte{0}, 1000)},
	}
	if err := s.StoreLogs(in); err != nil {
		t.Fatal(err)
	}
	check := func(s *LogStore) {
		t.Helper()
		wantBounds(t, s, 1, 4)
		for _, want := range in {
			var got raft.Log
			if err := s.GetLog(want.Index, &got); err != nil {
				t.Fatal(err)
			}
			if got.Index != want.Index || got.Term != want.Term || got.Type != want.Type ||
				!bytes.Equal(got.Data, want.Data) || !bytes.Equal(got.Extensions, want.Extensions) || !got.AppendedAt.Equal(want.AppendedAt) {
				t.Fatalf("entry %d read back as %+v, want %+v", want.Index, got, *want)
			}
		}
		if err := s.GetLog(5, &e); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("GetLog past the end: %v, want ErrLogNotFound", err)
		}
	}
	check(s)
	s.Close()
	check(openStore(t, dir, 1))
}

// TestStoreLogsSyncRule checks when StoreLogs fsyncs: for a command entry
// that asks (SyncFlag) and for every entry that is not a command, never
// for unflagged commands.
func TestStoreLogsSyncRule(t *testing.T) {
	s := openStore(t, t.TempDir(), 1)
	fsyncs := func() uint64 { return s.Stats().Fsyncs }
	base := fsyncs()

	if err := s.StoreLogs(commands(1, 5, false)); err != nil {
		t.Fatal(err)
	}
	if n := fsyncs(); n != base {
		t.Fatalf("storing async commands fsynced %d times", n-base)
	}
	if d := s.DurableIndex(); d >= 5 {
		t.Fatalf("durable index %d after async commands only", d)
	}

	// A flagged command last in a batch makes the whole batch durable.
	batch := append(commands(6, 3, false), command(9, "sync", true))
	if err := s.StoreLogs(batch); err != nil {
		t.Fatal(err)
	}
	if n := fsyncs(); n != base+1 || s.DurableIndex() != 9 {
		t.Fatalf("after a batch with a sync command: %d fsyncs, durable %d; want 1 and 9", n-base, s.DurableIndex())
	}
	// A flagged command first in a batch too.
	batch = append([]*raft.Log{command(10, "sync", true)}, commands(11, 2, false)...)
	if err := s.StoreLogs(batch); err != nil {
		t.Fatal(err)
	}
	if n := fsyncs(); n != base+2 || s.DurableIndex() != 12 {
		t.Fatalf("after a batch led by a sync command: %d fsyncs, durable %d; want 2 and 12", n-base, s.DurableIndex())
	}
	for i, typ := range []raft.LogType{raft.LogConfiguration, raft.LogNoop, raft.LogBarrier} {
		idx := uint64(13 + 2*i)
		batch := []*raft.Log{command(idx, "async", false), {Index: idx + 1, Term: 1, Type: typ}}
		if err := s.StoreLogs(batch); err != nil {
			t.Fatal(err)
		}
		if n := fsyncs(); n != base+3+uint64(i) || s.DurableIndex() != idx+1 {
			t.Fatalf("after a %v entry: %d fsyncs, durable %d; want %d and %d", typ, n-base, s.DurableIndex(), 3+i, idx+1)
		}
	}
	if err := s.StoreLogs(commands(19, 2, false)); err != nil {
		t.Fatal(err)
	}
	if n := fsyncs(); n != base+5 {
		t.Fatalf("async commands after sync ones fsynced: %d fsyncs, want 5", n-base)
	}
	if err := s.Sync(); err != nil || s.DurableIndex() != 20 {
		t.Fatalf("Sync: %v, durable %d; want 20", err, s.DurableIndex())
	}
}

// TestDeleteRange deletes a conflicting suffix, a prefix and everything,
// as Raft does, and appends after each.
func TestDeleteRange(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, 1)
	if err := s.StoreLogs(commands(1, 10, false)); err != nil {
		t.Fatal(err)
	}
	// Overwriting without deleting first is refused.
	if err := s.StoreLogs([]*raft.Log{command(8, "other", false)}); err == nil {
		t.Fatal("StoreLogs overwrote entry 8 without a DeleteRange")
	}
	wantData(t, s, 8, "cmd 8")

	// A new leader's conflicting suffix.
	if err := s.DeleteRange(8, 10); err != nil {
		t.Fatal(err)
	}
	wantBounds(t, s, 1, 7)
	if err := s.StoreLogs([]*raft.Log{command(8, "new 8", true)}); err != nil {
		t.Fatal(err)
	}
	wantData(t, s, 8, "new 8")
	if d := s.DurableIndex(); d != 8 {
		t.Fatalf("durable index %d after a sync entry at 8", d)
	}

	// A prefix: whole segments go, the rest stays readable.
	if err := s.DeleteRange(1, 5); err != nil {
		t.Fatal(err)
	}
	if f, _ := s.FirstIndex(); f > 6 {
		t.Fatalf("first index %d after deleting 1..5, entry 6 is gone", f)
	}
	wantData(t, s, 6, "cmd 6")

	// A range in the middle is refused.
	if err := s.DeleteRange(7, 7); err == nil {
		t.Fatal("DeleteRange of the middle of the log succeeded")
	}

	// Everything, as after a user restore; the next entry may come later.
	if err := s.DeleteRange(1, 8); err != nil {
		t.Fatal(err)
	}
	wantBounds(t, s, 0, 0)
	if err := s.StoreLogs(commands(50, 3, true)); err != nil {
		t.Fatal(err)
	}
	wantBounds(t, s, 50, 52)
	s.Close()
	s = openStore(t, dir, 50)
	wantBounds(t, s, 50, 52)
	wantData(t, s, 51, "cmd 51")
}

// TestStoreAfterGap appends after a gap, as a follower does once it has
// installed its leader's snapshot: the log starts afresh at the entry.
func TestStoreAfterGap(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, 1)
	if err := s.StoreLogs(commands(1, 5, false)); err != nil {
		t.Fatal(err)
	}
	if err := s.StoreLogs(commands(100, 2, false)); err != nil {
		t.Fatal(err)
	}
	wantBounds(t, s, 100, 101)
	var e raft.Log
	if err := s.GetLog(3, &e); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog of an entry before the gap: %v, want ErrLogNotFound", err)
	}
	if err := s.StoreLogs(commands(102, 1, false)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir, 100)
	wantBounds(t, s, 100, 102)
	wantData(t, s, 102, "cmd 102")
	// Not contiguous within a call: refused, nothing stored.
	if err := s.StoreLogs([]*raft.Log{command(103, "a", false), command(105, "b", false)}); err == nil {
		t.Fatal("StoreLogs accepted entries with a gap between them")
	}
	wantBounds(t, s, 100, 102)
}

// TestConcurrentReads reads entries while others are appended and the
// front is deleted (run under -race in CI).
func TestConcurrentReads(t *testing.T) {
	s, err := OpenLogStore(t.TempDir(), 1, wal.Options{FlushInterval: time.Hour, SegmentSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 2000
	var wg sync.WaitGroup
	done := make(chan struct{})
	errc := make(chan error, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var e raft.Log
			for {
				select {
				case <-done:
					return
				default:
				}
				first, _ := s.FirstIndex()
				last, _ := s.LastIndex()
				if last == 0 {
					continue
				}
				for i := max(first, last-20); i <= last; i++ {
					err := s.GetLog(i, &e)
					if errors.Is(err, raft.ErrLogNotFound) {
						continue // deleted meanwhile
					}
					if err != nil || string(e.Data) != fmt.Sprintf("cmd %d", i) {
						errc <- fmt.Errorf("GetLog(%d) = %q, %v", i, e.Data, err)
						return
					}
				}
			}
		}()
	}
	for i := uint64(1); i <= n; i += 10 {
		if err := s.StoreLogs(commands(i, 10, i%100 == 1)); err != nil {
			t.Fatal(err)
		}
		if i%200 == 1 && i > 200 {
			if err := s.DeleteRange(1, i-100); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(done)
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	wantData(t, s, n, fmt.Sprintf("cmd %d", n))
}

// TestOpenPastTheEnd reopens a log whose entries a snapshot all covers, as
// after a user restore (Raft deletes every entry and burns an index): the
// log starts afresh and takes the next entry.
func TestOpenPastTheEnd(t *testing.T) {
	for _, deleteAll := range []bool{true, false} {
		t.Run(fmt.Sprintf("deleted=%v", deleteAll), func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir, 1)
			if err := s.StoreLogs(commands(1, 10, true)); err != nil {
				t.Fatal(err)
			}
			if deleteAll {
				if err := s.DeleteRange(1, 10); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			s = openStore(t, dir, 12) // a snapshot at 11
			wantBounds(t, s, 0, 0)
			if err := s.StoreLogs(commands(12, 2, true)); err != nil {
				t.Fatal(err)
			}
			wantBounds(t, s, 12, 13)
			s.Close()
			s = openStore(t, dir, 12)
			wantBounds(t, s, 12, 13)
			wantData(t, s, 13, "cmd 13")
		})
	}
}

// TestDeleteAppliedIsDivergence: deleting the log's end is allowed down to
// the first entry not applied; reaching an applied entry is refused with
// ErrDiverged, which stays. Deleting a prefix is never divergence.
func TestDeleteAppliedIsDivergence(t *testing.T) {
	s := openStore(t, filepath.Join(t.TempDir(), "log"), 1)
	if err := s.StoreLogs(commands(1, 10, false)); err != nil {
		t.Fatal(err)
	}
	s.SetApplied(func() uint64 { return 6 })
	if err := s.DeleteRange(8, 10); err != nil {
		t.Fatalf("delete of entries not applied: %v", err)
	}
	if err := s.DeleteRange(1, 3); err != nil {
		t.Fatalf("delete of a prefix: %v", err)
	}
	if s.Diverged() != nil {
		t.Fatalf("diverged after legitimate deletions: %v", s.Diverged())
	}
	err := s.DeleteRange(6, 7)
	if !errors.Is(err, ErrDiverged) || !errors.Is(s.Diverged(), ErrDiverged) {
		t.Fatalf("delete of applied entry 6: %v, Diverged %v; want ErrDiverged", err, s.Diverged())
	}
	if last, _ := s.LastIndex(); last != 7 {
		t.Fatalf("the refused delete left the log ending at %d, want 7", last)
	}
}
