package crash_test

import (
	"fmt"
	"slices"
	"time"
)

// The checker compares the state a restarted kvd recovered with the log of
// operations made since the previous restart.
//
// Every SET and MSET writes fresh keys with unique values, and every DEL
// removes keys that were acknowledged (or recovered) earlier and are deleted
// by no other operation. So each write's effect can be seen on its own: a
// create is recovered when its keys are there, a DEL when its keys are gone.
// Each recovered write took exactly one revision, so the recovered revision
// k tells how many must be there. From that the checker derives which
// operations the recovered state holds and checks:
//
//   - no key that nothing wrote, no wrong value;
//   - no half batch: an MSET or DEL is there whole or not at all;
//   - prefix by revision: an operation with a known revision r is there
//     exactly when r <= k, and the count of recovered operations is k minus
//     the previous recovered revision;
//   - prefix in real time: when an operation is there, every operation
//     acknowledged before it was called is there too (its revision is
//     lower), whatever the revisions the client learnt;
//   - durability: every acknowledged write the fault may not lose is there,
//     and k is at least every durable revision the server reported; every
//     key of the previous recovered state is there unless deleted;
//   - acknowledged DELs found their keys (reads see acknowledged writes).

// checkSpec says what a fault may lose.
type checkSpec struct {
	mode string // the server's commit mode
	// required reports whether an acknowledged write must have survived.
	required func(o *op) bool
	// maxDurable is the highest revision the server reported durable.
	maxDurable uint64
	// crashAt is when the fault struck (zero for none); loss ages are
	// measured from it.
	crashAt time.Time
}

// verdict is what the checker found.
type verdict struct {
	violations []string
	okWrites   int           // acknowledged writes checked
	revKnown   int           // of them, those whose revision the client learnt
	lost       []*op         // acknowledged writes not recovered
	maxLoss    time.Duration // largest crashAt − ack time among lost async-acknowledged writes
	in, out    int           // writes recovered, not recovered
	undecided  int           // writes the state cannot place (deleted together with their creation)
}

type opState int8

const (
	undecided opState = 0
	stateIn   opState = 1
	stateOut  opState = -1
)

