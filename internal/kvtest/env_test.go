package kvtest_test

import (
	"strings"
	"testing"

	"github.com/kvdstore/kvd/internal/kvtest"
)

func TestRequire(t *testing.T) {
	for _, tc := range []struct {
		ci, reason string
		want       string // "pass", "skip" or "fail"
	}{
		{"", "", "pass"},
		{"true", "", "pass"},
		{"", "needs root", "skip"},
		{"false", "needs root", "skip"},
		{"true", "needs root", "fail"},
	} {
		t.Setenv("CI", tc.ci)
		f := &fakeTB{TB: t}
		msg := f.run(func() { kvtest.Require(f, tc.reason) })
		got := "pass"
		switch {
		case f.skipped != "":
			got = "skip"
			msg = f.skipped
		case msg != "":
			got = "fail"
		}
		if got != tc.want || !strings.Contains(msg, tc.reason) {
			t.Errorf("CI=%q, Require(%q): %s %q, want %s with the reason", tc.ci, tc.reason, got, msg, tc.want)
		}
	}
}

func TestNeedTool(t *testing.T) {
	t.Setenv("CI", "")
	f := &fakeTB{TB: t}
	f.run(func() { kvtest.NeedTool(f, "kvtest-no-such-tool", "apt-get install nothing") })
	if !strings.Contains(f.skipped, "kvtest-no-such-tool") || !strings.Contains(f.skipped, "apt-get install nothing") {
		t.Errorf("NeedTool of a missing tool: skipped %q, failed %q; want a skip naming it and how to install it", f.skipped, f.failed)
	}
}
