package server_test

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kvdstore/kvd/engine"
)

// mismatchBody is the JSON body of a 409 revision_mismatch.
type mismatchBody struct {
	Error struct {
		Code        string  `json:"code"`
		Message     string  `json:"message"`
		ModRevision *uint64 `json:"mod_revision"`
	} `json:"error"`
}

// wantMismatch checks that r is a 409 revision_mismatch naming current as
// the key's mod revision, in the body and in X-Kvd-Mod-Revision.
func wantMismatch(t *testing.T, what string, r httpResp, current uint64) {
	t.Helper()
	if r.status != 409 {
		t.Fatalf("%s: status %d, want 409 (body %q)", what, r.status, r.body)
	}
	var b mismatchBody
	if err := json.Unmarshal([]byte(r.body), &b); err != nil {
		t.Fatalf("%s: body %q: %v", what, r.body, err)
	}
	if b.Error.Code != "revision_mismatch" || b.Error.Message == "" || b.Error.ModRevision == nil || *b.Error.ModRevision != current {
		t.Fatalf("%s: body %q, want revision_mismatch with mod_revision %d", what, r.body, current)
	}
	if h := r.header.Get("X-Kvd-Mod-Revision"); h != strconv.FormatUint(current, 10) {
		t.Fatalf("%s: X-Kvd-Mod-Revision %q, want %d", what, h, current)
	}
}

// revisions returns the X-Kvd-Mod-Revision and X-Kvd-Create-Revision of a
// response.
func revisions(t *testing.T, r httpResp) (mod, create uint64) {
	t.Helper()
	mod, err1 := strconv.ParseUint(r.header.Get("X-Kvd-Mod-Revision"), 10, 64)
	create, err2 := strconv.ParseUint(r.header.Get("X-Kvd-Create-Revision"), 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("revision headers: %v", r.header)
	}
	return mod, create
}

func TestHTTPRevisionsAndCAS(t *testing.T) {
	ts := startServer(t, serverOpts{engine: engine.Options{CommitMode: engine.CommitAsync, FlushInterval: 1 << 62}})
	kv := "http://" + ts.httpAddr + "/v1/kv/"
	put := func(url, body string) httpResp { return doHTTP(t, "PUT", url, strings.NewReader(body), nil) }
	wantOK := func(what string, r httpResp, rev uint64) {
		t.Helper()
		if r.status != 200 || r.header.Get("X-Kvd-Revision") != strconv.FormatUint(rev, 10) {
			t.Fatalf("%s: %d %q revision %q, want 200 at revision %d", what, r.status, r.body, r.header.Get("X-Kvd-Revision"), rev)
		}
	}
	wantEntry := func(key, value string, mod, create uint64) {
		t.Helper()
		for _, method := range []string{"GET", "HEAD"} {
			r := doHTTP(t, method, kv+key, nil, nil)
			if r.status != 200 {
				t.Fatalf("%s %s: %d %q", method, key, r.status, r.body)
			}
			if m, c := revisions(t, r); m != mod || c != create {
				t.Fatalf("%s %s: mod %d create %d, want %d %d", method, key, m, c, mod, create)
			}
			if method == "GET" && r.body != value {
				t.Fatalf("GET %s = %q, want %q", key, r.body, value)
			}
		}
	}

	wantOK("put", put(kv+"a", "1"), 1)
	wantEntry("a", "1", 1, 1)
	wantOK("put again", put(kv+"a", "2"), 2)
	wantEntry("a", "2", 2, 1) // create stays, mod moves

	wantMismatch(t, "cas with an old revision", put(kv+"a?cas=1", "x"), 2)
	wantMismatch(t, "cas 0 on an existing key", put(kv+"a?cas=0", "x"), 2)
	wantMismatch(t, "cas of a missing key", put(kv+"none?cas=2", "x"), 0)
	wantEntry("a", "2", 2, 1)
	if r := doHTTP(t, "GET", kv+"none", nil, nil); r.status != 404 {
		t.Fatalf("a failed cas created its key: %d %q", r.status, r.body)
	}

	// A failed compare takes a revision too (its batch was written), so
	// the revisions below count them.
	r := put(kv+"a?cas=2&durability=sync", "3")
	wantOK("cas", r, 6)
	if r.header.Get("X-Kvd-Durable") != "true" {
		t.Fatalf("cas with durability=sync: X-Kvd-Durable %q", r.header.Get("X-Kvd-Durable"))
	}
	wantEntry("a", "3", 6, 1)

	wantOK("cas 0 on a missing key", put(kv+"b?cas=0", "new"), 7)
	wantEntry("b", "new", 7, 7)
	wantMismatch(t, "cas 0 again", put(kv+"b?cas=0", "newer"), 7)

	del := func(url string) httpResp { return doHTTP(t, "DELETE", url, nil, nil) }
	wantMismatch(t, "cas delete with an old revision", del(kv+"a?cas=2"), 6)
	wantEntry("a", "3", 6, 1)
	r = del(kv + "a?cas=6")
	wantOK("cas delete", r, 10)
	if !strings.Contains(r.body, `"deleted":true`) {
		t.Fatalf("cas delete: body %q", r.body)
	}
	if r := doHTTP(t, "GET", kv+"a", nil, nil); r.status != 404 {
		t.Fatalf("GET after cas delete: %d %q", r.status, r.body)
	}
	r = del(kv + "a?cas=0")
	wantOK("cas 0 delete of a missing key", r, 11)
	if !strings.Contains(r.body, `"deleted":false`) {
		t.Fatalf("cas 0 delete: body %q", r.body)
	}
	wantMismatch(t, "cas delete of a missing key", del(kv+"a?cas=6"), 0)

	// Set again after the delete: a new create revision.
	wantOK("put after delete", put(kv+"a", "4"), 13)
	wantEntry("a", "4", 13, 13)

	for _, q := range []string{"cas=x", "cas=-1", "cas=", "cas=18446744073709551616", "cas=1&durability=later"} {
		for _, method := range []string{"PUT", "DELETE"} {
			r := doHTTP(t, method, kv+"a?"+q, strings.NewReader("x"), nil)
			if r.status != 400 || errorCode(t, r.body) != "bad_request" {
				t.Errorf("%s ?%s: %d %q, want 400 bad_request", method, q, r.status, r.body)
			}
		}
	}
	wantEntry("a", "4", 13, 13)
}

