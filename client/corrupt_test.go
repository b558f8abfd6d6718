package client_test

import (
	"context"
	"errors"
	"testing"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/kvtest"
)

// TestCorruptValueMapsBack reads a key whose stored value is damaged: the
// client returns ErrCorrupt, never data, and other keys still read.
func TestCorruptValueMapsBack(t *testing.T) {
	dir := t.TempDir()
	db, err := engine.Open(dir, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"good", "bad"} {
		if _, err := db.Put([]byte(k), []byte("value of "+k), engine.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil { // checkpoints both into the state file
		t.Fatal(err)
	}
	kvtest.DamageValue(t, dir, "bad", kvtest.FlipLastBit)

	e := startServerIn(t, dir, engine.Options{}, nil)
	c := dial(t, e.addr, client.Options{})
	ctx := context.Background()
	if v, err := c.Get(ctx, "bad"); !errors.Is(err, client.ErrCorrupt) {
		t.Fatalf("Get of a damaged value = %q, %v; want ErrCorrupt", v, err)
	}
	if _, err := c.GetEntry(ctx, "bad"); !errors.Is(err, client.ErrCorrupt) {
		t.Fatalf("GetEntry of a damaged value: %v, want ErrCorrupt", err)
	}
	if v, err := c.Get(ctx, "good"); err != nil || string(v) != "value of good" {
		t.Fatalf("Get of an undamaged key = %q, %v", v, err)
	}
}
