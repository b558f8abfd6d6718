package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestFormat(t *testing.T) {
	vcs := []debug.BuildSetting{
		{Key: "vcs.revision", Value: "56ae0eb1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7"},
		{Key: "vcs.time", Value: "2026-12-03T20:59:00Z"},
		{Key: "vcs.modified", Value: "true"},
	}
	for _, c := range []struct {
		override, main string
		settings       []debug.BuildSetting
		want           string
	}{
		{"", "", nil, "devel"},
		{"", "(devel)", nil, "devel"},
		{"", "v1.2.3", nil, "v1.2.3"},
		{"v2.0.0", "v1.2.3", nil, "v2.0.0"},
		{"", "(devel)", vcs, "devel (revision 56ae0eb1c2d3, 2026-12-03T20:59:00Z, modified)"},
		{"", "v1.2.3", vcs[:2], "v1.2.3 (revision 56ae0eb1c2d3, 2026-12-03T20:59:00Z)"},
	} {
		bi := &debug.BuildInfo{Main: debug.Module{Version: c.main}, Settings: c.settings}
		if got := format(c.override, bi); got != c.want {
			t.Errorf("format(%q, %q, %v) = %q, want %q", c.override, c.main, c.settings, got, c.want)
		}
	}
}
