package tlsfiles_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvdstore/kvd/internal/kvtest"
	"github.com/kvdstore/kvd/internal/tlsfiles"
)

// handshake runs a TLS handshake between server and client over a
// loopback connection and returns the certificate the client saw (nil on
// failure) and each side's error.
func handshake(t *testing.T, server, client *tls.Config) (*x509.Certificate, error, error) {
	t.Helper()
	ln := kvtest.Listen(t)
	b, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	deadline := time.Now().Add(30 * time.Second)
	a.SetDeadline(deadline)
	b.SetDeadline(deadline)
	var serr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := tls.Server(a, server)
		serr = sc.Handshake()
		if serr == nil {
			// TLS 1.3 clients finish before the server checks their
			// certificate: make the client read the server's verdict.
			_, serr = sc.Write([]byte{1})
		}
		sc.Close()
	}()
	cc := tls.Client(b, client)
	cerr := cc.Handshake()
	var seen *x509.Certificate
	if cerr == nil {
		var one [1]byte
		_, cerr = cc.Read(one[:])
		seen = cc.ConnectionState().PeerCertificates[0]
	}
	cc.Close()
	wg.Wait()
	if cerr != nil {
		seen = nil
	}
	return seen, serr, cerr
}

func TestServerPresentsCertificateAndVerifiesClients(t *testing.T) {
	ca := kvtest.NewCA(t, "test")
	srv := ca.Issue(t, "server", kvtest.CertOptions{})
	cli := ca.Issue(t, "client", kvtest.CertOptions{Client: true})
	set, err := tlsfiles.Load(tlsfiles.Files{Cert: srv.CertFile, Key: srv.KeyFile, CA: ca.File}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := set.ServerConfig(tls.RequireAndVerifyClientCert)
	if err != nil {
		t.Fatal(err)
	}
	withCert := ca.ClientTLS(t, &cli)
	withCert.ServerName = "localhost"
	seen, serr, cerr := handshake(t, sc, withCert)
	if serr != nil || cerr != nil {
		t.Fatalf("handshake with a client certificate: server %v, client %v", serr, cerr)
	}
	if seen.SerialNumber.Cmp(srv.Cert.SerialNumber) != 0 {
		t.Fatalf("client saw serial %v, want %v", seen.SerialNumber, srv.Cert.SerialNumber)
	}

	noCert := ca.ClientTLS(t, nil)
	noCert.ServerName = "localhost"
	if _, serr, _ := handshake(t, sc, noCert); serr == nil {
		t.Fatal("server accepted a client without a certificate")
	}
	other := kvtest.NewCA(t, "other")
	stranger := other.Issue(t, "stranger", kvtest.CertOptions{Client: true})
	withStranger := ca.ClientTLS(t, &stranger)
	withStranger.ServerName = "localhost"
	if _, serr, _ := handshake(t, sc, withStranger); serr == nil {
		t.Fatal("server accepted a client certificate of another CA")
	}

	old := ca.ClientTLS(t, nil)
	old.ServerName = "localhost"
	old.MaxVersion = tls.VersionTLS11
	sc0, _ := set.ServerConfig(tls.NoClientCert)
	if _, serr, _ := handshake(t, sc0, old); serr == nil {
		t.Fatal("server accepted TLS 1.1")
	}
}

func TestPeerConfigIsMutual(t *testing.T) {
	ca := kvtest.NewCA(t, "cluster")
	a := ca.Issue(t, "a", kvtest.CertOptions{})
	b := ca.Issue(t, "b", kvtest.CertOptions{})
	load := func(ca *kvtest.CA, is kvtest.Issued) *tlsfiles.Set {
		t.Helper()
		s, err := tlsfiles.Load(tlsfiles.Files{Cert: is.CertFile, Key: is.KeyFile, CA: ca.File, Name: "cluster tls"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	sa, sb := load(ca, a), load(ca, b)
	server, _ := sa.ServerConfig(tls.RequireAndVerifyClientCert)
	peer, err := sb.PeerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if _, serr, cerr := handshake(t, server, peer); serr != nil || cerr != nil {
		t.Fatalf("members: server %v, client %v", serr, cerr)
	}

	other := kvtest.NewCA(t, "other")
	x := other.Issue(t, "x", kvtest.CertOptions{})
	// A stranger trusting its own CA refuses the member's certificate...
	strangerPeer, _ := load(other, x).PeerConfig()
	if _, _, cerr := handshake(t, server, strangerPeer); cerr == nil || !strings.Contains(cerr.Error(), "unknown authority") {
		t.Fatalf("stranger dialing a member: client error %v, want an unknown authority", cerr)
	}
	// ...and one trusting the cluster's CA is refused by the member.
	sneaky, err := tlsfiles.Load(tlsfiles.Files{Cert: x.CertFile, Key: x.KeyFile, CA: ca.File}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sneakyPeer, _ := sneaky.PeerConfig()
	if _, serr, cerr := handshake(t, server, sneakyPeer); serr == nil || cerr == nil {
		t.Fatalf("stranger with the cluster's CA: server %v, client %v; want both to fail", serr, cerr)
	}
	// A member refuses a server whose certificate another CA issued.
	strangerServer, _ := load(other, x).ServerConfig(tls.RequireAndVerifyClientCert)
	if _, _, cerr := handshake(t, strangerServer, peer); cerr == nil {
		t.Fatal("member accepted a server certificate of another CA")
	}
}

func TestLoadErrorsNameTheFile(t *testing.T) {
	ca := kvtest.NewCA(t, "test")
	good := ca.Issue(t, "good", kvtest.CertOptions{})
	other := ca.Issue(t, "other", kvtest.CertOptions{})
	expired := ca.Issue(t, "expired", kvtest.CertOptions{NotAfter: time.Now().Add(-time.Minute)})
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate\n"), 0o600)
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name  string
		files tlsfiles.Files
		want  []string
	}{
		{"missing cert", tlsfiles.Files{Cert: missing, Key: good.KeyFile}, []string{"certificate", missing}},
		{"missing key", tlsfiles.Files{Cert: good.CertFile, Key: missing}, []string{"key", missing}},
		{"garbage cert", tlsfiles.Files{Cert: garbage, Key: good.KeyFile}, []string{garbage}},
		{"garbage key", tlsfiles.Files{Cert: good.CertFile, Key: garbage}, []string{garbage}},
		{"key of another cert", tlsfiles.Files{Cert: good.CertFile, Key: other.KeyFile}, []string{good.CertFile, other.KeyFile, "does not match"}},
		{"expired", tlsfiles.Files{Cert: expired.CertFile, Key: expired.KeyFile}, []string{expired.CertFile, "expired"}},
		{"garbage CA", tlsfiles.Files{Cert: good.CertFile, Key: good.KeyFile, CA: garbage}, []string{"CA file", garbage}},
		{"missing CA", tlsfiles.Files{Cert: good.CertFile, Key: good.KeyFile, CA: missing}, []string{"CA file", missing}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tlsfiles.Load(tc.files, nil)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "PRIVATE KEY-----") || strings.Contains(err.Error(), "BEGIN") {
				t.Errorf("error %q quotes PEM content", err)
			}
		})
	}
	if _, err := tlsfiles.Load(tlsfiles.Files{Cert: good.CertFile, Key: good.KeyFile}, nil); err != nil {
		t.Fatalf("good files: %v", err)
	}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if _, err := tlsfiles.Load(tlsfiles.Files{Cert: good.CertFile, Key: good.KeyFile, Usages: both}, nil); err != nil {
		t.Fatalf("a certificate for servers and clients, asked for both: %v", err)
	}
	clientOnly := ca.Issue(t, "client", kvtest.CertOptions{Client: true})
	_, err := tlsfiles.Load(tlsfiles.Files{Cert: clientOnly.CertFile, Key: clientOnly.KeyFile, Usages: both}, nil)
	if err == nil || !strings.Contains(err.Error(), clientOnly.CertFile) || !strings.Contains(err.Error(), "serverAuth") {
		t.Fatalf("a client certificate for a server: %v, want an error naming the file and serverAuth", err)
	}
}

func TestReload(t *testing.T) {
	ca := kvtest.NewCA(t, "test")
	srv := ca.Issue(t, "server", kvtest.CertOptions{})
	var logBuf syncBuffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	set, err := tlsfiles.Load(tlsfiles.Files{Cert: srv.CertFile, Key: srv.KeyFile}, log)
	if err != nil {
		t.Fatal(err)
	}
	sc, _ := set.ServerConfig(tls.NoClientCert)
	client := ca.ClientTLS(t, nil)
	client.ServerName = "localhost"
	keyPEM, _ := os.ReadFile(srv.KeyFile)

	// A forced reload of new files: the next handshake sees them.
	second := ca.IssueTo(t, "server", srv.CertFile, srv.KeyFile, kvtest.CertOptions{})
	if err := set.ReloadAndLog(); err != nil {
		t.Fatal(err)
	}
	if seen, _, cerr := handshake(t, sc, client); cerr != nil || seen.SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Fatalf("after Reload: saw %v (err %v), want serial %v", seen, cerr, second.SerialNumber)
	}

	// A reload of a broken file fails and keeps the certificate.
	os.WriteFile(srv.KeyFile, []byte("broken"), 0o600)
	if err := set.ReloadAndLog(); err == nil {
		t.Fatal("Reload of a broken key succeeded")
	}
	if seen, _, cerr := handshake(t, sc, client); cerr != nil || seen.SerialNumber.Cmp(second.SerialNumber) != 0 {
		t.Fatalf("after a failed Reload: saw %v (err %v), want serial %v", seen, cerr, second.SerialNumber)
	}

	// New files are picked up by handshakes, without a Reload, within
	// about a second of being written.
	third := ca.IssueTo(t, "server", srv.CertFile, srv.KeyFile, kvtest.CertOptions{})
	deadline := time.Now().Add(30 * time.Second)
	for {
		seen, _, cerr := handshake(t, sc, client)
		if cerr != nil {
			t.Fatal(cerr)
		}
		if seen.SerialNumber.Cmp(third.SerialNumber) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("handshakes still present serial %v, want %v", seen.SerialNumber, third.SerialNumber)
		}
		time.Sleep(50 * time.Millisecond)
	}
	logs := logBuf.String()
	for _, w := range []string{"reload failed", "certificate reloaded", "changed on disk", third.SerialNumber.Text(16)} {
		if !strings.Contains(logs, w) {
			t.Errorf("log lacks %q:\n%s", w, logs)
		}
	}
	if bytes.Contains([]byte(logs), keyPEM) || strings.Contains(logs, "PRIVATE KEY") {
		t.Errorf("log holds key material:\n%s", logs)
	}
}

