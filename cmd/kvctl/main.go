// Command kvctl is the command-line client of kvd.
//
//	kvctl [--addr host:port] [--durability sync|async] [-o text|json] COMMAND [ARGS]
//
// Run "kvctl --help" for the commands and "kvctl COMMAND --help" for each.
// kvctl is built on the kvd/client package; its offline commands (backup
// status, restore) read backup files with the engine package.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/kvdstore/kvd/client"
	"github.com/kvdstore/kvd/internal/buildinfo"
)

// version, if set at build time with -ldflags "-X main.version=...",
// replaces the module version that buildinfo.Version reports.
var version string

func main() {
	// go-redis prints its own line for a failed dial, and others, to
	// stderr; kvctl reports every error itself.
	client.SetRedisLogger(nil)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// commands is kvctl's subcommand table, in the order --help lists them.
func commands() []*command {
	return []*command{
		putCommand(),
		getCommand(),
		delCommand(),
		scanCommand(),
		syncCommand(),
		statusCommand(),
		memberCommand(),
		leaderCommand(),
		clusterCommand(),
		watchCommand(),
		benchCommand(),
		backupCommand(),
		restoreCommand(),
		jobCommand(),
		importCommand(),
		compactCommand(),
		defragCommand(),
	}
}

// command is one subcommand.
type command struct {
	name    string
	args    string // synopsis of the arguments, e.g. "KEY VALUE"
	summary string
	help    string // more text for "kvctl NAME --help"
	// flags adds the command's own flags.
	flags func(fs *pflag.FlagSet)
	// run runs the command with its positional arguments.
	run func(ctx context.Context, e *env, args []string) error
	// durabilityBoth: --durability may also be "both"; the command then
	// reads e.cfg.durability itself.
	durabilityBoth bool
	// ownTimeout: the command's own flags set how long it runs, and
	// --timeout bounds each of its network calls instead of the whole
	// command.
	ownTimeout bool
}

// config holds the global flags, which may come before or after the command.
type config struct {
	addr       string
	durability string
	output     string
	timeout    time.Duration
	// Credentials (credentials.go): --user or KVD_USER; --password-file or
	// KVD_PASSWORD; KVD_TOKEN for HTTP.
	user         string
	passwordFile string
	tls          tlsFlags // tls.go
}

func (c *config) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&c.addr, "addr", c.addr, "kvd RESP address host:port (env KVCTL_ADDR)")
	fs.StringVar(&c.durability, "durability", c.durability, "durability of writes: sync, async or default (the server's)")
	fs.StringVarP(&c.output, "output", "o", c.output, "output format: text or json")
	fs.DurationVar(&c.timeout, "timeout", c.timeout, "time limit of the whole command")
	fs.StringVar(&c.user, "user", c.user, "user to authenticate as (env KVD_USER; default: the user default)")
	fs.StringVar(&c.passwordFile, "password-file", c.passwordFile,
		"file whose first line is the password (else env KVD_PASSWORD; there is no --password: ps would show it)")
	c.tls.addFlags(fs)
}

// env is what a command runs with.
type env struct {
	cfg        config
	durability client.Durability
	stdin      io.Reader
	stdout     io.Writer
	stderr     io.Writer
}

// usageError is a bad command line: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// silentError has been reported already; it only sets the exit status 1.
type silentError struct{}

func (silentError) Error() string { return "failed" }

