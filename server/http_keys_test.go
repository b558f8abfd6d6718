package server_test

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/kvdstore/kvd/internal/kvtest"
)

// keyEnvSeed names the variable that replays TestHTTPKeysRoundTrip with a
// given seed.
const keyEnvSeed = "KVD_KEYS_SEED"

// trickyKeys are keys a path cleaner or a redirect would change.
var trickyKeys = []string{
	"https://example.com/page", "a//b", "a/b", "a/./b", "a/../b", "/", "//", ".", "..", "./",
	"a/", "a/.", "a/..", "%2F", "%", "%%", "\x00", "\xff\xfe", "?x=1", "#frag", "a b", "+", "é",
}

// randomKey returns 1 to 12 bytes drawn mostly from the bytes that paths
// treat specially.
func randomKey(rng *rand.Rand) string {
	const special = "/./%?#+ \x00\xff"
	b := make([]byte, 1+rng.IntN(12))
	for i := range b {
		if rng.IntN(3) == 0 {
			b[i] = byte(rng.IntN(256))
		} else {
			b[i] = special[rng.IntN(len(special))]
		}
	}
	return string(b)
}

// keyPath percent-encodes key for a URL path, leaving unreserved bytes,
// '/' and, when literal is set, '.' as they are (so that "/../" goes out
// as such).
func keyPath(key string, literal bool) string {
	var b strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '~', c == '/':
			b.WriteByte(c)
		case c == '.' && literal:
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// TestHTTPKeysRoundTrip puts keys that path cleaning would alter, with
// Go's client (which follows redirects) and curl -L, and reads each back,
// alone and in the list: every key round-trips byte for byte and none
// collides with another.
func TestHTTPKeysRoundTrip(t *testing.T) {
	seed := rand.Uint64()
	if v := os.Getenv(keyEnvSeed); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("%s: %v", keyEnvSeed, err)
		}
	}
	t.Logf("seed %d (replay with %s=%d)", seed, keyEnvSeed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	ts := startServer(t, serverOpts{})
	kv := "http://" + ts.httpAddr + "/v1/kv/"
	want := map[string]string{} // key -> value

	put := func(key, value string, literal bool) {
		t.Helper()
		res := doHTTP(t, "PUT", kv+keyPath(key, literal), strings.NewReader(value), nil)
		if res.status != 200 {
			t.Fatalf("PUT %q: %d %s", key, res.status, res.body)
		}
		want[key] = value
	}
	keys := append([]string(nil), trickyKeys...)
	for range 300 {
		keys = append(keys, randomKey(rng))
	}
	for i, k := range keys {
		put(k, "v"+strconv.Itoa(i), i%2 == 0)
	}

	t.Run("curl", func(t *testing.T) {
		curl := kvtest.NeedTool(t, "curl", "apt-get install curl")
		file := filepath.Join(t.TempDir(), "got")
		curlKeys := append([]string(nil), trickyKeys...)
		for range 20 {
			curlKeys = append(curlKeys, randomKey(rng))
		}
		for i, k := range curlKeys {
			value := "curl" + strconv.Itoa(i)
			u := kv + keyPath(k, true)
			// --path-as-is: curl itself would remove "/./" and "/../".
			out, err := exec.CommandContext(t.Context(), curl, "-sS", "-L", "--path-as-is", "--fail-with-body",
				"-X", "PUT", "--data-binary", value, u).CombinedOutput()
			if err != nil {
				t.Fatalf("curl PUT %q: %v: %s", k, err, out)
			}
			want[k] = value
			out, err = exec.CommandContext(t.Context(), curl, "-sS", "-L", "--path-as-is", "--fail-with-body",
				"-o", file, u).CombinedOutput()
			if err != nil {
				t.Fatalf("curl GET %q: %v: %s", k, err, out)
			}
			if got, _ := os.ReadFile(file); string(got) != value {
				t.Fatalf("curl GET %q = %q, want %q", k, got, value)
			}
		}
	})

	for k, v := range want {
		for _, literal := range []bool{true, false} {
			res := doHTTP(t, "GET", kv+keyPath(k, literal), nil, nil)
			if res.status != 200 || res.body != v {
				t.Fatalf("GET %q (literal dots %v) = %d %q, want 200 %q", k, literal, res.status, res.body, v)
			}
		}
	}

	// The list holds exactly the keys put, each with its value.
	res := doHTTP(t, "GET", "http://"+ts.httpAddr+"/v1/kv?limit=10000&values=text", nil, nil)
	if res.status != 200 {
		t.Fatalf("list: %d %s", res.status, res.body)
	}
	var list struct {
		Items []struct {
			Key       *string `json:"key"`
			KeyBase64 []byte  `json:"key_base64"`
			Value     string  `json:"value"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(res.body), &list); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, it := range list.Items {
		k := string(it.KeyBase64)
		if it.Key != nil {
			k = *it.Key
		}
		if _, dup := got[k]; dup {
			t.Fatalf("list has key %q twice", k)
		}
		got[k] = it.Value
	}
	if len(got) != len(want) {
		t.Errorf("list has %d keys, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("list: key %q = %q, want %q", k, got[k], v)
		}
	}
}

// TestHTTPNoRedirect checks that no path is answered with a redirect:
// paths that are not clean are keys under /v1/kv/ and 404 elsewhere.
func TestHTTPNoRedirect(t *testing.T) {
	ts := startServer(t, serverOpts{})
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range []string{"/v1/kv/a//b", "/v1/kv/./x", "/v1//kv", "/v1/./status", "/v1/status/..", "//healthz"} {
		res, err := hc.Get("http://" + ts.httpAddr + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode/100 == 3 {
			t.Errorf("GET %s = %d, a redirect", p, res.StatusCode)
		}
		if res.StatusCode != 200 {
			errorCode(t, string(b))
		}
	}
}
