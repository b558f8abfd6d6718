package jobs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

// decodeJSONLine is what encoding/json makes of an import line.
func decodeJSONLine(line []byte) (key, value string, ok bool) {
	var kv struct {
		Key   *string `json:"key"`
		Value *string `json:"value"`
	}
	if json.Unmarshal(line, &kv) != nil || kv.Key == nil || kv.Value == nil || *kv.Key == "" {
		return "", "", false
	}
	return *kv.Key, *kv.Value, true
}

// TestPlainNDJSON checks that the fast path takes the plain lines and
// leaves every other to encoding/json.
func TestPlainNDJSON(t *testing.T) {
	for _, tc := range []struct {
		line       string
		key, value string
		plain      bool
	}{
		{`{"key":"k1","value":"v1"}` + "\n", "k1", "v1", true},
		{`{"key":"k1","value":""}` + "\r\n", "k1", "", true},
		{`{"key":"ключ","value":"värde 値"}`, "ключ", "värde 値", true},
		{`{"key":"k","value":"a\"b"}`, "k", `a"b`, false},
		{`{"key":"k","value":"a\\b"}`, "k", `a\b`, false},
		{`{"key":"k","value":"\u00e9"}`, "k", "é", false},
		{`{"value":"v","key":"k"}`, "k", "v", false},
		{`{ "key": "k", "value": "v" }`, "k", "v", false},
		{`{"KEY":"k","value":"v"}`, "k", "v", false},
		{`{"key":"","value":"v"}`, "", "", false},
		{`{"key":"k","value":"v","x":1}`, "k", "v", false},
		{`{"key":"k","value":"v"}x`, "", "", false},
		{"{\"key\":\"k\",\"value\":\"a\tb\"}", "", "", false},
		{"{\"key\":\"k\",\"value\":\"\xff\"}", "k", "\ufffd", false},
	} {
		key, value, plain := plainNDJSON([]byte(tc.line))
		if plain != tc.plain || (plain && (string(key) != tc.key || string(value) != tc.value)) {
			t.Errorf("%q: plain %v (%q, %q), want %v (%q, %q)", tc.line, plain, key, value, tc.plain, tc.key, tc.value)
		}
		jk, jv, ok := decodeJSONLine([]byte(tc.line))
		if ok != (tc.key != "") || jk != tc.key || jv != tc.value {
			t.Errorf("%q: encoding/json gives (%q, %q, %v), the table (%q, %q)", tc.line, jk, jv, ok, tc.key, tc.value)
		}
	}
}

// FuzzPlainNDJSON checks that the fast path decodes every line it takes as
// encoding/json does.
func FuzzPlainNDJSON(f *testing.F) {
	for _, s := range []string{`{"key":"k","value":"v"}`, `{"key":"é","value":"\u00e9"}`, "{\"key\":\"k\",\"value\":\"\x7f\xc3\"}\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		key, value, plain := plainNDJSON(line)
		if !plain {
			return
		}
		jk, jv, ok := decodeJSONLine(line)
		if !ok || jk != string(key) || jv != string(value) {
			t.Fatalf("%q: fast path (%q, %q), encoding/json (%q, %q, %v)", line, key, value, jk, jv, ok)
		}
	})
}

// TestImportReaderLongLine reads NDJSON lines longer than the reader's
// buffer, and RESP commands whose bulk strings are.
func TestImportReaderLongLine(t *testing.T) {
	long := strings.Repeat("x", 100)
	src := `{"key":"a","value":"` + long + `"}` + "\n" + `{"key":"b","value":"\u0041` + long + `"}` + "\n" + `{"key":"c","value":"z"}`
	ir := &importReader{r: bufio.NewReaderSize(strings.NewReader(src), 16)}
	for _, want := range []string{"a=" + long, "b=A" + long, "c=z"} {
		k, v, err := ir.ndjson()
		if err != nil || string(k)+"="+string(v) != want {
			t.Fatalf("ndjson: %q=%q, %v; want %q", k, v, err, want)
		}
	}
	if _, _, err := ir.ndjson(); !errors.Is(err, io.EOF) || ir.off != int64(len(src)) {
		t.Fatalf("after the last line: %v at %d, want EOF at %d", err, ir.off, len(src))
	}

	var resp bytes.Buffer
	resp.WriteString("*3\r\n$3\r\nset\r\n$1\r\nk\r\n$100\r\n" + long + "\r\n")
	resp.WriteString("*3\r\n$3\r\nSET\r\n$100\r\n" + long + "\r\n$0\r\n\r\n")
	ir = &importReader{r: bufio.NewReaderSize(bytes.NewReader(resp.Bytes()), 16)}
	for _, want := range []string{"k=" + long, long + "="} {
		k, v, err := ir.resp()
		if err != nil || string(k)+"="+string(v) != want {
			t.Fatalf("resp: %q=%q, %v; want %q", k, v, err, want)
		}
	}
	if _, _, err := ir.resp(); !errors.Is(err, io.EOF) || ir.off != int64(resp.Len()) {
		t.Fatalf("after the last command: %v at %d, want EOF at %d", err, ir.off, resp.Len())
	}
	for _, bad := range []string{"*+3\r\n", "*3\r\n$-1\r\n", "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nab\r\n", "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"} {
		ir = &importReader{r: bufio.NewReaderSize(strings.NewReader(bad), 16)}
		var je *jobError
		if _, _, err := ir.resp(); !errors.As(err, &je) || je.code != CodeBadInput {
			t.Errorf("resp %q: %v, want a bad_input error", bad, err)
		}
	}
}
