package client

import (
	"errors"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Errors returned by the client. Server error replies are returned as
// *ServerError; the ones kvd defines unwrap to these sentinels, so that
// errors.Is(err, client.ErrValueTooLarge) works across the network.
var (
	// ErrNotFound is returned by Get for a missing key.
	ErrNotFound = errors.New("kvd: not found")
	// ErrKeyTooLarge and ErrValueTooLarge: the server refused a key or value
	// over its limits (32 KiB keys, --max-value-size values by default).
	ErrKeyTooLarge   = errors.New("kvd: key too large")
	ErrValueTooLarge = errors.New("kvd: value too large")
	// ErrEmptyKey: kvd keys must not be empty.
	ErrEmptyKey = errors.New("kvd: empty key")
	// ErrLogFailed: the server's write-ahead log failed; it refuses writes
	// (and serves reads) until it restarts. The write was not executed.
	ErrLogFailed = errors.New("kvd: server write-ahead log failed")
	// ErrWriteRefused: the server's write-ahead log could not write this
	// write (a full disk, say): it was not executed, and retrying it is
	// safe. The server takes writes again once its log can write.
	ErrWriteRefused = errors.New("kvd: write refused, not executed")
	// ErrOutcomeUnknown: the write may or may not have been executed (the
	// server's log failed after the write may have reached it). Read before
	// retrying a write that is not idempotent, such as INCR.
	ErrOutcomeUnknown = errors.New("kvd: write outcome unknown")
	// ErrCorrupt: the server found the key's value, or a page of its state
	// file on the way to it, damaged. It answers this error rather than
	// wrong data; other keys still read. See "When the state file is
	// damaged" in the README.
	ErrCorrupt = errors.New("kvd: stored data damaged")
	// ErrNotDurable is returned by Sync when the server could not confirm
	// durability in time.
	ErrNotDurable = errors.New("kvd: not durable")
	// ErrClosed is returned by calls on a closed Client.
	ErrClosed = errors.New("kvd: client closed")
	// ErrRevisionMismatch is returned, as a *RevisionMismatchError, by
	// CompareAndPut and CompareAndDelete when the key's mod revision was
	// not the one given: nothing was written.
	ErrRevisionMismatch = errors.New("kvd: revision mismatch")
	// ErrUnauthenticated: the server has users and the client gave no
	// credentials (NOAUTH) or wrong ones (WRONGPASS): Options.Username,
	// Password, PasswordFile.
	ErrUnauthenticated = errors.New("kvd: not authenticated")
	// ErrNoPermission: the client's user may not run the command or reach
	// the key (NOPERM).
	ErrNoPermission = errors.New("kvd: no permission")
)

// RevisionMismatchError is the error of a CompareAndPut or
// CompareAndDelete whose expected mod revision was not the key's. It
// unwraps to ErrRevisionMismatch; get it with errors.As to read the key's
// current mod revision.
type RevisionMismatchError struct {
	// Current is the key's mod revision when the server evaluated the
	// compare, 0 if the key held no value.
	Current uint64
}

func (e *RevisionMismatchError) Error() string {
	if e.Current == 0 {
		return "kvd: revision mismatch: the key holds no value"
	}
	return "kvd: revision mismatch: the key's mod revision is " + strconv.FormatUint(e.Current, 10)
}

// Unwrap returns ErrRevisionMismatch.
func (e *RevisionMismatchError) Unwrap() error { return ErrRevisionMismatch }

// revMismatchPrefix starts the server's reply to a failed compare,
// followed by the key's current mod revision; see server/errors.go.
const revMismatchPrefix = "REVMISMATCH current "

// ServerError is an error reply from the server, such as
// "ERR wrong number of arguments for 'get' command".
type ServerError struct {
	// Msg is the reply's text, starting with its code ("ERR", "MISCONF",
	// "UNKNOWN").
	Msg  string
	kind error
}

func (e *ServerError) Error() string { return "kvd: server: " + e.Msg }

// Unwrap returns the sentinel error matching the reply, if any.
func (e *ServerError) Unwrap() error { return e.kind }

// Error reply prefixes the server sends; see server/errors.go.
var replyKinds = []struct {
	prefix string
	err    error
}{
	{"ERR value too large", ErrValueTooLarge},
	{"ERR key too large", ErrKeyTooLarge},
	{"ERR empty key", ErrEmptyKey},
	{"ERR corrupt", ErrCorrupt},
	{"MISCONF write refused", ErrWriteRefused},
	{"MISCONF", ErrLogFailed},
	{"UNKNOWN ", ErrOutcomeUnknown},
	{"CLUSTERDOWN", ErrNoLeader},
	{"DIVERGED", ErrDiverged},
	{"TOOSTALE", ErrTooStale},
	{"NOAUTH", ErrUnauthenticated},
	{"WRONGPASS", ErrUnauthenticated},
	{"NOPERM", ErrNoPermission},
}

// mapError translates an error from go-redis into the client's errors,
// naming the operation.
func mapError(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, redis.Nil) {
		return ErrNotFound
	}
	if errors.Is(err, redis.ErrClosed) {
		return ErrClosed
	}
	var re redis.Error
	if errors.As(err, &re) {
		if rest, ok := strings.CutPrefix(re.Error(), revMismatchPrefix); ok {
			if n, err := strconv.ParseUint(rest, 10, 64); err == nil {
				return &RevisionMismatchError{Current: n}
			}
		}
		se := &ServerError{Msg: re.Error()}
		for _, k := range replyKinds {
			if strings.HasPrefix(se.Msg, k.prefix) {
				se.kind = k.err
				break
			}
		}
		return se
	}
	return &OpError{Op: op, Err: err}
}

// OpError is a failure to talk to the server (dial, network, timeout,
// context end) during an operation.
type OpError struct {
	Op  string
	Err error
}

func (e *OpError) Error() string { return "kvd: " + e.Op + ": " + e.Err.Error() }
func (e *OpError) Unwrap() error { return e.Err }
