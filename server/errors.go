package server

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/kvdstore/kvd/engine"
)

// ErrServerClosed is returned by [Server.ServeRESP] and [Server.ServeHTTPAPI]
// after [Server.Shutdown] or [Server.Close] was called.
var ErrServerClosed = errors.New("server: server closed")

// errNotInteger is returned by INCR and friends when the stored value or the
// increment is not a base-10 64-bit integer, or when the result overflows.
var errNotInteger = errors.New("value is not an integer or out of range")

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
	respErrSyntax        = "ERR syntax error"
	respErrLogFailed     = "MISCONF write-ahead log failed; writes are refused until kvd restarts"
	respErrClosed        = "ERR store is closed"
	respErrMaxClients    = "ERR max number of clients reached"
)

// respError translates an error from the store into the text of a RESP
// error reply (without the leading '-').
func respError(err error) string {
	switch {
	case errors.Is(err, engine.ErrKeyTooLarge):
		return respErrKeyTooLarge
	case errors.Is(err, engine.ErrValueTooLarge):
		return respErrValueTooLarge
	case errors.Is(err, engine.ErrEmptyKey):
		return respErrEmptyKey
	case errors.Is(err, errNotInteger):
		return respErrNotInteger
	case errors.Is(err, engine.ErrLogFailed):
		return respErrLogFailed
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
	codeUnavailable      = "unavailable"
	codeMethodNotAllowed = "method_not_allowed"
	codeInternal         = "internal"
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
	case errors.Is(err, engine.ErrKeyTooLarge):
		return &httpError{http.StatusRequestURITooLong, codeKeyTooLarge, "key too large"}
	case errors.Is(err, engine.ErrValueTooLarge):
		return &httpError{http.StatusRequestEntityTooLarge, codeValueTooLarge, "value too large"}
	case errors.Is(err, engine.ErrEmptyKey):
		return &httpError{http.StatusBadRequest, codeEmptyKey, "empty key"}
	case errors.Is(err, engine.ErrLogFailed):
		return &httpError{http.StatusServiceUnavailable, codeLogFailed,
			"write-ahead log failed; writes are refused until kvd restarts"}
	case errors.Is(err, engine.ErrClosed):
		return &httpError{http.StatusServiceUnavailable, codeUnavailable, "store is closed"}
	default:
		return &httpError{http.StatusInternalServerError, codeInternal, err.Error()}
	}
}
