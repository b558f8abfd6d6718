package server

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/replication"
)

// ErrServerClosed is returned by [Server.ServeRESP] and [Server.ServeHTTPAPI]
// after [Server.Shutdown] or [Server.Close] was called.
var ErrServerClosed = errors.New("server: server closed")

// RESP error replies that clients (kvd's own client among them) recognise by
// their text. They are part of the protocol: change them only together with
// client/errors.go.
const (
	respErrKeyTooLarge   = "ERR key too large"
	respErrValueTooLarge = "ERR value too large"
	respErrArgTooLarge   = "ERR argument too large"
	respErrRequestLarge  = "ERR request too large"
	respErrEmptyKey      = "ERR empty key"
	respErrNotInteger    = "ERR value is not an integer or out of range"
	respErrOverflow      = "ERR increment or decrement would overflow"
	respErrSyntax        = "ERR syntax error"
	respErrNotFloat      = "ERR value is not a valid float"
	respErrFloatRange    = "ERR increment would produce NaN or Infinity"
	respErrStringSize    = "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
	respErrBadRevision   = "ERR revision is not an unsigned integer or out of range"
	respErrLogFailed     = "MISCONF write-ahead log failed; writes are refused until kvd restarts"
	// respErrWriteRefused: the write was not executed (the log could not
	// write it and cut it back out); retrying is safe. The cause follows.
	respErrWriteRefused = "MISCONF write refused, not executed: the write-ahead log could not write it"
	// respErrOutcomeUnknown: the write may or may not have been executed.
	// Its code is kvd's own: MISCONF would say it was not executed, and
	// codes that go-redis retries by itself (TRYAGAIN, LOADING, ...) would
	// apply a write twice. The cause follows.
	respErrOutcomeUnknown = "UNKNOWN outcome unknown: the write may or may not have been executed (the write-ahead log failed); read before retrying"
	respErrClosed         = "ERR store is closed"
	// respErrNoLeader: on a cluster, no leader is known (an election is
	// under way, or no quorum is reachable); nothing was executed. The
	// code is Redis Cluster's for a cluster that cannot serve.
	respErrNoLeader = "CLUSTERDOWN no leader: the cluster has no leader that this node can reach; nothing was executed"
	// respErrLeadershipLost: on a cluster, the write reached a leader
	// that lost its leadership before it was known committed.
	// respErrDiverged: this node holds entries the cluster lost (after a
	// power loss of a majority in async mode) and serves nothing until it
	// is rebuilt.
	respErrDiverged       = "DIVERGED this node has diverged from the cluster and serves nothing until it is rebuilt (see README, \"Rebuilding a diverged node\")"
	respErrLeadershipLost = "UNKNOWN outcome unknown: the write may or may not have been executed (the leader lost its leadership before it was known committed); read before retrying"
	// respErrCorrupt: the key's value, or a page of the state file on
	// the way to it, is damaged; the detail follows. Other keys still
	// read (see "When the state file is damaged" in README.md).
	respErrCorrupt    = "ERR corrupt"
	respErrMaxClients = "ERR max number of clients reached"
	// respErrRevMismatch starts the reply to a CAS or CAD whose expected
	// mod revision was not the key's; the key's current mod revision
	// follows after a space (0: the key holds no value). Its code is kvd's
	// own so that clients tell it apart from a bad request (ERR), as
	// Redis's BUSYKEY or WRONGTYPE are.
	respErrRevMismatch = "REVMISMATCH current"
)

// respError translates an error from the store into the text of a RESP
// error reply (without the leading '-').
func respError(err error) string {
	var moved *movedError
	switch {
	case errors.As(err, &moved):
		return moved.Error()
	case errors.Is(err, replication.ErrNoLeader):
		return respErrNoLeader
	case errors.Is(err, replication.ErrDiverged):
		return respErrDiverged
	case errors.Is(err, replication.ErrTooStale):
		return "TOOSTALE " + oneLine(err.Error())
	case errors.Is(err, replication.ErrLeadershipLost):
		return respErrLeadershipLost
	case errors.Is(err, engine.ErrKeyTooLarge):
		return respErrKeyTooLarge
	case errors.Is(err, engine.ErrValueTooLarge):
		return respErrValueTooLarge
	case errors.Is(err, engine.ErrEmptyKey):
		return respErrEmptyKey
	case errors.Is(err, engine.ErrNotInteger):
		return respErrNotInteger
	case errors.Is(err, engine.ErrOverflow):
		return respErrOverflow
	case errors.Is(err, engine.ErrNotFloat):
		return respErrNotFloat
	case errors.Is(err, engine.ErrFloatRange):
		return respErrFloatRange
	case errors.Is(err, engine.ErrOutcomeUnknown):
		return respErrOutcomeUnknown + ": " + rootCause(err)
	case errors.Is(err, engine.ErrWriteRefused):
		return respErrWriteRefused + ": " + rootCause(err)
	case errors.Is(err, engine.ErrLogFailed):
		return respErrLogFailed
	case errors.Is(err, engine.ErrCorruptValue), errors.Is(err, engine.ErrCorruptState):
		return respErrCorrupt + ": " + oneLine(err.Error())
	case errors.Is(err, engine.ErrClosed):
		return respErrClosed
	default:
		return "ERR " + err.Error()
	}
}

