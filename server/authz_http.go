package server

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/kvdstore/kvd/auth"
)

// Authentication and authorization over HTTP. With Config.Users set, every
// request but /healthz and /readyz (and /metrics, unless
// Config.MetricsAuth) carries credentials: "Authorization: Basic" with a
// user's name and password, or "Authorization: Bearer" with a token.
// Missing or wrong credentials get 401 unauthorized with a
// WWW-Authenticate challenge (a browser then asks for them: the live page
// works so); a user without the permission or the key gets 403 forbidden.
// Each route needs what its RESP counterpart does (httpAccess).

const (
	codeUnauthorized = "unauthorized"
	codeForbidden    = "forbidden"
)

// httpNeed is what a request takes.
type httpNeed struct {
	open  bool      // no credentials needed
	perm  auth.Perm // 0: any authenticated user
	scope keyScope
	key   []byte // scopeKeys: the key
	// scopeFilter: the request's key= or prefix=; neither reaches every key.
	filterKey    []byte
	filterPrefix bool
	filterAll    bool
}

// httpAccess returns what r takes.
func (s *Server) httpAccess(r *http.Request) httpNeed {
	p := r.URL.Path
	get := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch {
	case p == "/healthz" || p == "/readyz":
		return httpNeed{open: true}
	case p == "/metrics":
		return httpNeed{open: !s.cfg.MetricsAuth}
	case strings.HasPrefix(r.URL.EscapedPath(), keyPathPrefix):
		perm := auth.Write
		if get {
			perm = auth.Read
		}
		key, err := s.pathKey(r)
		if err != nil {
			// The handler answers the bad key; nothing is read or written.
			return httpNeed{perm: perm}
		}
		return httpNeed{perm: perm, scope: scopeKeys, key: key}
	case p == "/v1/kv":
		// A list of a prefix: it must lie within the user's keys.
		q := r.URL.Query()
		if !q.Has("prefix") || q.Get("prefix") == "" {
			return httpNeed{perm: auth.Read, scope: scopeAll}
		}
		return httpNeed{perm: auth.Read, scope: scopeFilter, filterKey: []byte(q.Get("prefix")), filterPrefix: true}
	case p == "/v1/watch" || p == "/v1/changes":
		q := r.URL.Query()
		switch {
		case q.Has("key") && q.Has("prefix"):
			return httpNeed{perm: auth.Read} // the handler refuses it
		case q.Has("key"):
			return httpNeed{perm: auth.Read, scope: scopeFilter, filterKey: []byte(q.Get("key"))}
		case q.Has("prefix") && q.Get("prefix") != "":
			return httpNeed{perm: auth.Read, scope: scopeFilter, filterKey: []byte(q.Get("prefix")), filterPrefix: true}
		}
		return httpNeed{perm: auth.Read, scope: scopeAll}
	case p == "/v1/sync":
		return httpNeed{perm: auth.Write}
	case p == "/" || p == "/v1/status":
		return httpNeed{perm: auth.Read}
	case p == "/v1/cluster" || strings.HasPrefix(p, "/v1/cluster/"):
		if get {
			return httpNeed{perm: auth.Read}
		}
		return httpNeed{perm: auth.Admin}
	case p == "/v1/jobs" || strings.HasPrefix(p, "/v1/jobs/") || p == "/v1/snapshot":
		// Jobs and snapshots read or replace the whole keyspace.
		return httpNeed{perm: auth.Admin, scope: scopeAll}
	case strings.HasPrefix(p, "/debug/pprof/"):
		return httpNeed{perm: auth.Admin}
	}
	return httpNeed{} // any authenticated user: a 404 tells nothing to a stranger
}

// errBadAuthHeader is the 401 of a malformed Authorization header.
var errBadAuthHeader = errors.New("malformed Authorization header: want Basic (user:password in base64) or Bearer TOKEN")

// httpUser authenticates r's credentials against users.
func httpUser(users *auth.Users, r *http.Request) (*auth.User, error) {
	h := r.Header.Values("Authorization")
	switch {
	case len(h) == 0:
		return nil, errors.New("authentication required: Basic or Bearer credentials")
	case len(h) > 1:
		return nil, errors.New("more than one Authorization header")
	}
	scheme, rest, _ := strings.Cut(h[0], " ")
	switch {
	case strings.EqualFold(scheme, "basic"):
		name, pass, ok := r.BasicAuth()
		if !ok {
			return nil, errBadAuthHeader
		}
		return users.Authenticate(name, pass)
	case strings.EqualFold(scheme, "bearer"):
		token := strings.TrimSpace(rest)
		if token == "" || strings.ContainsAny(token, " \t") {
			return nil, errBadAuthHeader
		}
		return users.AuthenticateToken(token)
	}
	return nil, errBadAuthHeader
}

// authorizeHTTP checks r's credentials and permissions, answering 401 or
// 403 and returning false if it may not proceed.
func (s *Server) authorizeHTTP(w http.ResponseWriter, r *http.Request) bool {
	users := s.users.Load()
	if users == nil {
		return true
	}
	need := s.httpAccess(r)
	if need.open {
		return true
	}
	u, err := httpUser(users, r)
	if err != nil {
		msg := err.Error()
		if errors.Is(err, auth.ErrWrongPass) {
			s.log.Info("http authentication failed", "remote", r.RemoteAddr)
			time.Sleep(s.authFails.fail(remoteHost(r.RemoteAddr)))
			msg = "invalid username-password pair or token"
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="kvd", charset="UTF-8"`)
		writeJSONError(w, &httpError{http.StatusUnauthorized, codeUnauthorized, msg})
		return false
	}
	if herr := httpPermit(u, need); herr != nil {
		writeJSONError(w, herr)
		return false
	}
	return true
}

// httpStillAllowed reports whether a request that authorizeHTTP let in
// may go on under the users loaded now (after a reload): its credentials'
// user is still there, with the permissions it needs, and a bearer token
// still valid. A basic-auth user is looked up by name, its password not
// checked again (as a RESP connection's). Streams (SSE) and waiting
// long-polls check it when the users change.
func (s *Server) httpStillAllowed(r *http.Request) bool {
	users := s.users.Load()
	need := s.httpAccess(r)
	if users == nil || need.open {
		return true
	}
	var u *auth.User
	if name, _, ok := r.BasicAuth(); ok {
		u = users.Lookup(name)
	} else {
		u, _ = httpUser(users, r) // a bearer token: cheap to check
	}
	return u != nil && httpPermit(u, need) == nil
}

// httpPermit returns the 403 for a user that may not do what need asks, or
// nil.
func httpPermit(u *auth.User, need httpNeed) *httpError {
	if !u.Can(need.perm) {
		return &httpError{http.StatusForbidden, codeForbidden,
			"user " + u.Name + " lacks the " + need.perm.String() + " permission this needs"}
	}
	if !u.Restricted() {
		return nil
	}
	allowed := true
	switch need.scope {
	case scopeKeys:
		allowed = u.KeyAllowed(need.key)
	case scopeFilter:
		if need.filterPrefix {
			allowed = u.RangeAllowed(need.filterKey)
		} else {
			allowed = u.KeyAllowed(need.filterKey)
		}
	case scopeAll:
		allowed = false
	}
	if !allowed {
		return &httpError{http.StatusForbidden, codeForbidden,
			"user " + u.Name + " may not access this key or range (give a key or prefix within the user's prefixes)"}
	}
	return nil
}
