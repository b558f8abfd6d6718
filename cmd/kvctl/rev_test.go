package main

import (
	"strings"
	"testing"

	"github.com/kvdstore/kvd/server"
)

// TestRevisionsAndIfRev runs get --rev, put --if-rev and del --if-rev
// against a real server, step by step. Every write takes a revision, a
// failed compare included, so the revisions are known.
func TestRevisionsAndIfRev(t *testing.T) {
	addr := startKVD(t, server.Config{})
	tests := []struct {
		args       []string
		wantOut    string
		wantErr    string // a substring of standard error
		wantStatus int
	}{
		{args: []string{"get", "--rev", "k"}, wantErr: `"k": not found`, wantStatus: 1},
		{args: []string{"put", "k", "v1"}, wantOut: "OK\n"}, // 1
		{args: []string{"get", "--rev", "k"}, wantOut: "mod_revision: 1\ncreate_revision: 1\nvalue: v1\n"},
		{args: []string{"put", "k", "v2"}, wantOut: "OK\n"}, // 2
		{args: []string{"get", "k", "--rev"}, wantOut: "mod_revision: 2\ncreate_revision: 1\nvalue: v2\n"},
		{args: []string{"get", "k"}, wantOut: "v2\n"},
		{args: []string{"-o", "json", "get", "--rev", "k"}, wantOut: `{"create_revision":1,"key":"k","mod_revision":2,"value":"v2"}` + "\n"},

		{args: []string{"put", "--if-rev", "1", "k", "x"}, wantErr: `"k": revision mismatch: current mod revision 2, not 1`, wantStatus: 1},          // 3
		{args: []string{"put", "--if-rev", "0", "k", "x"}, wantErr: `"k": revision mismatch: the key exists, current mod revision 2`, wantStatus: 1}, // 4
		{args: []string{"put", "--if-rev", "2", "none", "x"}, wantErr: `"none": revision mismatch: the key is absent`, wantStatus: 1},                // 5
		{args: []string{"get", "k"}, wantOut: "v2\n"},
		{args: []string{"put", "--if-rev", "2", "k", "v3"}, wantOut: "OK\nmod_revision: 6\n"},
		{args: []string{"get", "--rev", "k"}, wantOut: "mod_revision: 6\ncreate_revision: 1\nvalue: v3\n"},
		{args: []string{"-o", "json", "put", "--if-rev", "0", "new", "n"}, wantOut: `{"mod_revision":7,"ok":true}` + "\n"},
		{args: []string{"put", "--if-rev=0", "new", "again"}, wantErr: "current mod revision 7", wantStatus: 1}, // 8

		{args: []string{"del", "--if-rev", "2", "k"}, wantErr: `"k": revision mismatch: current mod revision 6, not 2`, wantStatus: 1}, // 9
		{args: []string{"get", "k"}, wantOut: "v3\n"},
		{args: []string{"del", "--if-rev", "6", "k"}, wantOut: "deleted\n"},
		{args: []string{"get", "k"}, wantErr: `"k": not found`, wantStatus: 1},
		{args: []string{"del", "--if-rev", "6", "k"}, wantErr: "the key is absent (current mod revision 0), not at 6", wantStatus: 1},
		{args: []string{"del", "--if-rev", "0", "k"}, wantOut: "not found\n"},
		{args: []string{"-o", "json", "del", "--if-rev", "7", "new"}, wantOut: `{"deleted":true}` + "\n"},

		{args: []string{"put", "--if-rev", "x", "k", "v"}, wantErr: "want a mod revision", wantStatus: 2},
		{args: []string{"put", "--if-rev", "-1", "k", "v"}, wantErr: "want a mod revision", wantStatus: 2},
		{args: []string{"del", "--if-rev", "k"}, wantErr: "want a mod revision", wantStatus: 2},
		{args: []string{"put", "--rev", "k", "v"}, wantErr: "unknown flag: --rev", wantStatus: 2},
		{args: []string{"get", "k"}, wantErr: `"k": not found`, wantStatus: 1},
	}
	for i, tc := range tests {
		args := append([]string{"--addr", addr}, tc.args...)
		out, errOut, code := kvctl(t, args...)
		if code != tc.wantStatus || out != tc.wantOut || !strings.Contains(errOut, tc.wantErr) {
			t.Fatalf("step %d: kvctl %q = status %d, stdout %q, stderr %q; want %d, %q, stderr with %q",
				i, tc.args, code, out, errOut, tc.wantStatus, tc.wantOut, tc.wantErr)
		}
	}
}

func TestIfRevHelp(t *testing.T) {
	for _, cmd := range []string{"put", "del"} {
		out, _, code := kvctl(t, cmd, "--help")
		if code != 0 || !strings.Contains(out, "--if-rev N") || !strings.Contains(out, "current mod revision") {
			t.Errorf("kvctl %s --help: status %d:\n%s", cmd, code, out)
		}
	}
	if out, _, _ := kvctl(t, "get", "--help"); !strings.Contains(out, "--rev") || !strings.Contains(out, "mod_revision: 12") {
		t.Errorf("kvctl get --help:\n%s", out)
	}
}
