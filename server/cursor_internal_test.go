package server

import (
	"fmt"
	"testing"
)

// TestCursorTableEvictsTheBiggest checks the cursor table's bounds: a
// connection over its quota loses its own oldest cursor, and over the
// table's bound the connection holding the most loses its oldest, never
// one holding fewer.
func TestCursorTableEvictsTheBiggest(t *testing.T) {
	tab := newCursorTable(10, 1<<20, 4, 1<<10)
	small := tab.put(1, []byte("small"))
	var mine []uint64
	for i := range 6 {
		mine = append(mine, tab.put(2, []byte(fmt.Sprint("k", i))))
	}
	for _, id := range mine[:2] {
		if _, ok := tab.get(id); ok {
			t.Errorf("connection 2 kept more than its quota of 4 cursors")
		}
	}
	for i := range 3 {
		for range 2 {
			tab.put(int64(10+i), []byte("x")) // 1 + 4 + 6 = 11 > 10
		}
	}
	if _, ok := tab.get(small); !ok {
		t.Error("the cursor of the connection holding one was evicted")
	}
	if tab.n > 10 {
		t.Errorf("table holds %d cursors, bound 10", tab.n)
	}
	if got := tab.owners[2].lru.Len(); got != 3 {
		t.Errorf("connection 2 (the biggest) holds %d cursors, want 3 after one eviction", got)
	}
	tab.drop(2)
	if _, ok := tab.owners[2]; ok || tab.n != 7 {
		t.Errorf("after drop: owner 2 present %v, %d cursors, want 7", ok, tab.n)
	}
	// Bytes: a key past a connection's byte quota evicts its older ones.
	big := make([]byte, 800)
	a := tab.put(3, big)
	tab.put(3, big)
	if _, ok := tab.get(a); ok {
		t.Error("connection 3 kept 1600 bytes of cursors, quota 1024")
	}
}
