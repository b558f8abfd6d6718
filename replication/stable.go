package replication

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"sync"

	"github.com/kvdstore/kvd/wal"
)

// StableStore is a raft.StableStore (the current term, the last vote) kept
// in a file of its own, never beside unsynced data: every Set writes the
// whole file under a temporary name, fsyncs it, renames it into place and
// fsyncs the directory (wal.WriteFileDurably) before it returns, so that a vote or a term, once
// Raft acts on it, survives a power loss. It holds a handful of small keys.
//
// The file: "kvd-raft-stable 1\n", then per key uvarint key length | key |
// uvarint value length | value, then a CRC-32C (Castagnoli) of everything
// before it, big endian. A file that does not check is an error at open.
type StableStore struct {
	path string

	mu sync.Mutex
	kv map[string][]byte
}

const stableMagic = "kvd-raft-stable 1\n"

// errNotFound is what Raft expects from Get for a missing key: it compares
// the error's text (as its own InmemStore answers).
var errNotFound = errors.New("not found")

// OpenStableStore opens the stable store in the file path, which need not
// exist yet.
func OpenStableStore(path string) (*StableStore, error) {
	s := &StableStore{path: path, kv: map[string][]byte{}}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("replication: read the stable store: %w", err)
	}
	if err := s.decode(b); err != nil {
		return nil, fmt.Errorf("replication: stable store %s: %w", path, err)
	}
	return s, nil
}

func (s *StableStore) decode(b []byte) error {
	if len(b) < len(stableMagic)+4 || !bytes.HasPrefix(b, []byte(stableMagic)) {
		return errors.New("not a stable store file")
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return errors.New("checksum mismatch: the file is damaged")
	}
	p := body[len(stableMagic):]
	for len(p) > 0 {
		k, rest, ok := readBytes(p)
		if !ok {
			return errors.New("malformed key")
		}
		v, rest, ok := readBytes(rest)
		if !ok {
			return errors.New("malformed value")
		}
		s.kv[string(k)] = bytes.Clone(v)
		p = rest
	}
	return nil
}

func readBytes(p []byte) (b, rest []byte, ok bool) {
	n, k := binary.Uvarint(p)
	if k <= 0 || uint64(len(p)-k) < n {
		return nil, nil, false
	}
	return p[k : k+int(n)], p[k+int(n):], true
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Set stores val under key, durably.
func (s *StableStore) Set(key, val []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.kv[string(key)]
	s.kv[string(key)] = bytes.Clone(val)
	if err := s.write(); err != nil {
		if had {
			s.kv[string(key)] = old
		} else {
			delete(s.kv, string(key))
		}
		return err
	}
	return nil
}

// Get returns the value of key, or an error whose text is "not found".
func (s *StableStore) Get(key []byte) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.kv[string(key)]
	if !ok {
		return nil, errNotFound
	}
	return bytes.Clone(v), nil
}

// SetUint64 stores val under key, durably.
func (s *StableStore) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 returns the value of key, 0 if it has none.
func (s *StableStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if errors.Is(err, errNotFound) {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("replication: stable store key %q holds %d bytes, not a uint64", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// write replaces the file with the current keys. Called with mu held.
func (s *StableStore) write() error {
	b := []byte(stableMagic)
	for k, v := range s.kv {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	if err := wal.WriteFileDurably(s.path, b, 0o600); err != nil {
		return fmt.Errorf("replication: write the stable store: %w", err)
	}
	return nil
}