func exitCode(err error, stderr io.Writer) int {
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "kvctl: %s\nRun 'kvctl --help' for usage.\n", ue.msg)
		return 2
	case errors.Is(err, silentError{}):
		return 1
	default:
		fmt.Fprintf(stderr, "kvctl: %v\n", err)
		return 1
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cfg := config{addr: "127.0.0.1:6380", output: "text", timeout: 10 * time.Second}
	if a := os.Getenv("KVCTL_ADDR"); a != "" {
		cfg.addr = a
	}
	cfg.user = os.Getenv("KVD_USER")
	cfg.tls.fromEnv()
	fs := pflag.NewFlagSet("kvctl", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SetInterspersed(false)
	cfg.addFlags(fs)
	showVersion := fs.Bool("version", false, "print kvctl's version (module version, VCS revision and time) and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(stdout, mainUsage(fs))
			return nil
		}
		return usagef("%v", err)
	}
	if *showVersion {
		fmt.Fprintln(stdout, "kvctl", buildinfo.Version(version))
		return nil
	}
	if fs.NArg() == 0 {
		return usagef("no command given")
	}
	name := fs.Arg(0)
	var cmd *command
	for _, c := range commands() {
		if c.name == name {
			cmd = c
		}
	}
	if cmd == nil {
		return usagef("unknown command %q", name)
	}
	cfs := pflag.NewFlagSet("kvctl "+name, pflag.ContinueOnError)
	cfs.SetOutput(io.Discard)
	cfg.addFlags(cfs)
	if cmd.flags != nil {
		cmd.flags(cfs)
	}
	if err := cfs.Parse(fs.Args()[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprint(stdout, commandUsage(cmd, cfs))
			return nil
		}
		return usagef("%s: %v", name, err)
	}
	e := &env{cfg: cfg, stdin: stdin, stdout: stdout, stderr: stderr}
	d, err := client.ParseDurability(cfg.durability)
	switch {
	case err == nil:
		e.durability = d
	case cmd.durabilityBoth && strings.EqualFold(cfg.durability, "both"):
	case cmd.durabilityBoth:
		return usagef("--durability must be sync, async, both or default, not %q", cfg.durability)
	default:
		return usagef("--durability must be sync, async or default, not %q", cfg.durability)
	}
	if cfg.output != "text" && cfg.output != "json" {
		return usagef("--output must be text or json, not %q", cfg.output)
	}
	if cfg.timeout <= 0 {
		return usagef("--timeout must be positive")
	}
	if !cmd.ownTimeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.timeout)
		defer cancel()
	}
	return cmd.run(ctx, e, cfs.Args())
}

func mainUsage(fs *pflag.FlagSet) string {
	var b strings.Builder
	b.WriteString(`kvctl: the command-line client of kvd.

Usage:
  kvctl [flags] COMMAND [ARGS]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(&b, "  %-8s %s\n", c.name, c.summary)
	}
	b.WriteString("\nFlags (also accepted after the command):\n")
	b.WriteString(fs.FlagUsagesWrapped(100))
	b.WriteString(`
Run 'kvctl COMMAND --help' for a command's arguments and flags.
Exit status: 0 on success, 1 on an error (including a missing key), 2 on a bad command line.
`)
	return b.String()
}

func commandUsage(c *command, fs *pflag.FlagSet) string {
	var b strings.Builder
	fmt.Fprintf(&b, "kvctl %s: %s\n\nUsage:\n  kvctl [flags] %s", c.name, c.summary, c.name)
	if c.args != "" {
		b.WriteString(" " + c.args)
	}
	b.WriteString("\n")
	if c.help != "" {
		b.WriteString("\n" + c.help + "\n")
	}
	b.WriteString("\nFlags:\n" + fs.FlagUsagesWrapped(100))
	return b.String()
}

// dial connects to the server.
func (e *env) dial(ctx context.Context) (*client.Client, error) {
	o, err := e.clientOptions(client.Options{Durability: e.durability, PoolSize: 2})
	if err != nil {
		return nil, err
	}
	return client.Dial(ctx, e.cfg.addr, o)
}

func (e *env) json() bool { return e.cfg.output == "json" }

// writeJSON prints v as one line of JSON.
func (e *env) writeJSON(v any) error {
	return json.NewEncoder(e.stdout).Encode(v)
}

// wantArgs checks the number of positional arguments.
func wantArgs(c *command, args []string, n int) error {
	if len(args) != n {
		return usagef("%s takes %s (got %d argument(s))", c.name, c.args, len(args))
	}
	return nil
}