// TestHTTPCASRace has writers race to compare-and-set one key from the
// same revision, round after round: in each round exactly one wins, and
// every loser is told the winner's revision.
func TestHTTPCASRace(t *testing.T) {
	ts := startServer(t, serverOpts{})
	u := "http://" + ts.httpAddr + "/v1/kv/race"
	r := doHTTP(t, "PUT", u, strings.NewReader("start"), nil)
	rev, err := strconv.ParseUint(r.header.Get("X-Kvd-Revision"), 10, 64)
	if r.status != 200 || err != nil {
		t.Fatalf("PUT: %d %q", r.status, r.body)
	}
	const writers, rounds = 4, 20
	for round := range rounds {
		results := make([]httpResp, writers)
		var wg sync.WaitGroup
		for i := range writers {
			wg.Go(func() {
				results[i] = doHTTP(t, "PUT", fmt.Sprintf("%s?cas=%d", u, rev), strings.NewReader(fmt.Sprint(round, "-", i)), nil)
			})
		}
		wg.Wait()
		winner := -1
		for i, r := range results {
			if r.status == 200 {
				if winner >= 0 {
					t.Fatalf("round %d: writers %d and %d both won from revision %d", round, winner, i, rev)
				}
				winner = i
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no writer won from revision %d: %v", round, rev, results)
		}
		won, _ := strconv.ParseUint(results[winner].header.Get("X-Kvd-Revision"), 10, 64)
		for i, r := range results {
			if i != winner {
				wantMismatch(t, fmt.Sprintf("round %d writer %d", round, i), r, won)
			}
		}
		g := doHTTP(t, "GET", u, nil, nil)
		if mod, _ := revisions(t, g); g.body != fmt.Sprint(round, "-", winner) || mod != won {
			t.Fatalf("round %d: GET = %q at mod %d, want the winner's %q at %d", round, g.body, mod, fmt.Sprint(round, "-", winner), won)
		}
		rev = won
	}
}
