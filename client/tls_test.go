package client_test

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/engine"
	"github.com/kvdstore/kvd/internal/kvtest"
	"github.com/kvdstore/kvd/server"
)

// startTLSServer serves RESP over TLS with a certificate of ca, verifying
// client certificates against ca if auth asks it.
func startTLSServer(t *testing.T, ca *kvtest.CA, auth tls.ClientAuthType) string {
	t.Helper()
	db, err := engine.Open(t.TempDir(), engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(db, server.Config{RESPIO: "goroutines"})
	if err != nil {
		t.Fatal(err)
	}
	is := ca.Issue(t, "server", kvtest.CertOptions{})
	kp, err := tls.LoadX509KeyPair(is.CertFile, is.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{kp}, ClientAuth: auth, ClientCAs: ca.Pool()})
	done := make(chan error, 1)
	go func() { done <- srv.ServeRESP(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, server.ErrServerClosed) {
			t.Errorf("ServeRESP: %v", err)
		}
		db.Close()
	})
	return ln.Addr().String()
}

func TestTLS(t *testing.T) {
	ca := kvtest.NewCA(t, "test")
	addr := startTLSServer(t, ca, tls.NoClientCert)
	conf, err := client.TLSFiles{CAFile: ca.File}.Config()
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, client.Options{TLS: conf})
	if err := c.Put(t.Context(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(t.Context(), "k"); err != nil || string(v) != "v" {
		t.Fatalf("Get over TLS: %q, %v", v, err)
	}

	// Without TLS, or trusting another CA, or expecting another name,
	// Dial fails.
	other := kvtest.NewCA(t, "other")
	otherConf, err := client.TLSFiles{CAFile: other.File}.Config()
	if err != nil {
		t.Fatal(err)
	}
	wrongName, err := client.TLSFiles{CAFile: ca.File, ServerName: "kvd.example"}.Config()
	if err != nil {
		t.Fatal(err)
	}
	for name, o := range map[string]client.Options{
		"plain":      {DialTimeout: 10 * time.Second},
		"other CA":   {TLS: otherConf},
		"wrong name": {TLS: wrongName},
	} {
		if c, err := client.Dial(t.Context(), addr, o); err == nil {
			c.Close()
			t.Errorf("%s: Dial succeeded", name)
		}
	}
}

func TestTLSClientCertificate(t *testing.T) {
	ca := kvtest.NewCA(t, "test")
	addr := startTLSServer(t, ca, tls.RequireAndVerifyClientCert)
	cli := ca.Issue(t, "client", kvtest.CertOptions{Client: true})
	withCert, err := client.TLSFiles{CAFile: ca.File, CertFile: cli.CertFile, KeyFile: cli.KeyFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, client.Options{TLS: withCert})
	if err := c.Put(t.Context(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	noCert, _ := client.TLSFiles{CAFile: ca.File}.Config()
	if c, err := client.Dial(t.Context(), addr, client.Options{TLS: noCert}); err == nil {
		c.Close()
		t.Error("Dial without a client certificate succeeded")
	}
}

func TestTLSFilesErrors(t *testing.T) {
	ca := kvtest.NewCA(t, "test")
	cli := ca.Issue(t, "client", kvtest.CertOptions{Client: true})
	for name, tc := range map[string]struct {
		f    client.TLSFiles
		want string
	}{
		"missing CA":   {client.TLSFiles{CAFile: "/nonexistent/ca.pem"}, "/nonexistent/ca.pem"},
		"CA not PEM":   {client.TLSFiles{CAFile: cli.KeyFile}, "holds no PEM certificate"},
		"cert, no key": {client.TLSFiles{CertFile: cli.CertFile}, "both"},
		"key as cert":  {client.TLSFiles{CertFile: cli.KeyFile, KeyFile: cli.KeyFile}, cli.KeyFile},
	} {
		_, err := tc.f.Config()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}
