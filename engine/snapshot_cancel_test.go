package engine_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
)

// blockingWriter blocks its first Write until release is closed, telling
// started when it begins.
type blockingWriter struct {
	started, release chan struct{}
	n                int
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	if w.n == 0 {
		close(w.started)
		<-w.release
	}
	w.n++
	return len(p), nil
}

// TestRestoreCancelsOpenSnapshots: a restore does not wait for the
// snapshots still open to be closed (Raft's FSM restores while a snapshot
// it took waits for Raft's main loop, which waits for the restore): it
// cancels them, waiting only for a WriteTo running to reach its next
// write, and their WriteTo and StateHash then fail with
// ErrSnapshotCanceled. Both restores: a replica's and a single node's.
func TestRestoreCancelsOpenSnapshots(t *testing.T) {
	const timeout = 10 * time.Second
	// 20 values of 32 KiB: a snapshot of several of WriteTo's 256 KiB
	// writes, so that the one blocked is not its last.
	big := strings.Repeat("v", 32<<10)
	// done runs f and fails the test if it has not returned in time; then
	// it closes the snapshots, which lets f end (and the DB close).
	done := func(t *testing.T, what string, f func() error, snaps ...*engine.Snapshot) error {
		t.Helper()
		errc := make(chan error, 1)
		go func() { errc <- f() }()
		select {
		case err := <-errc:
			return err
		case <-time.After(timeout):
			// At once: bbolt's Close, waiting for the transactions, holds
			// the lock each Rollback takes once it has let go of its own.
			for _, s := range snaps {
				go s.Close()
			}
			<-errc
			t.Fatalf("%s had not returned after %v: it waited for the open snapshots", what, timeout)
			return nil
		}
	}
	// open takes three snapshots of db: one left untouched, one whose
	// WriteTo is blocked in its first write, one for StateHash.
	type opened struct {
		idle, writing, hashing *engine.Snapshot
		w                      *blockingWriter
		writeErr               chan error
	}
	takeSnapshots := func(t *testing.T, take func() (*engine.Snapshot, error)) *opened {
		t.Helper()
		o := &opened{w: &blockingWriter{started: make(chan struct{}), release: make(chan struct{})}, writeErr: make(chan error, 1)}
		for _, s := range []**engine.Snapshot{&o.idle, &o.writing, &o.hashing} {
			var err error
			if *s, err = take(); err != nil {
				t.Fatal(err)
			}
		}
		go func() {
			_, err := o.writing.WriteTo(o.w)
			o.writeErr <- err
		}()
		<-o.w.started
		return o
	}
	// restore runs restore while o's snapshots are open, releasing the
	// blocked write 100 ms in, then checks the snapshots and the store.
	restore := func(t *testing.T, db *engine.DB, o *opened, what string, restore func() error) {
		t.Helper()
		err := done(t, what, func() error {
			go func() { time.Sleep(100 * time.Millisecond); close(o.w.release) }()
			return restore()
		}, o.idle, o.writing, o.hashing)
		if err != nil {
			t.Fatal(err)
		}
		if v, err := db.Get([]byte("k7")); err != nil || string(v) != big {
			t.Fatalf("k7 after the restore: %d bytes, %v; want %d", len(v), err, len(big))
		}
		if err := <-o.writeErr; !errors.Is(err, engine.ErrSnapshotCanceled) {
			t.Errorf("WriteTo running during the restore: %v, want ErrSnapshotCanceled", err)
		}
		if _, err := o.idle.WriteTo(io.Discard); !errors.Is(err, engine.ErrSnapshotCanceled) {
			t.Errorf("WriteTo after the restore: %v, want ErrSnapshotCanceled", err)
		}
		if _, err := o.hashing.StateHash(); !errors.Is(err, engine.ErrSnapshotCanceled) {
			t.Errorf("StateHash after the restore: %v, want ErrSnapshotCanceled", err)
		}
		for _, s := range []*engine.Snapshot{o.idle, o.writing, o.hashing} {
			if err := s.Close(); err != nil {
				t.Errorf("Close of a canceled snapshot: %v", err)
			}
		}
	}

	t.Run("replica", func(t *testing.T) {
		log := newFakeLog()
		db, err := engine.OpenReplica(t.TempDir(), engine.Options{}, log)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		for i := uint64(1); i <= 20; i++ {
			if _, err := db.ApplyEntry(i, putPayload(fmt.Sprintf("k%d", i), big)); err != nil {
				t.Fatal(err)
			}
		}
		log.setDurable(20)
		snap, index, err := db.ReplicaSnapshot()
		if err != nil {
			t.Fatal(err)
		}
		snap.SetMetadata(binary.BigEndian.AppendUint64(nil, index))
		var buf bytes.Buffer
		if _, err := snap.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		snap.Close()
		o := takeSnapshots(t, func() (*engine.Snapshot, error) { s, _, err := db.ReplicaSnapshot(); return s, err })
		indexOf := func(meta []byte) (uint64, error) { return binary.BigEndian.Uint64(meta), nil }
		restore(t, db, o, "RestoreReplica", func() error {
			_, err := db.RestoreReplica(bytes.NewReader(buf.Bytes()), indexOf)
			return err
		})
	})

	t.Run("single node", func(t *testing.T) {
		db := open(t, t.TempDir(), engine.Options{})
		for i := range 20 {
			mustPut(t, db, fmt.Sprintf("k%d", i), big)
		}
		b, _ := snapshotBytes(t, db, nil)
		o := takeSnapshots(t, db.Snapshot)
		restore(t, db, o, "Restore", func() error {
			_, err := db.Restore(bytes.NewReader(b))
			return err
		})
	})
}
