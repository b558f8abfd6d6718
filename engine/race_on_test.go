//go:build race

package engine_test

// raceEnabled: the race detector is on. Under it sync.Pool drops items at
// random, so the read path's cursor pool allocates now and then and
// allocation counts mean nothing.
const raceEnabled = true
