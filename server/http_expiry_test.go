package server_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestHTTPTTL: PUT ?ttl sets an expiry that GET reports in its headers and
// the list in expires_at; a PUT without it clears it; bad ttls are refused;
// an expired key is not found.
func TestHTTPTTL(t *testing.T) {
	ts := startServer(t, serverOpts{})
	kv := "http://" + ts.httpAddr + "/v1/kv/"
	put := func(url, body string) httpResp { return doHTTP(t, "PUT", url, strings.NewReader(body), nil) }

	before := time.Now().UnixMilli()
	if r := put(kv+"a?ttl=90s", "1"); r.status != 200 {
		t.Fatalf("PUT ?ttl=90s: %d %q", r.status, r.body)
	}
	after := time.Now().UnixMilli()
	r := doHTTP(t, "GET", kv+"a", nil, nil)
	at, err1 := strconv.ParseInt(r.header.Get("X-Kvd-Expires-At"), 10, 64)
	left, err2 := strconv.ParseInt(r.header.Get("X-Kvd-TTL-Ms"), 10, 64)
	if r.status != 200 || r.body != "1" || err1 != nil || err2 != nil ||
		at < before+90_000 || at > after+90_000 || left > 90_000 || left < 80_000 {
		t.Fatalf("GET after PUT ?ttl=90s: %d %q, headers %v", r.status, r.body, r.header)
	}
	var list struct {
		Items []struct {
			Key       string `json:"key"`
			ExpiresAt int64  `json:"expires_at"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(doHTTP(t, "GET", "http://"+ts.httpAddr+"/v1/kv?prefix=a", nil, nil).body), &list); err != nil ||
		len(list.Items) != 1 || list.Items[0].ExpiresAt != at {
		t.Fatalf("list: %+v, %v; want a expiring at %d", list, err, at)
	}

	if r := put(kv+"a", "2"); r.status != 200 {
		t.Fatalf("PUT: %d %q", r.status, r.body)
	}
	r = doHTTP(t, "GET", kv+"a", nil, nil)
	if r.status != 200 || r.header.Get("X-Kvd-Expires-At") != "" || r.header.Get("X-Kvd-TTL-Ms") != "" {
		t.Fatalf("GET after a PUT without ttl: %d, headers %v", r.status, r.header)
	}

	for _, bad := range []string{"30", "-1s", "0s", "100us", "soon", "1s&cas=0"} {
		r := put(kv+"b?ttl="+bad, "x")
		if r.status != 400 || errorCode(t, r.body) != "bad_request" {
			t.Errorf("PUT ?ttl=%s: %d %q, want 400 bad_request", bad, r.status, r.body)
		}
	}
	if r := doHTTP(t, "GET", kv+"b", nil, nil); r.status != 404 {
		t.Fatalf("a refused PUT wrote: %d", r.status)
	}

	if r := put(kv+"c?ttl=30ms", "x"); r.status != 200 {
		t.Fatalf("PUT ?ttl=30ms: %d %q", r.status, r.body)
	}
	deadline := time.Now().Add(5 * time.Second)
	for doHTTP(t, "GET", kv+"c", nil, nil).status != 404 {
		if time.Now().After(deadline) {
			t.Fatal("a key PUT with ttl=30ms is still there after 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
