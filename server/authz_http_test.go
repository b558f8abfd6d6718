package server_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvdstore/kvd/auth"
	"github.com/kvdstore/kvd/server"
)

// startHTTPAuthServer starts a server of testUsers, app also holding a
// bearer token, which it returns; metricsAuth is Config.MetricsAuth.
func startHTTPAuthServer(t testing.TB, metricsAuth bool) (*testServer, string) {
	t.Helper()
	token, stored := auth.NewToken()
	users := append([]testUser(nil), testUsers...)
	for i := range users {
		if users[i].name == "app" {
			users[i].extra += " token=" + stored
		}
	}
	path := filepath.Join(t.TempDir(), "users")
	writeUsers(t, path, users)
	us, err := auth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, serverOpts{cfg: server.Config{Users: us, MetricsAuth: metricsAuth, AuthFailDelay: -1}})
	return ts, token
}

// httpDo sends method url with the Authorization header auth ("" none)
// and returns the status, the error code of a JSON error body, and the
// WWW-Authenticate header.
func httpDo(t *testing.T, method, url, authz, body string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	json.Unmarshal(b, &e)
	return resp.StatusCode, e.Error.Code, resp.Header.Get("WWW-Authenticate")
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// TestHTTPPermissions checks each permission boundary over HTTP, with
// basic auth and a bearer token.
func TestHTTPPermissions(t *testing.T) {
	ts, token := startHTTPAuthServer(t, false)
	base := "http://" + ts.httpAddr
	root := basic("root", rootPass)
	for _, k := range []string{"other", "app/x"} {
		if st, _, _ := httpDo(t, "PUT", base+"/v1/kv/"+k, root, "v"); st != 204 && st != 200 {
			t.Fatalf("root PUT %s: %d", k, st)
		}
	}
	reader, writer, app, ops := basic("reader", readerPass), basic("writer", writerPass), basic("app", appPass), basic("ops", opsPass)
	bearer := "Bearer " + token
	for _, tc := range []struct {
		method, path, authz string
		want                int
	}{
		{"GET", "/healthz", "", 200},
		{"GET", "/readyz", "", 200},
		{"GET", "/metrics", "", 200},
		{"GET", "/v1/kv/other", "", 401},
		{"GET", "/v1/kv", "", 401},
		{"GET", "/v1/status", "", 401},
		{"GET", "/", "", 401},
		{"GET", "/no/such/endpoint", "", 401},
		{"GET", "/v1/kv/other", basic("root", "wrong"), 401},
		{"GET", "/v1/kv/other", basic("nobody", rootPass), 401},
		{"GET", "/v1/kv/other", "Bearer kvd_wrong", 401},

		{"GET", "/v1/kv/other", root, 200},
		{"GET", "/v1/kv/other", reader, 200},
		{"HEAD", "/v1/kv/other", reader, 200},
		{"PUT", "/v1/kv/other", reader, 403},
		{"DELETE", "/v1/kv/other", reader, 403},
		{"POST", "/v1/sync", reader, 403},
		{"GET", "/v1/kv?prefix=", reader, 200},
		{"GET", "/v1/status", reader, 200},
		{"GET", "/", reader, 200},
		{"GET", "/v1/changes?prefix=", reader, 200},
		{"GET", "/v1/jobs", reader, 403},
		{"POST", "/v1/cluster/members", reader, 403},

		{"GET", "/v1/kv/other", writer, 403},
		{"GET", "/v1/kv", writer, 403},
		{"GET", "/v1/changes", writer, 403},
		{"PUT", "/v1/kv/w", writer, 204},
		{"DELETE", "/v1/kv/w", writer, 200},

		{"GET", "/v1/kv/app/x", app, 200},
		{"GET", "/v1/kv/app/x", bearer, 200},
		{"GET", "/v1/kv/other", app, 403},
		{"GET", "/v1/kv/other", bearer, 403},
		{"GET", "/v1/kv/ap", app, 403},
		{"PUT", "/v1/kv/other", app, 403},
		{"PUT", "/v1/kv/app/y", bearer, 204},
		{"DELETE", "/v1/kv/other", app, 403},
		{"GET", "/v1/kv/%61pp/x", app, 200}, // percent-encoded: the decoded key is checked
		{"GET", "/v1/kv/%6fther", app, 403},
		{"GET", "/v1/kv", app, 403},
		{"GET", "/v1/kv?prefix=ap", app, 403},
		{"GET", "/v1/kv?prefix=app/", app, 200},
		{"GET", "/v1/kv?prefix=app/&after=a", app, 200},
		{"GET", "/v1/changes", app, 403},
		{"GET", "/v1/changes?prefix=other", app, 403},
		{"GET", "/v1/changes?key=other", app, 403},
		{"GET", "/v1/changes?prefix=app/", app, 200},
		{"GET", "/v1/changes?key=app/x", app, 200},
		{"GET", "/v1/watch?prefix=other", app, 403},
		{"GET", "/v1/watch", app, 403},
		{"GET", "/v1/jobs", app, 403},
		{"GET", "/v1/snapshot", app, 403},

		{"GET", "/v1/kv/other", ops, 403},
		{"PUT", "/v1/kv/other", ops, 403},
	} {
		url := base + tc.path
		if strings.HasPrefix(tc.path, "/v1/changes") {
			sep := "?"
			if strings.Contains(url, "?") {
				sep = "&"
			}
			url += sep + "timeout=1ms"
		}
		st, code, challenge := httpDo(t, tc.method, url, tc.authz, "v")
		if st == 204 && tc.want == 200 || st == 200 && tc.want == 204 {
			st = tc.want // a write answers 200 or 204 by its kind: not what this test checks
		}
		if st != tc.want {
			t.Errorf("%s %s as %.12q: %d (%s), want %d", tc.method, tc.path, tc.authz, st, code, tc.want)
			continue
		}
		switch {
		case st == 401 && (code != "unauthorized" || !strings.HasPrefix(challenge, `Basic realm="kvd"`)):
			t.Errorf("%s %s: 401 with code %q, WWW-Authenticate %q", tc.method, tc.path, code, challenge)
		case st == 403 && code != "forbidden":
			t.Errorf("%s %s: 403 with code %q", tc.method, tc.path, code)
		}
	}
}

func TestHTTPMetricsAuth(t *testing.T) {
	ts, _ := startHTTPAuthServer(t, true)
	base := "http://" + ts.httpAddr
	if st, _, _ := httpDo(t, "GET", base+"/metrics", "", ""); st != 401 {
		t.Errorf("/metrics without credentials: %d, want 401", st)
	}
	if st, _, _ := httpDo(t, "GET", base+"/metrics", basic("writer", writerPass), ""); st != 200 {
		t.Errorf("/metrics as writer: %d, want 200", st)
	}
	if st, _, _ := httpDo(t, "GET", base+"/healthz", "", ""); st != 200 {
		t.Errorf("/healthz without credentials: %d, want 200", st)
	}
}

// TestHTTPMalformedAuth sends malformed Authorization headers: each gets
// 401 unauthorized, never access and never a server error.
func TestHTTPMalformedAuth(t *testing.T) {
	ts, _ := startHTTPAuthServer(t, false)
	url := "http://" + ts.httpAddr + "/v1/kv/other"
	for _, h := range []string{
		"Basic", "Basic ", "Basic !!!", "Basic " + base64.StdEncoding.EncodeToString([]byte("rootnocolon")),
		"Basic " + base64.StdEncoding.EncodeToString([]byte(":")),
		"Basic " + base64.StdEncoding.EncodeToString([]byte("root:"+rootPass+"\x00")),
		"Bearer", "Bearer ", "Bearer a b", "Digest username=root", "root:" + rootPass, " ",
		"basic" + base64.StdEncoding.EncodeToString([]byte("root:"+rootPass)),
		"Bearer " + strings.Repeat("x", 4000),
	} {
		st, code, _ := httpDo(t, "GET", url, h, "")
		if st != 401 || code != "unauthorized" {
			t.Errorf("Authorization %.40q: %d %q, want 401 unauthorized", h, st, code)
		}
	}
	// Two Authorization headers, one of them valid.
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Add("Authorization", basic("root", rootPass))
	req.Header.Add("Authorization", "Bearer x")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("two Authorization headers: %d, want 401", resp.StatusCode)
	}
}

// FuzzHTTPAuthHeader: an Authorization header other than valid
// credentials gets 401, never access, and never makes the server fail.
func FuzzHTTPAuthHeader(f *testing.F) {
	for _, s := range []string{"Basic cm9vdDp4", "Bearer kvd_x", "Basic", "", "Bearer \x00", "bAsIc Og==", "Basic " + base64.StdEncoding.EncodeToString([]byte("root:x"))} {
		f.Add(s)
	}
	ts, _ := startHTTPAuthServer(f, false)
	url := "http://" + ts.httpAddr + "/v1/kv/other"
	f.Fuzz(func(t *testing.T, h string) {
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header["Authorization"] = []string{h}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return // a header net/http will not send
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("Authorization %q: %d, want 401", h, resp.StatusCode)
		}
	})
}

// TestHTTPWatchWithinPrefix: a user with prefixes may watch a prefix of
// its own over SSE.
func TestHTTPWatchWithinPrefix(t *testing.T) {
	ts, token := startHTTPAuthServer(t, false)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+ts.httpAddr+"/v1/watch?prefix=app/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Errorf("watch of the user's prefix: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}
