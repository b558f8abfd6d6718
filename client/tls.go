package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSFiles names the PEM files of a TLS connection to kvd (kvd
// --tls-cert): see [TLSFiles.Config].
type TLSFiles struct {
	// CAFile holds the CA certificates the server's certificate must
	// chain to; empty: the system's roots.
	CAFile string
	// CertFile and KeyFile are the client's certificate and key, for a
	// server that verifies clients (kvd --tls-ca); both or neither.
	CertFile, KeyFile string
	// ServerName is the name the server's certificate must hold; empty:
	// the host of the address dialed.
	ServerName string
}

// Config loads the files into a configuration for Options.TLS. It
// accepts TLS 1.2 and later only, as kvd does.
func (f TLSFiles) Config() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kvd: TLS CA file: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kvd: TLS CA file %s holds no PEM certificate", f.CAFile)
		}
	}
	if (f.CertFile == "") != (f.KeyFile == "") {
		return nil, errors.New("kvd: a TLS client certificate needs both its certificate and its key file")
	}
	if f.CertFile != "" {
		kp, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kvd: TLS client certificate %s with key %s: %w", f.CertFile, f.KeyFile, err)
		}
		c.Certificates = []tls.Certificate{kp}
	}
	return c, nil
}
