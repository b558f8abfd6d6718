package main

import (
	"crypto/tls"
	"net/http"
	"os"

	"github.com/spf13/pflag"

	"github.com/kvdstore/kvd/client"
)

// tlsFlags are the global flags of a TLS connection to kvd (kvd
// --tls-cert). Any of them but --tls=false turns TLS on.
type tlsFlags struct {
	on                   bool
	ca, cert, key, sname string
}

// tlsEnv names the environment variables of the TLS flags; a flag given
// wins.
var tlsEnv = []struct{ name, flag string }{
	{"KVCTL_TLS_CA", "tls-ca"},
	{"KVCTL_TLS_CERT", "tls-cert"},
	{"KVCTL_TLS_KEY", "tls-key"},
	{"KVCTL_TLS_SERVER_NAME", "tls-server-name"},
}

// fromEnv sets the flags' defaults from the environment.
func (f *tlsFlags) fromEnv() {
	for _, e := range tlsEnv {
		if v, ok := os.LookupEnv(e.name); ok && v != "" {
			*f.field(e.flag) = v
		}
	}
	if v := os.Getenv("KVCTL_TLS"); v == "1" || v == "true" {
		f.on = true
	}
}

func (f *tlsFlags) field(flag string) *string {
	switch flag {
	case "tls-ca":
		return &f.ca
	case "tls-cert":
		return &f.cert
	case "tls-key":
		return &f.key
	}
	return &f.sname
}

func (f *tlsFlags) addFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&f.on, "tls", f.on, "connect over TLS, verifying the server's certificate against the system's CAs or --tls-ca (env KVCTL_TLS=1)")
	fs.StringVar(&f.ca, "tls-ca", f.ca, "PEM CA certificates the server's certificate must chain to; implies --tls (env KVCTL_TLS_CA)")
	fs.StringVar(&f.cert, "tls-cert", f.cert, "PEM client certificate, for a server that verifies clients; implies --tls (env KVCTL_TLS_CERT)")
	fs.StringVar(&f.key, "tls-key", f.key, "the PEM private key of --tls-cert (env KVCTL_TLS_KEY)")
	fs.StringVar(&f.sname, "tls-server-name", f.sname,
		"the name the server's certificate must hold (default: the host of --addr); implies --tls (env KVCTL_TLS_SERVER_NAME)")
}

// config returns the TLS configuration of the connections, nil without TLS.
func (f *tlsFlags) config() (*tls.Config, error) {
	if !f.on && f.ca == "" && f.cert == "" && f.key == "" && f.sname == "" {
		return nil, nil
	}
	return client.TLSFiles{CAFile: f.ca, CertFile: f.cert, KeyFile: f.key, ServerName: f.sname}.Config()
}

// clientOptions returns o with the connection's credentials and TLS
// configuration: every RESP connection kvctl makes (bench's too) takes them.
func (e *env) clientOptions(o client.Options) (client.Options, error) {
	// Credentials (credentials.go): --user or KVD_USER; --password-file,
	// else KVD_PASSWORD.
	o.Username = e.cfg.user
	if e.cfg.passwordFile != "" {
		o.PasswordFile = e.cfg.passwordFile
	} else {
		o.Password = os.Getenv("KVD_PASSWORD")
	}
	c, err := e.cfg.tls.config()
	o.TLS = c
	return o, err
}

// httpClient returns the HTTP client of the commands that use kvd's HTTP
// API (backup save) and the scheme of its URLs: https with TLS.
func (e *env) httpClient() (*http.Client, string, error) {
	c, err := e.cfg.tls.config()
	if err != nil || c == nil {
		return http.DefaultClient, "http", err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = c
	return &http.Client{Transport: tr}, "https", nil
}