// check checks the recovered state got at revision k against base (the
// state recovered at baseRev before) and ops.
func check(base map[string]string, baseRev uint64, ops []*op, got map[string]string, k uint64, spec checkSpec) verdict {
	var v verdict
	bad := func(format string, args ...any) { v.violations = append(v.violations, fmt.Sprintf(format, args...)) }

	creator := map[string]*op{}
	want := map[string]string{}
	delBy := map[string]*op{}
	var writes []*op
	var barrierAt time.Time // the latest call of an acknowledged barrier
	for _, o := range ops {
		switch o.kind {
		case opSet, opMSet:
			for i, key := range o.keys {
				creator[key] = o
				want[key] = o.vals[i]
			}
		case opDel:
			for _, key := range o.keys {
				delBy[key] = o
			}
		case opBarrier:
			if o.out == outOK && o.call.After(barrierAt) {
				barrierAt = o.call
			}
			continue
		}
		writes = append(writes, o)
	}

	keys := make([]string, 0, len(got))
	for key := range got {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	for _, key := range keys {
		val := got[key]
		if b, ok := base[key]; ok {
			if val != b {
				bad("key %s holds %q, but the state recovered before held %q and nothing wrote it since", key, tail(val, 40), tail(b, 40))
			}
		} else if w, ok := want[key]; ok {
			if val != w {
				bad("key %s holds %q, want %q written by %v", key, tail(val, 40), tail(w, 40), creator[key])
			}
		} else {
			bad("key %s (%q) was never written", key, tail(val, 40))
		}
	}
	present := func(key string) bool { _, ok := got[key]; return ok }

	st := map[*op]opState{}
	creatorState := func(key string) opState {
		if c := creator[key]; c != nil {
			return st[c]
		}
		if _, ok := base[key]; ok {
			return stateIn
		}
		return stateOut
	}
	for _, o := range writes {
		switch o.kind {
		case opSet, opMSet:
			if slices.ContainsFunc(o.keys, present) {
				st[o] = stateIn
			} else if slices.ContainsFunc(o.keys, func(key string) bool { return delBy[key] == nil }) {
				st[o] = stateOut
			}
		case opDel:
			if slices.ContainsFunc(o.keys, present) {
				st[o] = stateOut
			}
		}
	}
	// Propagate: a DEL whose keys are gone is there if their creation is;
	// a creation whose keys are all gone is there if one of its DELs is.
	propagate := func() {
		for changed := true; changed; {
			changed = false
			for _, o := range writes {
				if st[o] != undecided {
					continue
				}
				switch o.kind {
				case opDel:
					if slices.ContainsFunc(o.keys, func(key string) bool { return creatorState(key) == stateIn }) {
						st[o], changed = stateIn, true
					} else if slices.ContainsFunc(o.keys, func(key string) bool { return creatorState(key) == stateOut }) {
						st[o], changed = stateOut, true
					}
				default:
					if slices.ContainsFunc(o.keys, func(key string) bool { return st[delBy[key]] == stateIn }) {
						st[o], changed = stateIn, true
					} else if !slices.ContainsFunc(o.keys, func(key string) bool { return st[delBy[key]] != stateOut }) {
						st[o], changed = stateOut, true
					}
				}
			}
		}
	}
	propagate()
	// What the state cannot tell, a known revision can.
	for _, o := range writes {
		if st[o] == undecided && o.rev != 0 {
			if o.rev <= k {
				st[o] = stateIn
			} else {
				st[o] = stateOut
			}
			propagate()
		}
	}

	// Whole batches.
	for _, o := range writes {
		switch {
		case o.kind == opDel:
			var gone, kept []string
			for _, key := range o.keys {
				if present(key) {
					kept = append(kept, key)
				} else if creatorState(key) == stateIn {
					gone = append(gone, key)
				}
			}
			if len(kept) > 0 && len(gone) > 0 {
				bad("half a batch recovered: %v deleted %v but not %v", o, gone, kept)
			}
			if st[o] == stateIn {
				for _, key := range o.keys {
					if creatorState(key) == stateOut {
						bad("not a prefix: %v is recovered but %v, which it deleted from, is not", o, creator[key])
					}
				}
			}
		case st[o] == stateIn:
			var missing []string
			for _, key := range o.keys {
				if !present(key) && st[delBy[key]] != stateIn {
					missing = append(missing, key)
				}
			}
			if len(missing) > 0 {
				bad("half a batch recovered: %v lacks %v", o, missing)
			}
		}
	}
	for key := range base {
		if !present(key) && (delBy[key] == nil || st[delBy[key]] != stateIn) {
			bad("key %s of the state recovered at revision %d is gone, and no recovered DEL removed it (deleted by %v)", key, baseRev, delBy[key])
		}
	}

	// Revisions.
	for _, o := range writes {
		switch {
		case st[o] == stateIn:
			v.in++
		case st[o] == stateOut:
			v.out++
		default:
			v.undecided++
		}
		if o.rev == 0 {
			continue
		}
		if st[o] == stateIn && o.rev > k {
			bad("%v is recovered but the recovered revision is %d", o, k)
		}
		if st[o] == stateOut && o.rev <= k {
			bad("hole: %v is not recovered but the recovered revision is %d", o, k)
		}
	}
	if k < baseRev {
		bad("recovered revision %d is below the revision %d recovered before", k, baseRev)
	} else if n := int(k - baseRev); n < v.in || n > v.in+v.undecided {
		bad("revisions %d..%d were recovered (%d), but the state holds %d operations of them (and %d that cannot be placed): holes or extra writes",
			baseRev+1, k, n, v.in, v.undecided)
	}
	if k < spec.maxDurable {
		bad("recovered revision %d is below revision %d, which the server reported durable", k, spec.maxDurable)
	}

	// Prefix in real time.
	var last *op
	for _, o := range writes {
		if st[o] == stateIn && (last == nil || o.call.After(last.call)) {
			last = o
		}
	}
	for _, o := range writes {
		if o.out == outOK && st[o] == stateOut && last != nil && o.ret.Before(last.call) {
			bad("not a prefix: %v is lost, but %v, called %v after it was acknowledged, is recovered",
				o, last, last.call.Sub(o.ret).Round(time.Microsecond))
		}
	}

	// Durability.
	for _, o := range writes {
		if o.out != outOK {
			continue
		}
		v.okWrites++
		if o.rev != 0 {
			v.revKnown++
		}
		if o.kind == opDel && o.delCount >= 0 && o.delCount != len(o.keys) {
			bad("%v found %d of its %d keys: a read missed acknowledged writes", o, o.delCount, len(o.keys))
		}
		if st[o] != stateOut {
			continue
		}
		v.lost = append(v.lost, o)
		age := spec.crashAt.Sub(o.ret)
		if !spec.crashAt.IsZero() && !o.syncAcked(spec.mode) && age > v.maxLoss {
			v.maxLoss = age
		}
		switch {
		case o.durable:
			bad("lost %v, acknowledged as durable", o)
		case !barrierAt.IsZero() && o.ret.Before(barrierAt):
			bad("lost %v, acknowledged %v before a durability barrier was called that returned", o, barrierAt.Sub(o.ret).Round(time.Microsecond))
		case spec.required(o):
			switch {
			case spec.crashAt.IsZero():
				bad("lost %v", o)
			case age < 0:
				bad("lost %v, whose acknowledgement arrived %v after the fault was sent", o, (-age).Round(time.Microsecond))
			default:
				bad("lost %v, acknowledged %v before the fault", o, age.Round(time.Microsecond))
			}
		}
	}
	return v
}
