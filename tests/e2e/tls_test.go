package e2e

import (
	"crypto/tls"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/internal/kvtest"
)

// tlsSerial makes a TLS handshake with addr with conf (nil: trusting ca,
// no client certificate) and returns the serial number of the server's
// certificate. It then reads the reply to a PING, which carries the
// server's verdict on the client's certificate (TLS 1.3 gives it after
// the client's handshake ends).
func tlsSerial(addr string, ca *kvtest.CA, conf *tls.Config) (*big.Int, error) {
	if conf == nil {
		conf = &tls.Config{RootCAs: ca.Pool()}
	}
	d := &net.Dialer{Timeout: 30 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, conf)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return nil, err
	}
	buf := make([]byte, 7)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	// PONG, or -NOAUTH from a server with users: a reply either way.
	if n == 0 || (buf[0] != '+' && buf[0] != '-') {
		return nil, errors.New("PING over TLS: got " + string(buf[:n]))
	}
	return c.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// TestTLS: kvd with --tls-cert serves RESP and HTTP over TLS only:
// redis-cli --tls, curl --cacert, the Go client and kvctl work against
// it, plain-text clients do not; SIGHUP, or new files alone, put a new
// certificate in use without a restart.
func TestTLS(t *testing.T) {
	cli := needTool(t, "redis-cli")
	curl := kvtest.NeedTool(t, "curl", "apt-get install curl")
	ca := kvtest.NewCA(t, "test")
	srv := ca.Issue(t, "server", kvtest.CertOptions{})
	p := startKVD(t, "", "--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile)
	if !strings.Contains(p.Log(), "tls=on tls_client_auth=none") {
		t.Errorf("startup log does not say TLS is on:\n%s", p.Log())
	}

	// redis-cli --tls.
	rc := func(args ...string) (string, int) {
		t.Helper()
		out, errOut, code := runTool(t, "", nil, cli, append([]string{"-h", "127.0.0.1", "-p", port(p.RESPAddr),
			"--tls", "--cacert", ca.File}, args...)...)
		return strings.TrimSpace(out + errOut), code
	}
	for _, c := range []struct{ args, want string }{
		{"PING", "PONG"}, {"SET k hello", "OK"}, {"GET k", "hello"},
	} {
		if out, code := rc(strings.Fields(c.args)...); code != 0 || out != c.want {
			t.Fatalf("redis-cli --tls %s: exit %d, %q; want %q", c.args, code, out, c.want)
		}
	}

	// curl --cacert: https PUT and GET.
	base := "https://" + p.HTTPAddr + "/v1/kv/"
	if out, errOut, code := runTool(t, "", nil, curl, "-sS", "--fail", "--cacert", ca.File,
		"-X", "PUT", "--data-binary", "over https", base+"h"); code != 0 {
		t.Fatalf("curl PUT: exit %d: %s%s", code, out, errOut)
	}
	if out, errOut, code := runTool(t, "", nil, curl, "-sS", "--fail", "--cacert", ca.File, base+"k"); code != 0 || out != "hello" {
		t.Fatalf("curl GET: exit %d: %q %s", code, out, errOut)
	}

	// The Go client, and kvctl.
	conf, err := client.TLSFiles{CAFile: ca.File}.Config()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(t.Context(), p.RESPAddr, client.Options{TLS: conf})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(t.Context(), "h"); err != nil || string(v) != "over https" {
		t.Fatalf("Go client over TLS: %q, %v", v, err)
	}
	c.Close()
	if out, errOut, code := runTool(t, "", nil, kvctlBin, "--addr", p.RESPAddr, "--tls-ca", ca.File, "get", "k"); code != 0 || out != "hello\n" {
		t.Fatalf("kvctl --tls-ca get: exit %d: %q %s", code, out, errOut)
	}
	if out, errOut, code := runTool(t, "", []string{"KVCTL_TLS_CA=" + ca.File}, kvctlBin, "--addr", p.RESPAddr, "put", "e", "env"); code != 0 {
		t.Fatalf("kvctl with KVCTL_TLS_CA: exit %d: %q %s", code, out, errOut)
	}
	// kvctl backup save reads the snapshot over HTTPS.
	backup := filepath.Join(t.TempDir(), "backup")
	if out, errOut, code := runTool(t, "", nil, kvctlBin, "--tls-ca", ca.File, "backup", "save", "--http-addr", p.HTTPAddr, backup); code != 0 {
		t.Fatalf("kvctl backup save over HTTPS: exit %d: %q %s", code, out, errOut)
	}
	if out, errOut, code := runTool(t, "", nil, kvctlBin, "backup", "status", backup); code != 0 || !strings.Contains(out, "keys:     3") {
		t.Fatalf("kvctl backup status of the HTTPS backup: exit %d: %q %s", code, out, errOut)
	}

	// Plain text gets nowhere, and neither does a client trusting another CA.
	if out, code := func() (string, int) {
		out, errOut, code := runTool(t, "", nil, cli, "-h", "127.0.0.1", "-p", port(p.RESPAddr), "GET", "k")
		return out + errOut, code
	}(); strings.Contains(out, "hello") {
		t.Errorf("plain redis-cli GET: exit %d, %q", code, out)
	}
	if c, err := client.Dial(t.Context(), p.RESPAddr, client.Options{DialTimeout: 10 * time.Second}); err == nil {
		c.Close()
		t.Error("plain Go client: Dial succeeded")
	}
	if out, _, code := runTool(t, "", nil, curl, "-sS", "--max-time", "30", "http://"+p.HTTPAddr+"/v1/kv/k"); code == 0 || strings.Contains(out, "hello") {
		t.Errorf("plain curl: exit %d, %q", code, out)
	}
	other := kvtest.NewCA(t, "other")
	if _, code := func() (string, int) {
		out, errOut, code := runTool(t, "", nil, cli, "-h", "127.0.0.1", "-p", port(p.RESPAddr), "--tls", "--cacert", other.File, "PING")
		return out + errOut, code
	}(); code == 0 {
		t.Error("redis-cli trusting another CA: exit 0")
	}

	// SIGHUP loads new files.
	second := ca.IssueTo(t, "server", srv.CertFile, srv.KeyFile, kvtest.CertOptions{})
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitSerial := func(what string, want *big.Int) {
		t.Helper()
		kvtest.Eventually(t, 30*time.Second, what, func() bool {
			s, err := tlsSerial(p.RESPAddr, ca, nil)
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			return s.Cmp(want) == 0
		})
	}
	waitSerial("the certificate of SIGHUP", second.SerialNumber)
	// The new certificate is in use before the reload is logged.
	if !kvtest.WaitFor(10*time.Second, 10*time.Millisecond, func() bool { return strings.Contains(p.Log(), "why=\"reload requested\"") }) {
		t.Errorf("no reload logged:\n%s", p.Log())
	}
	// New files alone are seen within a second or so.
	third := ca.IssueTo(t, "server", srv.CertFile, srv.KeyFile, kvtest.CertOptions{})
	waitSerial("the certificate of new files", third.SerialNumber)
	// HTTP too, and the connection opened before still works.
	if out, errOut, code := runTool(t, "", nil, curl, "-sS", "--fail", "--cacert", ca.File, base+"e"); code != 0 || out != "env" {
		t.Fatalf("curl GET after reload: exit %d: %q %s", code, out, errOut)
	}
	if strings.Contains(p.Log(), "PRIVATE KEY") {
		t.Errorf("the log holds key material:\n%s", p.Log())
	}
}

// TestTLSClientCertificates: with --tls-ca kvd refuses clients without a
// certificate its CA issued (--tls-client-auth require, the default), or
// accepts them without one but refuses a bad one (optional).
func TestTLSClientCertificates(t *testing.T) {
	cli := needTool(t, "redis-cli")
	curl := kvtest.NeedTool(t, "curl", "apt-get install curl")
	ca := kvtest.NewCA(t, "test")
	srv := ca.Issue(t, "server", kvtest.CertOptions{})
	good := ca.Issue(t, "client", kvtest.CertOptions{Client: true})
	other := kvtest.NewCA(t, "other")
	bad := other.Issue(t, "stranger", kvtest.CertOptions{Client: true})

	// The certificate is sent whatever CAs the server names (a client
	// given Certificates sends none that the server's CAs did not issue).
	withCert := func(is *kvtest.Issued) *tls.Config {
		c := ca.ClientTLS(t, is)
		if len(c.Certificates) > 0 {
			kp := c.Certificates[0]
			c.Certificates = nil
			c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &kp, nil }
		}
		return c
	}
	for _, mode := range []string{"require", "optional"} {
		t.Run(mode, func(t *testing.T) {
			args := []string{"--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile, "--tls-ca", ca.File}
			if mode == "optional" {
				args = append(args, "--tls-client-auth", "optional")
			}
			p := startKVD(t, "", args...)
			if _, err := tlsSerial(p.RESPAddr, ca, withCert(&good)); err != nil {
				t.Errorf("with a good certificate: %v", err)
			}
			_, err := tlsSerial(p.RESPAddr, ca, withCert(nil))
			if mode == "require" && err == nil {
				t.Error("without a certificate: accepted")
			} else if mode == "optional" && err != nil {
				t.Errorf("without a certificate: %v", err)
			}
			if _, err := tlsSerial(p.RESPAddr, ca, withCert(&bad)); err == nil {
				t.Error("with a certificate of another CA: accepted")
			}

			rc := func(extra ...string) (string, int) {
				out, errOut, code := runTool(t, "", nil, cli, append([]string{"-h", "127.0.0.1", "-p", port(p.RESPAddr),
					"--tls", "--cacert", ca.File}, append(extra, "PING")...)...)
				return strings.TrimSpace(out + errOut), code
			}
			if out, code := rc("--cert", good.CertFile, "--key", good.KeyFile); code != 0 || out != "PONG" {
				t.Errorf("redis-cli with a certificate: exit %d, %q", code, out)
			}
			if out, code := rc(); mode == "require" && out == "PONG" {
				t.Errorf("redis-cli without a certificate: exit %d, %q", code, out)
			}
			url := "https://" + p.HTTPAddr + "/healthz"
			if out, errOut, code := runTool(t, "", nil, curl, "-sS", "--fail", "--cacert", ca.File,
				"--cert", good.CertFile, "--key", good.KeyFile, url); code != 0 {
				t.Errorf("curl with a certificate: exit %d: %s%s", code, out, errOut)
			}
			if _, _, code := runTool(t, "", nil, curl, "-sS", "--fail", "--max-time", "30", "--cacert", ca.File, url); mode == "require" && code == 0 {
				t.Error("curl without a certificate: exit 0")
			}
			conf, err := client.TLSFiles{CAFile: ca.File, CertFile: good.CertFile, KeyFile: good.KeyFile}.Config()
			if err != nil {
				t.Fatal(err)
			}
			c, err := client.Dial(t.Context(), p.RESPAddr, client.Options{TLS: conf})
			if err != nil {
				t.Fatalf("Go client with a certificate: %v", err)
			}
			c.Close()
		})
	}
}

// TestTLSBadConfiguration: bad TLS files or flags stop kvd at startup
// with an error that names the file or the flag.
func TestTLSBadConfiguration(t *testing.T) {
	ca := kvtest.NewCA(t, "test")
	srv := ca.Issue(t, "server", kvtest.CertOptions{})
	expired := ca.Issue(t, "expired", kvtest.CertOptions{NotAfter: time.Now().Add(-time.Hour)})
	clientOnly := ca.Issue(t, "client", kvtest.CertOptions{Client: true})
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"expired", []string{"--tls-cert", expired.CertFile, "--tls-key", expired.KeyFile}, 1,
			[]string{expired.CertFile, "expired"}},
		{"key of another certificate", []string{"--tls-cert", srv.CertFile, "--tls-key", expired.KeyFile}, 1,
			[]string{srv.CertFile, expired.KeyFile, "does not match"}},
		{"missing certificate", []string{"--tls-cert", ca.File + ".missing", "--tls-key", srv.KeyFile}, 1,
			[]string{ca.File + ".missing"}},
		{"CA is not a certificate", []string{"--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile, "--tls-ca", srv.KeyFile}, 1,
			[]string{"CA file " + srv.KeyFile, "no PEM certificate"}},
		{"client certificate", []string{"--tls-cert", clientOnly.CertFile, "--tls-key", clientOnly.KeyFile}, 1,
			[]string{clientOnly.CertFile, "is not for servers (serverAuth)"}},
		{"no key", []string{"--tls-cert", srv.CertFile}, 2, []string{"--tls-cert and --tls-key go together"}},
		{"event loop", []string{"--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile, "--resp-io", "loop"}, 2,
			[]string{"--resp-io loop cannot serve TLS"}},
		{"client auth without CA", []string{"--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile, "--tls-client-auth", "require"}, 2,
			[]string{"--tls-client-auth needs --tls-ca"}},
		{"cluster TLS without cluster", []string{"--cluster-tls-cert", srv.CertFile, "--cluster-tls-key", srv.KeyFile, "--cluster-tls-ca", ca.File}, 2,
			[]string{"need --raft-listen"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := kvtest.Start(t, kvtest.Options{Bin: kvdBin, Args: tc.args})
			var ee *kvtest.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("kvd started: %v", err)
			}
			if ee.Code != tc.code {
				t.Errorf("exit status %d, want %d\n%s", ee.Code, tc.code, ee.Log)
			}
			for _, w := range tc.want {
				if !strings.Contains(ee.Log, w) {
					t.Errorf("output does not say %q:\n%s", w, ee.Log)
				}
			}
			if strings.Contains(ee.Log, "PRIVATE KEY") {
				t.Errorf("output holds key material:\n%s", ee.Log)
			}
		})
	}
}

// TestTLSWithUsers: users and TLS together: redis-cli and kvctl
// authenticate over TLS, curl with basic credentials over HTTPS, and one
// SIGHUP reloads both the users file and the certificate.
func TestTLSWithUsers(t *testing.T) {
	cli := needTool(t, "redis-cli")
	curl := kvtest.NeedTool(t, "curl", "apt-get install curl")
	ca := kvtest.NewCA(t, "test")
	srv := ca.Issue(t, "server", kvtest.CertOptions{})
	users := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(users, []byte("root all password="+hashPassword(t, "pw-root")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startKVD(t, "", "--auth-file", users, "--tls-cert", srv.CertFile, "--tls-key", srv.KeyFile)

	out, errOut, code := runTool(t, "", nil, cli, "-h", "127.0.0.1", "-p", port(p.RESPAddr), "--tls", "--cacert", ca.File,
		"--user", "root", "--pass", "pw-root", "--no-auth-warning", "SET", "k", "v")
	if code != 0 || strings.TrimSpace(out) != "OK" {
		t.Fatalf("redis-cli --tls --user root SET: exit %d: %q %s", code, out, errOut)
	}
	if out, errOut, code := runTool(t, "", []string{"KVD_PASSWORD=pw-root"}, kvctlBin, "--addr", p.RESPAddr,
		"--tls-ca", ca.File, "--user", "root", "get", "k"); code != 0 || out != "v\n" {
		t.Fatalf("kvctl over TLS as root: exit %d: %q %s", code, out, errOut)
	}
	if out, errOut, code := runTool(t, "", nil, curl, "-sS", "--fail", "--cacert", ca.File, "-u", "root:pw-root",
		"https://"+p.HTTPAddr+"/v1/kv/k"); code != 0 || out != "v" {
		t.Fatalf("curl over HTTPS as root: exit %d: %q %s", code, out, errOut)
	}

	second := ca.IssueTo(t, "server", srv.CertFile, srv.KeyFile, kvtest.CertOptions{})
	if err := os.WriteFile(users, []byte("root all password="+hashPassword(t, "pw-root-2")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	kvtest.Eventually(t, 30*time.Second, "both reloads", func() bool {
		l := p.Log()
		return strings.Contains(l, "users reloaded") && strings.Contains(l, "tls: certificate reloaded")
	})
	s, err := tlsSerial(p.RESPAddr, ca, nil)
	if err != nil || s.Cmp(second.SerialNumber) != 0 {
		t.Fatalf("after SIGHUP: serial %v, %v; want %v", s, err, second.SerialNumber)
	}
	out, errOut, code = runTool(t, "", nil, cli, "-h", "127.0.0.1", "-p", port(p.RESPAddr), "--tls", "--cacert", ca.File,
		"--user", "root", "--pass", "pw-root-2", "--no-auth-warning", "GET", "k")
	if code != 0 || strings.TrimSpace(out) != "v" {
		t.Fatalf("redis-cli with the new password: exit %d: %q %s", code, out, errOut)
	}
	if strings.Contains(p.Log(), "pw-root") || strings.Contains(p.Log(), "PRIVATE KEY") {
		t.Errorf("the log holds a secret:\n%s", p.Log())
	}
}