func TestConfigsNeedACA(t *testing.T) {
	ca := kvtest.NewCA(t, "test")
	srv := ca.Issue(t, "server", kvtest.CertOptions{})
	set, err := tlsfiles.Load(tlsfiles.Files{Cert: srv.CertFile, Key: srv.KeyFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := set.ServerConfig(tls.RequireAndVerifyClientCert); err == nil {
		t.Error("ServerConfig verifying clients without a CA succeeded")
	}
	if _, err := set.PeerConfig(); err == nil {
		t.Error("PeerConfig without a CA succeeded")
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestExpirySoonIsLogged(t *testing.T) {
	ca := kvtest.NewCA(t, "test")
	soon := ca.Issue(t, "soon", kvtest.CertOptions{NotAfter: time.Now().Add(48 * time.Hour)})
	later := ca.Issue(t, "later", kvtest.CertOptions{NotAfter: time.Now().Add(90 * 24 * time.Hour)})
	for _, tc := range []struct {
		is   kvtest.Issued
		warn bool
	}{{soon, true}, {later, false}} {
		var logBuf syncBuffer
		if _, err := tlsfiles.Load(tlsfiles.Files{Cert: tc.is.CertFile, Key: tc.is.KeyFile}, slog.New(slog.NewTextHandler(&logBuf, nil))); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(logBuf.String(), "expires soon"); got != tc.warn {
			t.Errorf("%s: warned %v, want %v; log:\n%s", tc.is.CertFile, got, tc.warn, logBuf.String())
		}
	}
}
