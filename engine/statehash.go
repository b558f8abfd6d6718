package engine

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// StateHash returns a SHA-256 of the store's content at the snapshot's
// revision: every key in order with its value, create and mod revisions and
// expiry time, then the revision. Two stores that applied the same
// batches hash alike whatever their files' layout, so replicas compare
// their states with it. Keys that have expired but not been removed are
// part of the content (a replica removes them only through its log). It
// reads the whole store: O(keys), run it off any hot path. It may be
// called after or instead of WriteTo, before Close.
func (s *Snapshot) StateHash() ([sha256.Size]byte, error) {
	var out [sha256.Size]byte
	h := sha256.New()
	var buf []byte
	add := func(key []byte, e memEntry) {
		buf = binary.AppendUvarint(buf[:0], uint64(len(key)))
		buf = append(buf, key...)
		buf = binary.AppendUvarint(buf, uint64(len(e.value)))
		buf = append(buf, e.value...)
		buf = binary.AppendUvarint(buf, e.create)
		buf = binary.AppendUvarint(buf, e.mod)
		buf = binary.AppendVarint(buf, e.expires)
		h.Write(buf)
	}
	tx, err := s.use()
	if err != nil {
		return out, err
	}
	defer s.mu.Unlock()
	kv := tx.Bucket(bucketKV)
	if kv == nil {
		return out, fmt.Errorf("engine: state hash: no %s bucket", bucketKV)
	}
	state := newBoltSource(s.db, kv.Cursor(), nil)
	delta := s.delta
	for {
		if s.canceled.Load() {
			return out, ErrSnapshotCanceled
		}
		if state.err != nil {
			return out, fmt.Errorf("engine: state hash: %w", state.err)
		}
		sk := state.key()
		var dk []byte
		if len(delta) > 0 {
			dk = []byte(delta[0].key)
		}
		switch {
		case sk == nil && dk == nil:
			buf = binary.BigEndian.AppendUint64(buf[:0], s.rev)
			h.Write(buf)
			h.Sum(out[:0])
			return out, nil
		case dk == nil || sk != nil && bytes.Compare(sk, dk) < 0:
			e, err := state.entry()
			if err != nil {
				return out, fmt.Errorf("engine: state hash: %w", err)
			}
			add(sk, e)
			state.next()
		default:
			e := delta[0].e
			delta = delta[1:]
			if sk != nil && bytes.Equal(sk, dk) {
				below, err := state.entry()
				if err != nil {
					return out, fmt.Errorf("engine: state hash: %w", err)
				}
				if e.inherit && e.inheritsFrom(below) {
					e.create = below.create
				}
				state.next()
			}
			if !e.del {
				add(dk, e)
			}
		}
	}
}
