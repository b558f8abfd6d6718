package auth_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/kvdstore/kvd/auth"
)

// hash makes a password hash cheaply (the lowest count a file may hold).
func hash(t testing.TB, password string) string {
	t.Helper()
	h, err := auth.HashPassword(password, auth.MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestAuthenticate(t *testing.T) {
	token, tokenHash := auth.NewToken()
	file := fmt.Sprintf(`# a comment
alice read,write password=%s prefix=app/ prefix=cache/

ci read token=%s
root all password=%s
`, hash(t, "alice pw"), tokenHash, hash(t, "root pw"))
	users, err := auth.Parse(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(users.Names(), " "); got != "alice ci root" {
		t.Fatalf("names %q", got)
	}
	for _, tc := range []struct {
		name, password string
		ok             bool
	}{
		{"alice", "alice pw", true},
		{"alice", "alice pw", true}, // from the cache
		{"alice", "alice pW", false},
		{"alice", "", false},
		{"root", "root pw", true},
		{"root", "alice pw", false},
		{"ci", token, false}, // a token is not a password
		{"nobody", "alice pw", false},
	} {
		u, err := users.Authenticate(tc.name, tc.password)
		if tc.ok != (err == nil) {
			t.Errorf("%s/%q: %v", tc.name, tc.password, err)
			continue
		}
		if err != nil && !errors.Is(err, auth.ErrWrongPass) {
			t.Errorf("%s: error %v, want ErrWrongPass", tc.name, err)
		}
		if tc.ok && u.Name != tc.name {
			t.Errorf("authenticated as %s, want %s", u.Name, tc.name)
		}
	}
	if u, err := users.AuthenticateToken(token); err != nil || u.Name != "ci" {
		t.Errorf("token: %v, %v", u, err)
	}
	for _, bad := range []string{"", token + "x", token[:len(token)-1], "alice pw"} {
		if _, err := users.AuthenticateToken(bad); !errors.Is(err, auth.ErrWrongPass) {
			t.Errorf("token %q: %v", bad, err)
		}
	}

	alice := users.Lookup("alice")
	if !alice.Can(auth.Read|auth.Write) || alice.Can(auth.Admin) || !alice.Restricted() {
		t.Errorf("alice: %v restricted %v", alice.Perms, alice.Restricted())
	}
	for key, ok := range map[string]bool{"app/x": true, "app/": true, "cache/1": true, "ap": false, "other": false, "": false} {
		if alice.KeyAllowed([]byte(key)) != ok {
			t.Errorf("alice KeyAllowed(%q) = %v", key, !ok)
		}
	}
	if alice.RangeAllowed([]byte("app")) || !alice.RangeAllowed([]byte("app/sub/")) {
		t.Error("alice's ranges")
	}
	root := users.Lookup("root")
	if !root.Can(auth.All) || root.Restricted() || !root.KeyAllowed([]byte("anything")) {
		t.Error("root")
	}
	if d := alice.Describe(); d != "user alice read,write password=<hashed> prefix=app/ prefix=cache/" {
		t.Errorf("describe %q", d)
	}
	if users.Lookup("ci").Can(auth.Write) {
		t.Error("ci can write")
	}
}

func TestParseErrors(t *testing.T) {
	pw := hash(t, "pw")
	_, th := auth.NewToken()
	for _, tc := range []struct{ file, want string }{
		{"", "no users"},
		{"# only comments\n\n", "no users"},
		{"alice\n", "line 1: want NAME PERMISSIONS"},
		{"alice read\n", "neither password= nor token="},
		{"alice reed password=" + pw, `permission "reed"`},
		{"al ice read password=" + pw, `permission "ice"`},
		{"al/ice read password=" + pw, "only letters"},
		{"alice read password=plaintext", "not a pbkdf2-sha256"},
		{"alice read password=pbkdf2-sha256$100$c2FsdHNhbHQ$" + strings.Repeat("A", 43), "iterations"},
		{"alice read password=pbkdf2-sha256$600000$!!$" + strings.Repeat("A", 43), "salt"},
		{"alice read password=pbkdf2-sha256$600000$c2FsdHNhbHQ$AAAA", "not base64url of 32 bytes"},
		{"alice read password=" + pw + " password=" + pw, "two passwords"},
		{"alice read token=md5$abc", "not a sha256$HEX"},
		{"alice read token=sha256$abc", "64 hex digits"},
		{"alice read token=" + th + " prefix=", "empty prefix"},
		{"alice read token=" + th + " color=red", `unknown field "color"`},
		{"alice read token=" + th + "\n\nalice write token=" + th, `line 3: user "alice" defined twice`},
		{strings.Repeat("a", 65) + " read token=" + th, "longer than 64"},
	} {
		_, err := auth.Parse(strings.NewReader(tc.file))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one with %q", tc.file, err, tc.want)
		}
	}
}

// TestParseErrorsKeepSecrets checks that a line's error does not quote a
// secret written where a field was expected (a password pasted in clear).
func TestParseErrorsKeepSecrets(t *testing.T) {
	secret := "hunter2-correct-horse-battery"
	_, err := auth.Parse(strings.NewReader("alice read " + secret + "\n"))
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("error %v quotes the secret", err)
	}
}

func TestHashPassword(t *testing.T) {
	if _, err := auth.HashPassword("", 0); err == nil {
		t.Error("empty password hashed")
	}
	if _, err := auth.HashPassword("pw", 10); err == nil {
		t.Error("10 iterations accepted")
	}
	a, b := hash(t, "same"), hash(t, "same")
	if a == b {
		t.Error("two hashes of one password are equal: no salt")
	}
	if strings.Contains(a, "same") {
		t.Error("the hash holds the password")
	}
}

func TestSingle(t *testing.T) {
	users, err := auth.Single("s3cret", auth.MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	u, err := users.Authenticate(auth.DefaultUser, "s3cret")
	if err != nil || !u.Can(auth.All) {
		t.Fatalf("%v %v", u, err)
	}
	if _, err := users.Authenticate(auth.DefaultUser, "s3cret "); err == nil {
		t.Fatal("wrong password accepted")
	}
}

// TestAuthenticateConcurrent checks the verification cache under
// concurrent use (run with -race).
func TestAuthenticateConcurrent(t *testing.T) {
	users, err := auth.Parse(strings.NewReader("a read password=" + hash(t, "pa") + "\nb write password=" + hash(t, "pb") + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			name, pw := "a", "pa"
			if i%2 == 1 {
				name, pw = "b", "pb"
			}
			for range 5 {
				if u, err := users.Authenticate(name, pw); err != nil || u.Name != name {
					t.Errorf("%s: %v", name, err)
				}
				if _, err := users.Authenticate(name, pw+"x"); err == nil {
					t.Errorf("%s: wrong password accepted", name)
				}
			}
		})
	}
	wg.Wait()
}

func FuzzParse(f *testing.F) {
	_, th := auth.NewToken()
	f.Add("alice read,write token=" + th + " prefix=app/\n")
	f.Add("root all password=pbkdf2-sha256$10000$c2FsdHNhbHQ$" + strings.Repeat("A", 43) + "\n")
	f.Add("# c\n\nx admin token=sha256$" + strings.Repeat("0", 64))
	f.Fuzz(func(t *testing.T, file string) {
		users, err := auth.Parse(strings.NewReader(file))
		if err != nil {
			return
		}
		for _, n := range users.Names() {
			u := users.Lookup(n)
			if u == nil || u.Name != n {
				t.Fatalf("name %q looks up %v", n, u)
			}
			u.KeyAllowed([]byte("k"))
			_ = u.Describe()
		}
	})
}

// TestPasswordNUL: PBKDF2 pads its HMAC key with zeros, so a password with
// NULs appended would hash alike; such a password is refused.
func TestPasswordNUL(t *testing.T) {
	users, err := auth.Single("s3cret", auth.MinIterations)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"s3cret\x00", "s3cret\x00\x00", "\x00"} {
		if _, err := users.Authenticate(auth.DefaultUser, p); !errors.Is(err, auth.ErrWrongPass) {
			t.Errorf("Authenticate(%q) = %v, want ErrWrongPass", p, err)
		}
	}
	if _, err := users.Authenticate(auth.DefaultUser, "s3cret"); err != nil {
		t.Errorf("Authenticate(the password) = %v", err)
	}
	if _, err := auth.HashPassword("a\x00b", auth.MinIterations); err == nil {
		t.Error("HashPassword accepted a NUL byte")
	}
}
