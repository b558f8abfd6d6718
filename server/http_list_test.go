package server_test

import (
	"encoding/json"
	"strings"
	"testing"
)

type listPage struct {
	Items []struct {
		Key   string  `json:"key"`
		Value *string `json:"value"`
		Size  int     `json:"size"`
	} `json:"items"`
	More bool `json:"more"`
}

func getList(t *testing.T, u string) listPage {
	t.Helper()
	res := doHTTP(t, "GET", u, nil, nil)
	if res.status != 200 {
		t.Fatalf("GET %s: %d %s", u, res.status, res.body)
	}
	var p listPage
	if err := json.Unmarshal([]byte(res.body), &p); err != nil {
		t.Fatalf("GET %s: %v in %.200q", u, err, res.body)
	}
	return p
}

// TestHTTPListPages checks that a list page ends once its values pass 4
// MiB, that after= continues it, that values=none lists keys only, and
// that values=text escapes large values exactly.
func TestHTTPListPages(t *testing.T) {
	ts := startServer(t, serverOpts{})
	base := "http://" + ts.httpAddr + "/v1/kv"
	big := strings.Repeat("é€x\"\\\n", 1<<17) // 1.125 MiB, characters across chunk ends
	for _, k := range []string{"k1", "k2", "k3", "k4", "k5"} {
		if res := doHTTP(t, "PUT", base+"/"+k, strings.NewReader(big), nil); res.status != 200 {
			t.Fatalf("PUT: %d %s", res.status, res.body)
		}
	}
	p := getList(t, base+"?values=text")
	if len(p.Items) != 4 || !p.More {
		t.Fatalf("first page: %d items, more %v; want 4 (4.5 MiB, past the 4 MiB cap), more", len(p.Items), p.More)
	}
	for _, it := range p.Items {
		if it.Value == nil || *it.Value != big || it.Size != len(big) {
			t.Fatalf("item %s: value differs (size %d)", it.Key, it.Size)
		}
	}
	p = getList(t, base+"?values=text&after="+p.Items[3].Key)
	if len(p.Items) != 1 || p.More || p.Items[0].Key != "k5" {
		t.Fatalf("second page: %+v items, more %v", len(p.Items), p.More)
	}
	p = getList(t, base+"?values=none")
	if len(p.Items) != 5 || p.More {
		t.Fatalf("keys only: %d items, more %v", len(p.Items), p.More)
	}
	for _, it := range p.Items {
		if it.Value != nil {
			t.Fatalf("keys only: item %s has a value", it.Key)
		}
	}
	p = getList(t, base+"?values=none&limit=2&prefix=k&after=k1")
	if len(p.Items) != 2 || !p.More || p.Items[0].Key != "k2" {
		t.Fatalf("limit 2 after k1: %+v", p)
	}
}
