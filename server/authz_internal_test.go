package server

import (
	"testing"
	"time"

	"github.com/kvdstore/kvd/engine"
)

// TestCommandAccessComplete: every command has an access entry (a command
// without one is refused to every user), and every command that takes keys
// names their positions, so that a prefix-restricted user is checked.
func TestCommandAccessComplete(t *testing.T) {
	db, err := engine.Open(t.TempDir(), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := New(db, Config{})
	if err != nil {
		t.Fatal(err)
	}
	for name, cmd := range s.cmds {
		a, ok := commandAccess[name]
		if !ok {
			t.Errorf("command %s has no entry in commandAccess", name)
			continue
		}
		if cmd.keyArgs && (a.scope != scopeKeys || a.keys == nil) {
			t.Errorf("command %s takes keys but its access names none", name)
		}
		if a.scope == scopeKeys && a.keys == nil {
			t.Errorf("command %s: scopeKeys without key positions", name)
		}
	}
	for name := range commandAccess {
		if _, ok := s.cmds[name]; !ok {
			t.Errorf("commandAccess has %s, which is no command", name)
		}
	}
}

func TestKeyPositions(t *testing.T) {
	args := func(s ...string) [][]byte {
		var b [][]byte
		for _, x := range s {
			b = append(b, []byte(x))
		}
		return b
	}
	for _, tc := range []struct {
		f    func([][]byte) [][]byte
		args [][]byte
		want []string
	}{
		{keysThenDurability, args("del", "a", "b", "sync"), []string{"a", "b"}},
		{keysThenDurability, args("del", "sync"), []string{"sync"}}, // a key named sync
		{keyValuePairs, args("mset", "a", "1", "b", "2", "ASYNC"), []string{"a", "b"}},
		{keyValuePairs, args("mset", "a", "1", "b", "2"), []string{"a", "b"}},
		{memoryKeys, args("memory", "usage", "k", "samples", "5"), []string{"k"}},
		{memoryKeys, args("memory", "stats"), nil},
		{firstKey, args("set", "k", "v", "get"), []string{"k"}},
	} {
		got := tc.f(tc.args)
		if len(got) != len(tc.want) {
			t.Errorf("%q: keys %q, want %q", tc.args, got, tc.want)
			continue
		}
		for i := range got {
			if string(got[i]) != tc.want[i] {
				t.Errorf("%q: keys %q, want %q", tc.args, got, tc.want)
			}
		}
	}
}

// TestAuthLimiter: repeated failures from one address wait longer each
// time, up to the bound; another address is not slowed; a minute without
// failures starts over.
func TestAuthLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newAuthLimiter(0)
	l.now = func() time.Time { return now }
	for i := 1; i <= 25; i++ {
		want := defaultAuthFailDelay * time.Duration(min(i, authFailMaxDelays))
		if got := l.fail("10.0.0.1"); got != want {
			t.Fatalf("failure %d: delay %v, want %v", i, got, want)
		}
		now = now.Add(time.Second)
	}
	if got := l.fail("10.0.0.2"); got != defaultAuthFailDelay {
		t.Errorf("another address's first failure: delay %v", got)
	}
	now = now.Add(authFailWindow + time.Second)
	if got := l.fail("10.0.0.1"); got != defaultAuthFailDelay {
		t.Errorf("first failure after a quiet minute: delay %v", got)
	}
	if got := newAuthLimiter(-1).fail("x"); got != 0 {
		t.Errorf("disabled limiter: delay %v", got)
	}
	// The table of addresses is bounded.
	for i := range authFailAddrs + 10 {
		l.fail(string(rune(i)))
	}
	if n := len(l.fails); n > authFailAddrs {
		t.Errorf("limiter remembers %d addresses, bound %d", n, authFailAddrs)
	}
}
