// Package faults is the seam through which kvd's own tests inject I/O
// failures into a store: a test registers hooks for a data directory, and
// the engine uses them when it opens that directory. It is internal to the
// module, so that the engine's public Options carry no fault-injection
// hooks; nothing registers hooks outside tests.
package faults

import (
	"os"
	"path/filepath"
	"sync"
)

// Hooks replace I/O calls of a store.
type Hooks struct {
	// SyncFile, if set, replaces the fsync of the log's segment files.
	SyncFile func(f *os.File) error
}

var (
	mu    sync.Mutex
	byDir = map[string]Hooks{}
)

// Set registers h for the store in dir until the returned function is
// called (pass it to t.Cleanup).
func Set(dir string, h Hooks) (undo func()) {
	key := abs(dir)
	mu.Lock()
	byDir[key] = h
	mu.Unlock()
	return func() {
		mu.Lock()
		delete(byDir, key)
		mu.Unlock()
	}
}

// For returns the hooks registered for the store in dir: none, normally.
func For(dir string) Hooks {
	mu.Lock()
	defer mu.Unlock()
	if len(byDir) == 0 {
		return Hooks{}
	}
	return byDir[abs(dir)]
}

func abs(dir string) string {
	if a, err := filepath.Abs(dir); err == nil {
		return a
	}
	return dir
}
