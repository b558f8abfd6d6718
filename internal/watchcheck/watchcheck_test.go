package watchcheck_test

import (
	"strings"
	"testing"

	"github.com/kvdstore/kvd/internal/watchcheck"
)

// TestCheck checks that the validator passes a good history and names each
// kind of violation in a bad one.
func TestCheck(t *testing.T) {
	ref := map[uint64][]watchcheck.Change{
		1: {{Key: "a", Value: "1"}, {Key: "b", Value: "2"}},
		2: {{Key: "x", Value: "other"}},
		3: {{Key: "a", Delete: true}},
		4: {{Key: "b", Value: "3"}},
	}
	all := func(k string) bool { return k != "x" }
	d := func(rev uint64, cs ...watchcheck.Change) watchcheck.Delivery {
		return watchcheck.Delivery{Revision: rev, Changes: cs}
	}
	progress := func(rev uint64) watchcheck.Delivery { return watchcheck.Delivery{Revision: rev, Progress: true} }
	good := watchcheck.History{From: 1, Deliveries: []watchcheck.Delivery{
		d(1, ref[1][1], ref[1][0]), progress(2), d(3, ref[3]...), d(4, ref[4]...), progress(4),
	}}
	if errs := watchcheck.Check(good, ref, all); len(errs) > 0 {
		t.Fatalf("a good history: %v", errs)
	}
	for name, c := range map[string]struct {
		ds   []watchcheck.Delivery
		want string
	}{
		"gap":       {[]watchcheck.Delivery{d(1, ref[1]...), d(4, ref[4]...)}, "missing"},
		"duplicate": {[]watchcheck.Delivery{d(1, ref[1]...), d(3, ref[3]...), d(3, ref[3]...)}, "again"},
		"reordered": {[]watchcheck.Delivery{d(3, ref[3]...), d(1, ref[1]...)}, "ordered"},
		"half":      {[]watchcheck.Delivery{d(1, ref[1][0])}, "atomic"},
		"progress":  {[]watchcheck.Delivery{d(1, ref[1]...), progress(3), d(4, ref[4]...)}, "progress 3 before revision 3"},
	} {
		errs := watchcheck.Check(watchcheck.History{From: 1, Deliveries: c.ds}, ref, all)
		if !strings.Contains(watchcheck.Summary(errs), c.want) {
			t.Errorf("%s: %v, want a violation containing %q", name, errs, c.want)
		}
	}
}