// Stable error codes of the HTTP API, sent as {"error":{"code":...}}.
const (
	codeNotFound         = "not_found"
	codeBadRequest       = "bad_request"
	codeKeyTooLarge      = "key_too_large"
	codeValueTooLarge    = "value_too_large"
	codeEmptyKey         = "empty_key"
	codeLogFailed        = "log_failed"
	codeWriteRefused     = "log_write_failed"
	codeOutcomeUnknown   = "outcome_unknown"
	codeNoLeader         = "no_leader"
	codeDiverged         = "diverged"
	codeNotCluster       = "not_cluster"
	codeRedirect         = "redirect"
	codeCatchingUp       = "catching_up"
	codeTooStale         = "too_stale"
	codeUnavailable      = "unavailable"
	codeMethodNotAllowed = "method_not_allowed"
	codeRevisionMismatch = "revision_mismatch"
	codeInternal         = "internal"
	codeCorrupt          = "corrupt"
	// Refusals of requests net/http or the connection limits cut off.
	codeBodyTooSlow         = "body_too_slow"
	codeHeaderTooLarge      = "header_too_large"
	codeNotImplemented      = "not_implemented"
	codeVersionNotSupported = "http_version_not_supported"
)

// httpError is an HTTP API error: a status, a stable code and a message.
type httpError struct {
	status  int
	code    string
	message string
}

func (e *httpError) Error() string { return e.code + ": " + e.message }

func badRequest(format string, args ...any) *httpError {
	return &httpError{http.StatusBadRequest, codeBadRequest, fmt.Sprintf(format, args...)}
}

// httpErrorFor translates an error from the store into an HTTP API error.
func httpErrorFor(err error) *httpError {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he
	case errors.Is(err, engine.ErrNotFound):
		return &httpError{http.StatusNotFound, codeNotFound, "key not found"}
	case errors.Is(err, replication.ErrNoLeader):
		return &httpError{http.StatusServiceUnavailable, codeNoLeader,
			"the cluster has no leader that this node can reach; nothing was executed"}
	case errors.Is(err, replication.ErrCatchingUp):
		return &httpError{http.StatusServiceUnavailable, codeCatchingUp, oneLine(err.Error())}
	case errors.Is(err, replication.ErrTooStale):
		return &httpError{http.StatusServiceUnavailable, codeTooStale, oneLine(err.Error())}
	case errors.Is(err, replication.ErrDiverged):
		return &httpError{http.StatusServiceUnavailable, codeDiverged, oneLine(err.Error()) +
			"; this node serves nothing until it is rebuilt (see README, \"Rebuilding a diverged node\")"}
	case errors.Is(err, replication.ErrLeadershipLost):
		return &httpError{http.StatusServiceUnavailable, codeOutcomeUnknown,
			"the write may or may not have been executed (the leader lost its leadership before it was known committed); read before retrying"}
	case errors.Is(err, engine.ErrKeyTooLarge):
		return &httpError{http.StatusRequestURITooLong, codeKeyTooLarge, "key too large"}
	case errors.Is(err, engine.ErrValueTooLarge):
		return &httpError{http.StatusRequestEntityTooLarge, codeValueTooLarge, "value too large"}
	case errors.Is(err, engine.ErrEmptyKey):
		return &httpError{http.StatusBadRequest, codeEmptyKey, "empty key"}
	case errors.Is(err, engine.ErrOutcomeUnknown):
		return &httpError{http.StatusServiceUnavailable, codeOutcomeUnknown,
			"the write may or may not have been executed (the write-ahead log failed); read before retrying: " + rootCause(err)}
	case errors.Is(err, engine.ErrWriteRefused):
		return &httpError{http.StatusServiceUnavailable, codeWriteRefused,
			"write refused, not executed: the write-ahead log could not write it: " + rootCause(err)}
	case errors.Is(err, engine.ErrLogFailed):
		return &httpError{http.StatusServiceUnavailable, codeLogFailed,
			"write-ahead log failed; writes are refused until kvd restarts"}
	case errors.Is(err, engine.ErrCorruptValue), errors.Is(err, engine.ErrCorruptState):
		return &httpError{http.StatusInternalServerError, codeCorrupt, oneLine(err.Error())}
	case errors.Is(err, engine.ErrClosed):
		return &httpError{http.StatusServiceUnavailable, codeUnavailable, "store is closed"}
	default:
		return &httpError{http.StatusInternalServerError, codeInternal, err.Error()}
	}
}

// rootCause returns the text of the innermost error err wraps (the last one,
// where an error wraps several), such as "no space left on device", on one
// line.
func rootCause(err error) string {
	for {
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			next := u.Unwrap()
			if next == nil {
				return oneLine(err.Error())
			}
			err = next
		case interface{ Unwrap() []error }:
			errs := u.Unwrap()
			if len(errs) == 0 {
				return oneLine(err.Error())
			}
			err = errs[len(errs)-1]
		default:
			return oneLine(err.Error())
		}
	}
}

func oneLine(s string) string { return strings.NewReplacer("\r", " ", "\n", " ").Replace(s) }
