// Package auth holds kvd's users: who may connect, with which password or
// bearer token, and what each may do (read, write, admin), optionally only
// under some key prefixes. It parses and checks the users file; the server
// asks it who a client is and whether a command is allowed.
//
// A users file has one user per line; blank lines and lines starting with #
// are ignored:
//
//	# NAME  PERMISSIONS  [password=HASH] [token=HASH]... [prefix=P]...
//	alice   read,write   password=pbkdf2-sha256$600000$...  prefix=app/ prefix=cache/
//	ci      read         token=sha256$9f86d08...
//	root    all          password=pbkdf2-sha256$600000$...
//
// PERMISSIONS is a comma-separated list of read, write and admin (config,
// jobs, cluster membership, users), or all. A user with prefixes reaches
// only keys starting with one of them (admin commands are not about keys:
// a prefix does not restrict them). Passwords and tokens are stored hashed
// only: `kvd passwd` and `kvd token` make the hashes. The user named
// "default" is the one `AUTH password` (no name) authenticates as.
package auth

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
)

// Perm is a set of permissions.
type Perm uint8

const (
	Read Perm = 1 << iota
	Write
	Admin
	All = Read | Write | Admin
)

// String lists p's permissions as a users file does.
func (p Perm) String() string {
	if p == All {
		return "all"
	}
	var s []string
	for _, x := range []struct {
		p    Perm
		name string
	}{{Read, "read"}, {Write, "write"}, {Admin, "admin"}} {
		if p&x.p != 0 {
			s = append(s, x.name)
		}
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}

// DefaultUser is the name AUTH with a password alone authenticates as.
const DefaultUser = "default"

// ErrWrongPass is the one answer to a failed authentication, whether the
// user does not exist, has no password or gave the wrong one: telling
// them apart would let a client find out which users exist.
var ErrWrongPass = errors.New("invalid username-password pair or user is disabled")

// User is one user of a users file.
type User struct {
	Name     string
	Perms    Perm
	Prefixes []string // empty: every key
	password *passwordHash
	tokens   [][sha256.Size]byte
}

// Can reports whether u has every permission in p.
func (u *User) Can(p Perm) bool { return u.Perms&p == p }

// KeyAllowed reports whether u may reach key.
func (u *User) KeyAllowed(key []byte) bool {
	if len(u.Prefixes) == 0 {
		return true
	}
	for _, p := range u.Prefixes {
		if bytes.HasPrefix(key, []byte(p)) {
			return true
		}
	}
	return false
}

// RangeAllowed reports whether every key starting with prefix is one u may
// reach: a scan or watch of that prefix needs no filtering.
func (u *User) RangeAllowed(prefix []byte) bool { return u.KeyAllowed(prefix) }

// Restricted reports whether u reaches only some keys.
func (u *User) Restricted() bool { return len(u.Prefixes) > 0 }

// Users is a parsed users file. It is immutable once parsed (a reload makes
// a new one), and safe for concurrent use.
type Users struct {
	byName map[string]*User
	names  []string // sorted

	// A successful password check is remembered under an HMAC of the name
	// and password with a key that never leaves the process, so that a
	// client authenticating on every request (HTTP basic auth, a pool of
	// connections) pays PBKDF2 once, and memory holds no password.
	cacheKey []byte
	mu       sync.Mutex
	verified map[[sha256.Size]byte]*User
	// slots bounds the password checks running at once: a flood of
	// guesses gets a queue, not every core.
	slots chan struct{}
	// dummy is checked for an unknown user, so that the answer takes as
	// long as for a known one.
	dummy passwordHash
}

const maxVerified = 4096

// Load reads and parses the users file at path.
func Load(path string) (*Users, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	u, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return u, nil
}

// Parse parses a users file. An error names the line and what is wrong
// with it, and never quotes a secret.
func Parse(r io.Reader) (*Users, error) {
	users := newUsers()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		u, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if _, dup := users.byName[u.Name]; dup {
			return nil, fmt.Errorf("line %d: user %q defined twice", n, u.Name)
		}
		users.add(u)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(users.byName) == 0 {
		return nil, errors.New("no users defined (a users file with none would lock everyone out)")
	}
	return users, nil
}

// Single returns the users of --requirepass: DefaultUser with every
// permission and password.
func Single(password string, iterations int) (*Users, error) {
	h, err := HashPassword(password, iterations)
	if err != nil {
		return nil, err
	}
	ph, err := parsePasswordHash(h)
	if err != nil {
		return nil, err
	}
	users := newUsers()
	users.add(&User{Name: DefaultUser, Perms: All, password: &ph})
	return users, nil
}

func newUsers() *Users {
	key := make([]byte, 32)
	rand.Read(key)
	salt := make([]byte, saltLen)
	rand.Read(salt)
	slots := max(1, runtime.GOMAXPROCS(0)/2)
	return &Users{
		byName:   map[string]*User{},
		cacheKey: key,
		verified: map[[sha256.Size]byte]*User{},
		slots:    make(chan struct{}, slots),
		dummy:    passwordHash{iterations: DefaultIterations, salt: salt, hash: make([]byte, hashLen)},
	}
}

func (us *Users) add(u *User) {
	us.byName[u.Name] = u
	us.names = append(us.names, u.Name)
	sort.Strings(us.names)
}

// parseLine parses one user's line.
func parseLine(line string) (*User, error) {
	f := strings.Fields(line)
	if len(f) < 2 {
		return nil, errors.New("want NAME PERMISSIONS [password=HASH] [token=HASH]... [prefix=P]...")
	}
	u := &User{Name: f[0]}
	if err := checkName(u.Name); err != nil {
		return nil, err
	}
	perms, err := parsePerms(f[1])
	if err != nil {
		return nil, fmt.Errorf("user %q: %w", u.Name, err)
	}
	u.Perms = perms
	for _, field := range f[2:] {
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return nil, fmt.Errorf("user %q: %q is not password=, token= or prefix=", u.Name, redact(field))
		}
		switch k {
		case "password":
			if u.password != nil {
				return nil, fmt.Errorf("user %q: two passwords", u.Name)
			}
			ph, err := parsePasswordHash(v)
			if err != nil {
				return nil, fmt.Errorf("user %q: %w", u.Name, err)
			}
			u.password = &ph
		case "token":
			th, err := parseTokenHash(v)
			if err != nil {
				return nil, fmt.Errorf("user %q: %w", u.Name, err)
			}
			u.tokens = append(u.tokens, th)
		case "prefix":
			if v == "" {
				return nil, fmt.Errorf("user %q: an empty prefix (leave prefixes out for every key)", u.Name)
			}
			u.Prefixes = append(u.Prefixes, v)
		default:
			return nil, fmt.Errorf("user %q: unknown field %q (want password=, token= or prefix=)", u.Name, k)
		}
	}
	if u.password == nil && len(u.tokens) == 0 {
		return nil, fmt.Errorf("user %q: neither password= nor token=: nobody could authenticate as it", u.Name)
	}
	return u, nil
}

