// Package watchcheck checks a recorded watch history against the store's
// own: the properties etcd's robustness tests check of its watches.
//
//   - Ordered: revisions delivered only ever increase.
//   - Unique: no revision is delivered twice.
//   - Atomic: a revision is delivered whole: exactly the changes of the
//     reference's revision that the filter selects.
//   - Complete (reliable): every reference revision with a selected change
//     between the start and the last revision seen is delivered.
//   - Resumable: a watch resumed from the last revision it saw, plus one,
//     goes on without a gap or a repeat (the three checks above run across
//     the resumptions).
//   - Bookmarkable: a progress mark P means every selected revision up to
//     P was delivered before it, and nothing at or below P comes after it.
//
// The reference is the truth about each revision: the writer's own record
// of what it wrote, or the store's history read back after the run (after a
// crash: what a durable-only watch delivered must all be there).
package watchcheck

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Change is one key's change.
type Change struct {
	Key    string
	Value  string
	Delete bool
}

// Delivery is one thing a watcher received, in order: a revision's changes,
// or (Progress set, no Changes) a progress mark.
type Delivery struct {
	Revision uint64
	Changes  []Change
	Progress bool
}

// History is a recorded watch: the revision it started from and what it
// received, across any resumptions.
type History struct {
	From       uint64
	Deliveries []Delivery
}

// Check checks h against ref (revision → every change of that revision) for
// a watch of the keys match selects. It returns every violation found, at
// most a few per kind; none means the history passes. Revisions above the
// last one h saw are not required (the watch stopped before them).
func Check(h History, ref map[uint64][]Change, match func(key string) bool) []string {
	var errs []string
	bad := func(format string, args ...any) {
		if len(errs) < 20 {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
	}
	want := map[uint64][]Change{}
	for rev, cs := range ref {
		if rev < h.From {
			continue
		}
		var sel []Change
		for _, c := range cs {
			if match(c.Key) {
				sel = append(sel, c)
			}
		}
		if len(sel) > 0 {
			want[rev] = sortChanges(sel)
		}
	}
	seen := map[uint64]bool{}
	var last uint64 // last revision delivered or bookmarked
	var high uint64 // highest revision covered
	for i, d := range h.Deliveries {
		if d.Progress {
			if d.Revision < last {
				bad("delivery %d: progress %d after revision %d", i, d.Revision, last)
			}
			for rev := range want {
				if rev <= d.Revision && !seen[rev] {
					bad("delivery %d: progress %d before revision %d was delivered", i, d.Revision, rev)
				}
			}
			last = max(last, d.Revision)
			high = max(high, d.Revision)
			continue
		}
		if d.Revision < h.From {
			bad("delivery %d: revision %d before the start %d", i, d.Revision, h.From)
		}
		if seen[d.Revision] {
			bad("delivery %d: revision %d delivered again (unique)", i, d.Revision)
		} else if d.Revision <= last {
			bad("delivery %d: revision %d after %d (ordered)", i, d.Revision, last)
		}
		seen[d.Revision] = true
		last = max(last, d.Revision)
		high = max(high, d.Revision)
		got := sortChanges(slices.Clone(d.Changes))
		if w, ok := want[d.Revision]; !ok {
			bad("delivery %d: revision %d has no selected change in the reference, got %v", i, d.Revision, got)
		} else if fmt.Sprint(w) != fmt.Sprint(got) {
			bad("delivery %d: revision %d is %v, want %v (atomic)", i, d.Revision, got, w)
		}
	}
	var missing []uint64
	for rev := range want {
		if rev <= high && !seen[rev] {
			missing = append(missing, rev)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		bad("%d revisions missing (complete), first %v", len(missing), missing[:min(len(missing), 10)])
	}
	return errs
}

// Last returns the last revision h delivered or bookmarked (0: none): where
// a resumed watch goes on, plus one.
func (h History) Last() uint64 {
	var last uint64
	for _, d := range h.Deliveries {
		last = max(last, d.Revision)
	}
	return last
}

// Summary formats errs for a test failure.
func Summary(errs []string) string { return strings.Join(errs, "\n") }

func sortChanges(cs []Change) []Change {
	sort.Slice(cs, func(i, j int) bool { return cs[i].Key < cs[j].Key })
	return cs
}
