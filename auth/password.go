package auth

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Passwords are stored as PBKDF2-HMAC-SHA256 hashes,
//
//	pbkdf2-sha256$ITERATIONS$SALT$HASH
//
// with the salt (16 bytes) and the hash (32 bytes) in unpadded base64url.
// PBKDF2 is in Go's standard library; its iteration count is in the hash,
// so a file can mix counts and an operator can raise it for new hashes.
const (
	passwordScheme = "pbkdf2-sha256"
	saltLen        = 16
	hashLen        = 32
	// DefaultIterations is the iteration count HashPassword uses when
	// given 0: OWASP's recommendation for PBKDF2-HMAC-SHA256 (2023).
	DefaultIterations = 600_000
	// MinIterations is the lowest count a users file may hold: fewer makes
	// a stolen file too cheap to brute-force.
	MinIterations = 10_000
	maxIterations = 100_000_000
)

// Bearer tokens are random strings kvd generates (NewToken); the file holds
// their SHA-256, "sha256$HEX". A fast hash is enough for 256 random bits.
const tokenScheme = "sha256"

// passwordHash is a parsed password hash.
type passwordHash struct {
	iterations int
	salt, hash []byte
}

// HashPassword returns the stored form of password, with iterations rounds
// (DefaultIterations when 0).
func HashPassword(password string, iterations int) (string, error) {
	if iterations == 0 {
		iterations = DefaultIterations
	}
	if iterations < MinIterations || iterations > maxIterations {
		return "", fmt.Errorf("iterations %d: must be %d to %d", iterations, MinIterations, maxIterations)
	}
	if password == "" {
		return "", fmt.Errorf("empty password")
	}
	if strings.IndexByte(password, 0) >= 0 {
		return "", fmt.Errorf("password holds a NUL byte")
	}
	salt := make([]byte, saltLen)
	rand.Read(salt)
	h, err := pbkdf2.Key(sha256.New, password, salt, iterations, hashLen)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	return fmt.Sprintf("%s$%d$%s$%s", passwordScheme, iterations, enc.EncodeToString(salt), enc.EncodeToString(h)), nil
}

// parsePasswordHash parses the stored form HashPassword writes.
func parsePasswordHash(s string) (passwordHash, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 4 || parts[0] != passwordScheme {
		return passwordHash{}, fmt.Errorf("not a %s$ITERATIONS$SALT$HASH password hash (make one with kvd passwd)", passwordScheme)
	}
	n, err := strconv.Atoi(parts[1])
	if err != nil || n < MinIterations || n > maxIterations {
		return passwordHash{}, fmt.Errorf("password hash iterations %q: must be %d to %d", parts[1], MinIterations, maxIterations)
	}
	enc := base64.RawURLEncoding
	salt, err := enc.DecodeString(parts[2])
	if err != nil || len(salt) < 8 {
		return passwordHash{}, fmt.Errorf("password hash salt: not base64url of at least 8 bytes")
	}
	h, err := enc.DecodeString(parts[3])
	if err != nil || len(h) != hashLen {
		return passwordHash{}, fmt.Errorf("password hash: not base64url of %d bytes", hashLen)
	}
	return passwordHash{iterations: n, salt: salt, hash: h}, nil
}

// verify reports whether password hashes to p, in time independent of
// where the hashes differ.
func (p passwordHash) verify(password string) bool {
	h, err := pbkdf2.Key(sha256.New, password, p.salt, p.iterations, hashLen)
	return err == nil && subtle.ConstantTimeCompare(h, p.hash) == 1
}

// NewToken returns a new random bearer token and the form a users file
// stores it in.
func NewToken() (token, stored string) {
	b := make([]byte, 32)
	rand.Read(b)
	token = "kvd_" + base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(token))
	return token, tokenScheme + "$" + hex.EncodeToString(sum[:])
}

// parseTokenHash parses "sha256$HEX".
func parseTokenHash(s string) ([sha256.Size]byte, error) {
	var out [sha256.Size]byte
	scheme, h, ok := strings.Cut(s, "$")
	if !ok || scheme != tokenScheme {
		return out, fmt.Errorf("not a %s$HEX token hash (make one with kvd token)", tokenScheme)
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != sha256.Size {
		return out, fmt.Errorf("token hash: not %d hex digits", 2*sha256.Size)
	}
	copy(out[:], b)
	return out, nil
}