// redact keeps a field's name and drops what could be a secret.
func redact(field string) string {
	if len(field) > 12 {
		return field[:8] + "..."
	}
	return field
}

func checkName(name string) error {
	if len(name) > 64 {
		return fmt.Errorf("user name longer than 64 bytes")
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_.@-", r)
		if !ok {
			return fmt.Errorf("user name %q: only letters, digits and _.@- are allowed", name)
		}
	}
	return nil
}

func parsePerms(s string) (Perm, error) {
	var p Perm
	for _, w := range strings.Split(s, ",") {
		switch w {
		case "read":
			p |= Read
		case "write":
			p |= Write
		case "admin":
			p |= Admin
		case "all":
			p |= All
		default:
			return 0, fmt.Errorf("permission %q: want read, write, admin or all, comma-separated", w)
		}
	}
	return p, nil
}

// Lookup returns the user named name, or nil.
func (us *Users) Lookup(name string) *User { return us.byName[name] }

// Names returns the users' names, sorted.
func (us *Users) Names() []string { return us.names }

// Authenticate checks name's password. Any failure is ErrWrongPass.
func (us *Users) Authenticate(name, password string) (*User, error) {
	mac := hmac.New(sha256.New, us.cacheKey)
	mac.Write([]byte(name))
	mac.Write([]byte{0})
	mac.Write([]byte(password))
	var key [sha256.Size]byte
	mac.Sum(key[:0])
	us.mu.Lock()
	u := us.verified[key]
	us.mu.Unlock()
	if u != nil {
		return u, nil
	}

	us.slots <- struct{}{}
	defer func() { <-us.slots }()
	u = us.byName[name]
	// PBKDF2's HMAC pads its key with zeros: "pw" and "pw\x00" would both
	// pass. No stored password holds a NUL (HashPassword refuses one).
	if u == nil || u.password == nil || strings.IndexByte(password, 0) >= 0 {
		us.dummy.verify(password)
		return nil, ErrWrongPass
	}
	if !u.password.verify(password) {
		return nil, ErrWrongPass
	}
	us.mu.Lock()
	if len(us.verified) >= maxVerified {
		clear(us.verified)
	}
	us.verified[key] = u
	us.mu.Unlock()
	return u, nil
}

// AuthenticateToken returns the user holding the bearer token.
func (us *Users) AuthenticateToken(token string) (*User, error) {
	sum := sha256.Sum256([]byte(token))
	var found *User
	for _, name := range us.names {
		u := us.byName[name]
		for _, th := range u.tokens {
			if subtle.ConstantTimeCompare(sum[:], th[:]) == 1 {
				found = u
			}
		}
	}
	if found == nil {
		return nil, ErrWrongPass
	}
	return found, nil
}

// Describe returns u as ACL LIST shows it: its line of the users file with
// the secrets' hashes left out.
func (u *User) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "user %s %s", u.Name, u.Perms)
	if u.password != nil {
		b.WriteString(" password=<hashed>")
	}
	for range u.tokens {
		b.WriteString(" token=<hashed>")
	}
	for _, p := range u.Prefixes {
		fmt.Fprintf(&b, " prefix=%s", p)
	}
	return b.String()
}
