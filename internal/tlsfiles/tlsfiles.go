// Package tlsfiles keeps a certificate, its private key and a CA bundle
// loaded from PEM files, reloads them without a restart, and builds the
// crypto/tls configurations of kvd's listeners and of its cluster dialer
// from them.
//
// A Set is loaded once at startup (a bad or expired file is an error that
// names it), then reloaded on demand (Set.Reload, on SIGHUP) or when the
// files change: each handshake checks, at most once a second, whether a
// file's modification time or size changed. A reload that fails keeps
// what was in use and logs why; key material never appears in a log or
// an error. Every configuration accepts TLS 1.2 and later only.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// MinVersion is the oldest TLS version kvd accepts or offers.
const MinVersion = tls.VersionTLS12

// checkEvery is how often, at most, handshakes look at the files.
const checkEvery = time.Second

// expirySoon: a certificate loaded with less validity left than this is
// logged as a warning.
const expirySoon = 14 * 24 * time.Hour

// Files names the PEM files of a Set.
type Files struct {
	// Cert holds the certificate, followed by the intermediates that
	// chain it to its CA; Key its private key. Both are required.
	Cert, Key string
	// CA holds the certificates of the authorities that peers'
	// certificates must chain to: clients' certificates on a listener,
	// servers' on the cluster dialer. Empty: none.
	CA string
	// Name says what the files are for in logs ("tls", "cluster tls").
	Name string
	// Usages are the extended key usages the certificate must allow
	// (one that names none allows all): x509.ExtKeyUsageServerAuth for
	// a listener, and ExtKeyUsageClientAuth too for a cluster member,
	// which dials the others with it.
	Usages []x509.ExtKeyUsage
}

// Set is the loaded content of Files, kept current. It is safe for
// concurrent use.
type Set struct {
	files Files
	log   *slog.Logger
	now   func() time.Time

	cur       atomic.Pointer[material]
	nextCheck atomic.Int64 // unix nanoseconds before which handshakes do not stat the files

	mu    sync.Mutex // serializes loads
	tried stamps     // the files as they were at the last load, whether it worked or not
}

// material is one load of the files.
type material struct {
	cert *tls.Certificate // Leaf set
	pool *x509.CertPool   // nil without Files.CA
}

// stamp identifies a version of a file without reading it.
type stamp struct {
	mtime time.Time
	size  int64
}

type stamps [3]stamp // cert, key, CA

// Load reads the files. It fails, naming the file, if one cannot be read
// or parsed, if the key does not match the certificate, or if the
// certificate has expired. log receives the messages of later reloads;
// nil discards them.
func Load(files Files, log *slog.Logger) (*Set, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if files.Name == "" {
		files.Name = "tls"
	}
	s := &Set{files: files, log: log, now: time.Now}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	s.warnExpiry()
	return s, nil
}

// Reload reads the files again. If that fails it returns why and keeps
// the certificate and CAs in use; either way new handshakes see the
// result at once, connections already open are left as they are.
func (s *Set) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tried = s.stamp()
	m, err := s.load()
	if err != nil {
		return err
	}
	s.cur.Store(m)
	s.nextCheck.Store(s.now().Add(checkEvery).UnixNano())
	return nil
}

// Certificate returns the certificate in use.
func (s *Set) Certificate() *x509.Certificate { return s.cur.Load().cert.Leaf }

// stamp returns the files' current stamps; a file that cannot be
// examined gets the zero stamp (its load will say why).
func (s *Set) stamp() stamps {
	var st stamps
	for i, name := range []string{s.files.Cert, s.files.Key, s.files.CA} {
		if name == "" {
			continue
		}
		if fi, err := os.Stat(name); err == nil {
			st[i] = stamp{fi.ModTime(), fi.Size()}
		}
	}
	return st
}

// checkFiles reloads the files if they changed since the last load
// attempt, looking at most once every checkEvery. It runs in handshakes.
func (s *Set) checkFiles() {
	now := s.now()
	next := s.nextCheck.Load()
	if now.UnixNano() < next || !s.nextCheck.CompareAndSwap(next, now.Add(checkEvery).UnixNano()) {
		return
	}
	s.mu.Lock()
	changed := s.stamp() != s.tried
	s.mu.Unlock()
	if !changed {
		return
	}
	if err := s.Reload(); err != nil {
		s.log.Warn(s.files.Name+": the certificate files changed but do not load; keeping the certificate in use", "err", err)
		return
	}
	s.logLoaded("changed on disk")
}

// logLoaded logs what a reload loaded: no key material, the
// certificate's serial number and validity.
func (s *Set) logLoaded(why string) {
	c := s.Certificate()
	s.log.Info(s.files.Name+": certificate reloaded", "why", why, "cert", s.files.Cert,
		"serial", c.SerialNumber.Text(16), "not_after", c.NotAfter.UTC().Format(time.RFC3339))
	s.warnExpiry()
}

