// Package archtest holds the test that keeps kvd's imports flowing one way:
// cmd → server/client → engine → wal. It has no code of its own.
package archtest
