// Package kvtest holds helpers shared by the tests of several packages:
//
//   - kvd processes for the black-box suites (tests/...): Build compiles
//     the binaries once in TestMain, Start runs kvd on a data directory
//     and free 127.0.0.1 ports and waits until it listens, and a Proc
//     stops, kills and reports on it (its log, its exit status).
//   - polling with a deadline instead of sleeping: WaitFor and Eventually.
//   - Listen, a listener on a free 127.0.0.1 port for in-process servers.
//   - Require and NeedTool: a test that needs root, a device or a tool
//     skips without it, except under CI=true, where it fails.
//   - process-wide limits for tests that run alone in their own process:
//     FileLimit and InSubprocess.
//
// It imports nothing of kvd's, so that the tests of every package,
// engine and wal among them, may use it.
package kvtest
