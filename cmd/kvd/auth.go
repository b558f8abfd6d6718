package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/kvdstore/kvd/auth"
)

// authConfig is who may connect: a users file, or one password for the
// default user (--requirepass, as Redis's), or nobody asked at all.
type authConfig struct {
	authFile        string
	requirePass     string
	requirePassFile string
	insecureNoAuth  bool
	metricsAuth     bool
}

func (c *authConfig) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.authFile, "auth-file", "",
		"users file: names, permissions, password and token hashes, key prefixes (README, \"Security\"); reloaded on SIGHUP and by ACL LOAD")
	fs.StringVar(&c.requirePass, "requirepass", "",
		"one password for the user \"default\", who may do everything (visible in ps on the command line: prefer KVD_REQUIREPASS or --requirepass-file)")
	fs.StringVar(&c.requirePassFile, "requirepass-file", "", "file holding --requirepass's password (its first line)")
	fs.BoolVar(&c.insecureNoAuth, "insecure-no-auth", false,
		"serve non-loopback addresses with no users configured: anyone who reaches kvd may do anything")
	fs.BoolVar(&c.metricsAuth, "metrics-auth", false, "with users configured, /metrics needs credentials too (default: open, as /healthz)")
}

func (c *authConfig) validate() []error {
	n := 0
	for _, s := range []string{c.authFile, c.requirePass, c.requirePassFile} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		return []error{errors.New("--auth-file, --requirepass and --requirepass-file exclude each other")}
	}
	return nil
}

// enabled reports whether users are configured.
func (c *authConfig) enabled() bool {
	return c.authFile != "" || c.requirePass != "" || c.requirePassFile != ""
}

// users loads the users, and returns how to load them again (nil when
// there is no file to reload).
func (c *authConfig) users() (*auth.Users, func() (*auth.Users, error), error) {
	switch {
	case c.authFile != "":
		load := func() (*auth.Users, error) { return auth.Load(c.authFile) }
		users, err := load()
		if err != nil {
			return nil, nil, fmt.Errorf("--auth-file: %w", err)
		}
		return users, load, nil
	case c.requirePassFile != "":
		data, err := os.ReadFile(c.requirePassFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--requirepass-file: %w", err)
		}
		line, _, _ := strings.Cut(string(data), "\n")
		pass := strings.TrimSuffix(line, "\r")
		if pass == "" {
			return nil, nil, fmt.Errorf("--requirepass-file %s: the first line is empty", c.requirePassFile)
		}
		users, err := auth.Single(pass, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("--requirepass-file: %w", err)
		}
		return users, nil, nil
	case c.requirePass != "":
		users, err := auth.Single(c.requirePass, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("--requirepass: %w", err)
		}
		return users, nil, nil
	}
	return nil, nil, nil
}

// protectedMode refuses, as Redis's protected mode does, to serve a
// non-loopback address with no users configured, unless told
// --insecure-no-auth. A separate --pprof listener has no authentication at
// all: it is held to loopback even with users.
func protectedMode(cfg *config, log *slog.Logger) error {
	if cfg.auth.insecureNoAuth {
		log.Warn("--insecure-no-auth: kvd asks no client who it is; anyone who reaches its ports may read, write and administer it")
		return nil
	}
	type addr struct{ flag, addr string }
	var addrs []addr
	if !cfg.auth.enabled() {
		addrs = append(addrs, addr{"--listen", cfg.listen}, addr{"--http-listen", cfg.httpListen},
			addr{"--raft-listen", cfg.cluster.raftListen})
	}
	if cfg.pprof != pprofOnHTTP {
		addrs = append(addrs, addr{"--pprof", cfg.pprof})
	}
	for _, a := range addrs {
		if a.addr == "" || loopback(a.addr) {
			continue
		}
		if a.flag == "--pprof" {
			return fmt.Errorf("protected mode: refusing to serve pprof on %s, not a loopback address: "+
				"it has no authentication; use a loopback address, --pprof alone (on the HTTP listener, admins only), "+
				"or --insecure-no-auth", a.addr)
		}
		return fmt.Errorf("protected mode: refusing to listen on %s (%s), not a loopback address, with no users configured: "+
			"anyone reaching it could read, write and administer kvd. Give --auth-file or --requirepass-file "+
			"(or KVD_REQUIREPASS), listen on a loopback address (127.0.0.1, ::1), "+
			"or pass --insecure-no-auth to serve without authentication", a.addr, a.flag)
	}
	return nil
}

// loopback reports whether a listen address is on a loopback interface
// only. An empty host (every interface) or a name other than localhost is
// not.
func loopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.TrimSuffix(strings.SplitN(host, "%", 2)[0], "."))
	return ip != nil && ip.IsLoopback()
}

// runPasswd is "kvd passwd": it reads a password (from the terminal
// without echo, else the first line of stdin) and prints its hash for a
// users file. The password is never an argument: ps would show it.
func runPasswd(args []string, stdin *os.File, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("kvd passwd", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	iterations := fs.Int("iterations", auth.DefaultIterations, "PBKDF2 iterations")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(stdout, `Usage: kvd passwd [--iterations N]

Reads a password from the terminal (twice, not echoed) or the first line of
standard input, and prints its hash for a users file's password= field:

  alice  read,write  password=HASH

Flags:
`+fs.FlagUsages())
			return nil
		}
		return &usageError{err}
	}
	if fs.NArg() > 0 {
		return &usageError{errors.New("kvd passwd takes no password argument (ps would show it): type it, or pipe it on stdin")}
	}
	var pass string
	if isTerminal(stdin) {
		p1, err := readPassword(stdin, stderr, "Password: ")
		if err != nil {
			return err
		}
		p2, err := readPassword(stdin, stderr, "Again: ")
		if err != nil {
			return err
		}
		if p1 != p2 {
			return errors.New("the passwords differ")
		}
		pass = p1
	} else {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !(errors.Is(err, io.EOF) && line != "") {
			return fmt.Errorf("read the password from stdin: %w", err)
		}
		pass = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	}
	h, err := auth.HashPassword(pass, *iterations)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, h)
	return nil
}

// runToken is "kvd token": it prints a new bearer token, then the form a
// users file stores it in.
func runToken(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		if args[0] == "--help" || args[0] == "-h" {
			fmt.Fprint(stdout, `Usage: kvd token

Prints a new random bearer token on the first line (give it to the client:
kvd keeps only its hash) and, on the second, the field to put on its user's
line of the users file: token=sha256$HEX.
`)
			return nil
		}
		return &usageError{errors.New("kvd token takes no arguments")}
	}
	token, stored := auth.NewToken()
	fmt.Fprintln(stdout, token)
	fmt.Fprintln(stdout, "token="+stored)
	fmt.Fprintln(stderr, "kvd token: the first line is the token (shown once); the second goes on its user's line of the users file")
	return nil
}