// warnExpiry logs a warning if the certificate in use expires soon.
func (s *Set) warnExpiry() {
	c := s.Certificate()
	if left := c.NotAfter.Sub(s.now()); left < expirySoon {
		s.log.Warn(s.files.Name+": the certificate expires soon; replace it and reload (SIGHUP)", "cert", s.files.Cert,
			"not_after", c.NotAfter.UTC().Format(time.RFC3339), "left", left.Round(time.Minute).String())
	}
}

// ReloadAndLog is Reload, logging the outcome: for a SIGHUP.
func (s *Set) ReloadAndLog() error {
	if err := s.Reload(); err != nil {
		s.log.Error(s.files.Name+": reload failed; keeping the certificate in use", "err", err)
		return err
	}
	s.logLoaded("reload requested")
	return nil
}

func (s *Set) load() (*material, error) {
	f := s.files
	certPEM, err := os.ReadFile(f.Cert)
	if err != nil {
		return nil, fmt.Errorf("%s: certificate: %w", f.Name, err)
	}
	keyPEM, err := os.ReadFile(f.Key)
	if err != nil {
		return nil, fmt.Errorf("%s: key: %w", f.Name, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	clear(keyPEM)
	if err != nil {
		// X509KeyPair's errors name PEM block types, never content.
		return nil, fmt.Errorf("%s: certificate %s with key %s: %w", f.Name, f.Cert, f.Key, err)
	}
	leaf := cert.Leaf
	if leaf == nil { // X509KeyPair sets it; parse it if it did not
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s: certificate %s: %w", f.Name, f.Cert, err)
		}
		cert.Leaf = leaf
	}
	if now := s.now(); now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("%s: certificate %s expired at %s", f.Name, f.Cert, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	for _, u := range f.Usages {
		if !allows(leaf, u) {
			return nil, fmt.Errorf("%s: certificate %s is not for %s: its extended key usages do not include it",
				f.Name, f.Cert, usageNames[u])
		}
	}
	m := &material{cert: &cert}
	if f.CA != "" {
		if m.pool, err = loadPool(f.CA); err != nil {
			return nil, fmt.Errorf("%s: %w", f.Name, err)
		}
	}
	return m, nil
}

// usageNames names the extended key usages Files.Usages may ask for.
var usageNames = map[x509.ExtKeyUsage]string{
	x509.ExtKeyUsageServerAuth: "servers (serverAuth)",
	x509.ExtKeyUsageClientAuth: "clients (clientAuth)",
}

// allows reports whether c may be used for u.
func allows(c *x509.Certificate, u x509.ExtKeyUsage) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, e := range c.ExtKeyUsage {
		if e == u || e == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// loadPool reads a bundle of PEM CA certificates.
func loadPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for len(data) > 0 {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA file %s: certificate %d: %w", path, n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", path)
	}
	return pool, nil
}

// ServerConfig returns the configuration of a listener that presents the
// set's certificate. With auth other than tls.NoClientCert the set must
// have a CA: clients' certificates are verified against it (a client
// certificate needs the clientAuth extended key usage, or none).
func (s *Set) ServerConfig(auth tls.ClientAuthType) (*tls.Config, error) {
	if auth != tls.NoClientCert && s.files.CA == "" {
		return nil, errors.New(s.files.Name + ": verifying client certificates needs a CA file")
	}
	return &tls.Config{
		MinVersion: MinVersion,
		// A handshake takes the certificate and CAs of the moment.
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			s.checkFiles()
			m := s.cur.Load()
			return &tls.Config{
				MinVersion:   MinVersion,
				Certificates: []tls.Certificate{*m.cert},
				ClientAuth:   auth,
				ClientCAs:    m.pool,
			}, nil
		}}, nil
}

// PeerConfig returns the configuration of a dialer between peers that
// share a private CA, the cluster's: it presents the set's certificate
// and verifies the server's chain against the set's CA, without checking
// a host name or address (any certificate the CA issued is a member's).
// The set must have a CA.
func (s *Set) PeerConfig() (*tls.Config, error) {
	if s.files.CA == "" {
		return nil, errors.New(s.files.Name + ": verifying peers needs a CA file")
	}
	return &tls.Config{
		MinVersion: MinVersion,
		// The standard verification would check a host name; the chain
		// is verified in VerifyConnection instead, against the CAs of
		// the moment.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			s.checkFiles()
			return s.cur.Load().cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyChain(cs.PeerCertificates, s.cur.Load().pool)
		},
	}, nil
}

// verifyChain verifies that certs, a server's chain as it sent it, leads
// to a certificate of pool, for server authentication.
func verifyChain(certs []*x509.Certificate, pool *x509.CertPool) error {
	if len(certs) == 0 {
		return errors.New("tls: the peer sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("tls: the peer's certificate: %w", err)
	}
	return nil
}
