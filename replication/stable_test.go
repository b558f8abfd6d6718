package replication

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStableStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stable")
	s, err := OpenStableStore(path)
	if err != nil {
		t.Fatal(err)
	}
	// Raft compares the error's text for a missing key.
	if _, err := s.Get([]byte("LastVoteCand")); err == nil || err.Error() != "not found" {
		t.Fatalf("Get of a missing key: %v, want \"not found\"", err)
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); v != 0 || err != nil {
		t.Fatalf("GetUint64 of a missing key = %d, %v; want 0, nil", v, err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("node-2")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 8); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("the temporary file is left behind: %v", err)
	}

	s, err = OpenStableStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); v != 8 || err != nil {
		t.Fatalf("CurrentTerm after reopen = %d, %v; want 8", v, err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); string(v) != "node-2" || err != nil {
		t.Fatalf("LastVoteCand after reopen = %q, %v", v, err)
	}
	if _, err := s.GetUint64([]byte("LastVoteCand")); err == nil {
		t.Fatal("GetUint64 of a 6-byte value succeeded")
	}

	// A damaged file is refused, never read as empty (which would let the
	// node vote twice in a term).
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, damaged := range [][]byte{
		append(append([]byte{}, b[:len(b)-6]...), b[len(b)-5:]...),               // a byte gone
		append(append(append([]byte{}, b[:20]...), b[20]^1), b[21:]...),          // a bit flipped
		[]byte("kvd-raft-stable 1\n"),                                            // cut short
		append([]byte("kvd-raft-stable 9\n"), b[len("kvd-raft-stable 1\n"):]...), // another format
	} {
		if err := os.WriteFile(path, damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenStableStore(path); err == nil || !strings.Contains(err.Error(), "stable store") {
			t.Errorf("a damaged stable store opened: %v", err)
		}
	}
}
