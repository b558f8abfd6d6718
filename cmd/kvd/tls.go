package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/spf13/pflag"

	"github.com/kvdstore/kvd/internal/tlsfiles"
)

// tlsConfig holds the TLS flags: --tls-* for the client ports (RESP and
// HTTP), --cluster-tls-* for the cluster port.
type tlsConfig struct {
	cert, key, ca, clientAuth          string
	clusterCert, clusterKey, clusterCA string
}

func (c *tlsConfig) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.cert, "tls-cert", "",
		"serve RESP and HTTP over TLS with this PEM certificate (and its intermediates); needs --tls-key. Reloaded on SIGHUP or when the file changes")
	fs.StringVar(&c.key, "tls-key", "", "the PEM private key of --tls-cert")
	fs.StringVar(&c.ca, "tls-ca", "",
		"PEM CA certificates that clients' certificates must chain to: verify client certificates (see --tls-client-auth)")
	fs.StringVar(&c.clientAuth, "tls-client-auth", "",
		"with --tls-ca: require (a client without a valid certificate is refused; the default) or optional (a certificate, if sent, must be valid)")
	fs.StringVar(&c.clusterCert, "cluster-tls-cert", "",
		"cluster mode: mutual TLS on the cluster port with this PEM certificate, presented to members as server and client; needs --cluster-tls-key and --cluster-tls-ca")
	fs.StringVar(&c.clusterKey, "cluster-tls-key", "", "cluster mode: the PEM private key of --cluster-tls-cert")
	fs.StringVar(&c.clusterCA, "cluster-tls-ca", "",
		"cluster mode: PEM CA certificates that every member's certificate must chain to (host names are not checked)")
}

// enabled reports whether the client ports are on TLS.
func (c *tlsConfig) enabled() bool { return c.cert != "" }

// clusterEnabled reports whether the cluster port is on TLS.
func (c *tlsConfig) clusterEnabled() bool { return c.clusterCert != "" }

// clientAuthType is --tls-client-auth as crypto/tls says it.
func (c *tlsConfig) clientAuthType() tls.ClientAuthType {
	switch {
	case c.ca == "":
		return tls.NoClientCert
	case c.clientAuth == "optional":
		return tls.VerifyClientCertIfGiven
	}
	return tls.RequireAndVerifyClientCert
}

func (c *tlsConfig) validate(respIO string, cluster bool) []error {
	var errs []error
	if (c.cert == "") != (c.key == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if c.ca != "" && c.cert == "" {
		errs = append(errs, errors.New("--tls-ca needs --tls-cert and --tls-key"))
	}
	switch c.clientAuth {
	case "":
	case "require", "optional":
		if c.ca == "" {
			errs = append(errs, errors.New("--tls-client-auth needs --tls-ca, the CA that client certificates must chain to"))
		}
	default:
		errs = append(errs, fmt.Errorf("--tls-client-auth must be require or optional, not %q", c.clientAuth))
	}
	if c.enabled() && respIO == "loop" {
		errs = append(errs, errors.New("--resp-io loop cannot serve TLS (the event loop reads the sockets itself): "+
			"with --tls-cert RESP is served by goroutines; drop --resp-io"))
	}
	n := 0
	for _, f := range []string{c.clusterCert, c.clusterKey, c.clusterCA} {
		if f != "" {
			n++
		}
	}
	if n != 0 && n != 3 {
		errs = append(errs, errors.New("--cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca go together (mutual TLS)"))
	}
	if n != 0 && !cluster {
		errs = append(errs, errors.New("--cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca need --raft-listen (cluster mode)"))
	}
	return errs
}

// tlsSets is the loaded TLS configuration: a nil field is a port without TLS.
type tlsSets struct {
	client  *tlsfiles.Set
	cluster *tlsfiles.Set

	server                *tls.Config // RESP and HTTP listeners
	clusterServer, dialer *tls.Config // cluster port
}

// load loads the certificate files; an error names the bad file.
func (c *tlsConfig) load(log *slog.Logger) (*tlsSets, error) {
	t := &tlsSets{}
	var err error
	if c.enabled() {
		t.client, err = tlsfiles.Load(tlsfiles.Files{Cert: c.cert, Key: c.key, CA: c.ca, Name: "tls",
			Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, log)
		if err != nil {
			return nil, err
		}
		if t.server, err = t.client.ServerConfig(c.clientAuthType()); err != nil {
			return nil, err
		}
	}
	if c.clusterEnabled() {
		t.cluster, err = tlsfiles.Load(tlsfiles.Files{Cert: c.clusterCert, Key: c.clusterKey, CA: c.clusterCA, Name: "cluster tls",
			Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}, log)
		if err != nil {
			return nil, err
		}
		if t.clusterServer, err = t.cluster.ServerConfig(tls.RequireAndVerifyClientCert); err != nil {
			return nil, err
		}
		if t.dialer, err = t.cluster.PeerConfig(); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// listener puts ln on TLS if the client ports have it.
func (t *tlsSets) listener(ln net.Listener) net.Listener {
	if t.server == nil || ln == nil {
		return ln
	}
	return tls.NewListener(ln, t.server)
}

// enabled reports whether any port is on TLS.
func (t *tlsSets) enabled() bool { return t.client != nil || t.cluster != nil }

// Reload reloads every certificate, key and CA file, logging the outcome;
// a set that fails to load keeps what it had. New connections see the
// result, open ones keep theirs.
func (t *tlsSets) Reload() {
	for _, s := range []*tlsfiles.Set{t.client, t.cluster} {
		if s != nil {
			s.ReloadAndLog() // logs its error
		}
	}
}

// logAttrs describes the TLS configuration for the startup line.
func (t *tlsSets) logAttrs(c *tlsConfig) []any {
	var attrs []any
	if t.client != nil {
		auth := "none"
		switch c.clientAuthType() {
		case tls.RequireAndVerifyClientCert:
			auth = "require"
		case tls.VerifyClientCertIfGiven:
			auth = "optional"
		}
		attrs = append(attrs, "tls", "on", "tls_client_auth", auth)
	}
	if t.cluster != nil {
		attrs = append(attrs, "cluster_tls", "mutual")
	}
	return attrs
}
