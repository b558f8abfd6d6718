package replication

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/kvtest"
)

// TestStateCheck: the leader's state check gets every member's hash of
// its state at one log entry, and they agree, after writes (with expiries
// and deletes) and after a follower's restart.
func TestStateCheck(t *testing.T) {
	c := startCluster(t, 3)
	write := func(from, to int) {
		for i := from; i < to; i++ {
			n := c.nodes[i%3]
			if n == nil { // stopped
				n = c.nodes[c.leader()]
			}
			s := n.Store(Linearizable)
			var b engine.Batch
			b.Put([]byte(fmt.Sprintf("k%d", i%17)), []byte(fmt.Sprint(i)))
			if i%5 == 0 {
				b.Delete([]byte(fmt.Sprintf("k%d", (i+3)%17)))
			}
			if _, err := s.WriteContext(t.Context(), &b, engine.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	check := func() StateCheck {
		t.Helper()
		l := c.nodes[c.leader()]
		sc, err := l.CheckState()
		if err != nil {
			t.Fatal(err)
		}
		if len(sc.Hashes) != 3 || len(sc.Mismatched) != 0 {
			t.Fatalf("state check: %+v", sc)
		}
		var first string
		for id, h := range sc.Hashes {
			if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
				t.Fatalf("%s: no hash: %q (index %d)", id, h, sc.Index)
			}
			if first == "" {
				first = h
			} else if h != first {
				t.Fatalf("the hashes differ yet no mismatch is reported: %+v", sc)
			}
		}
		if got := l.Status().StateCheck; got == nil || got.Index != sc.Index {
			t.Fatalf("status reports %+v, want the check at index %d", got, sc.Index)
		}
		return sc
	}
	write(0, 100)
	a := check()
	write(100, 150)
	f := (c.leader() + 1) % 3
	c.nodes[f].Close()
	c.nodes[f] = nil
	write(150, 200)
	c.restart(f)
	// A follower that is behind answers only once it applied the check's
	// entry (within the leader's wait): let the restarted one catch up.
	kvtest.Eventually(t, 30*time.Second, "the restarted follower to catch up", func() bool {
		return c.nodes[f].Status().AppliedIndex >= c.nodes[c.leader()].Status().AppliedIndex
	})
	b := check()
	if b.Index <= a.Index || b.Revision <= a.Revision {
		t.Fatalf("second check at index %d revision %d, first at %d %d", b.Index, b.Revision, a.Index, a.Revision)
	}
	if checks, mismatches := c.nodes[c.leader()].StateChecks(); checks == 0 || mismatches != 0 {
		t.Fatalf("checks %d, mismatches %d", checks, mismatches)
	}
}

// TestCompareHashes: a member whose hash differs from the leader's is
// mismatched; one without a hash is reported with why, not as a mismatch.
func TestCompareHashes(t *testing.T) {
	c := compareHashes("a", 7, map[string]hashResult{
		"a": {Index: 7, Revision: 5, Hash: "aa"},
		"b": {Index: 7, Revision: 5, Hash: "aa"},
		"c": {Index: 7, Revision: 5, Hash: "cc"},
		"d": {Index: 7, Err: "no answer: refused"},
	})
	if c.Revision != 5 || c.Index != 7 || fmt.Sprint(c.Mismatched) != "[c]" || c.Hashes["d"] != "no answer: refused" || c.Hashes["b"] != "aa" {
		t.Fatalf("%+v", c)
	}
	if c := compareHashes("a", 7, map[string]hashResult{"a": {Err: "x"}, "b": {Hash: "bb"}}); len(c.Mismatched) != 0 {
		t.Fatalf("without the leader's hash nothing can mismatch: %+v", c)
	}
}
