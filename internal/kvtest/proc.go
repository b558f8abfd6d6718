package kvtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DefaultStartTimeout is how long Start waits for kvd to listen when
// Options.StartTimeout is 0. It is generous: a timeout is a failure, not a
// way to synchronize.
const DefaultStartTimeout = 30 * time.Second

// ErrNotStopped is wrapped by the error of Stop when kvd did not exit in
// time (it is then killed).
var ErrNotStopped = errors.New("kvtest: kvd did not stop")

// Options say how to run kvd.
type Options struct {
	// Bin is the path of the kvd binary (see Build).
	Bin string
	// DataDir is kvd's --data-dir; "" means a new t.TempDir().
	DataDir string
	// Args are more flags for kvd. They follow --data-dir, --listen
	// 127.0.0.1:0 and --http-listen 127.0.0.1:0, so they may override the
	// last two.
	Args []string
	// Env is kvd's environment, as exec.Cmd.Env: nil means the test's.
	// KVD_ variables in it set kvd's flags.
	Env []string
	// StartTimeout bounds how long Start waits for kvd to log that it
	// listens; 0 means DefaultStartTimeout.
	StartTimeout time.Duration
}

// Proc is a kvd process. Its methods may be called from any goroutine;
// the address fields are set by WaitListening (Start calls it) and are
// read-only after.
type Proc struct {
	// RESPAddr and HTTPAddr are the addresses kvd logged it listens on
	// (HTTPAddr as kvd logged it, whatever --http-listen was).
	RESPAddr, HTTPAddr string
	// DataDir is kvd's data directory.
	DataDir string

	cmd  *exec.Cmd
	log  *procLog
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // what Wait returned, set before done is closed
}

// ExitError is the error of Start and WaitListening when kvd exited before
// it logged that it listens, as when it refuses to start.
type ExitError struct {
	Code int    // exit status; -1 if a signal ended kvd
	Err  error  // what exec.Cmd.Wait returned
	Log  string // everything kvd wrote to stdout and stderr
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("kvd exited before listening: %v", e.Err)
}

func (e *ExitError) Unwrap() error { return e.Err }

// Start starts kvd as Spawn does and waits until it logs that it listens
// (see WaitListening). If kvd exits first, Start returns an *ExitError
// and no Proc. If it neither listens nor exits within the start timeout,
// Start kills it and fails the test.
func Start(t testing.TB, o Options) (*Proc, error) {
	t.Helper()
	p := Spawn(t, o)
	timeout := o.StartTimeout
	if timeout == 0 {
		timeout = DefaultStartTimeout
	}
	err := p.WaitListening(timeout)
	var ee *ExitError
	switch {
	case err == nil:
		return p, nil
	case errors.As(err, &ee):
		return nil, err
	}
	p.Kill()
	t.Fatalf("%v; its output:\n%s", err, tail(p.Log(), 8000))
	return nil, err
}

// Spawn starts kvd and returns at once, before it listens: for a test that
// crashes kvd while it starts. It fails the test if the binary cannot be
// run. kvd's stdout and stderr go to its log (see Log). kvd is killed, if
// still running, when the test ends.
func Spawn(t testing.TB, o Options) *Proc {
	t.Helper()
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	args := append([]string{"--data-dir", o.DataDir, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}, o.Args...)
	p := &Proc{
		DataDir: o.DataDir,
		cmd:     exec.Command(o.Bin, args...),
		log:     &procLog{listening: make(chan struct{})},
		done:    make(chan struct{}),
	}
	p.cmd.Env = o.Env
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start kvd: %v", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.Kill)
	return p
}

// WaitListening waits until kvd logs its "kvd listening" line, in the text
// or the JSON log format, and sets RESPAddr and HTTPAddr from it. It
// returns an *ExitError if kvd exits first, and another error if neither
// happens within timeout (kvd is left running).
func (p *Proc) WaitListening(timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.log.listening:
		p.log.mu.Lock()
		p.RESPAddr, p.HTTPAddr = p.log.resp, p.log.http
		p.log.mu.Unlock()
		return nil
	case <-p.done:
		return &ExitError{Code: p.ExitCode(), Err: p.err, Log: p.Log()}
	case <-timer.C:
		return fmt.Errorf("kvd did not log that it listens within %v", timeout)
	}
}

// Log returns everything kvd has written to stdout and stderr so far.
func (p *Proc) Log() string { return p.log.String() }

// Pid returns kvd's process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to kvd.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Done returns a channel that is closed once kvd has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether kvd has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err returns how kvd exited, once it has (see Done): nil for exit status
// 0, else what exec.Cmd.Wait returned. While kvd runs it returns nil.
func (p *Proc) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// ExitCode returns kvd's exit status, or -1 if it still runs or a signal
// ended it.
func (p *Proc) ExitCode() int {
	if !p.Exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// Kill sends SIGKILL and waits until kvd is gone. It is idempotent.
func (p *Proc) Kill() {
	if p.Exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Wait waits up to timeout for kvd to exit and returns Err, or an error
// wrapping ErrNotStopped if it still runs (it is left running).
func (p *Proc) Wait(timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-p.done:
		return p.err
	case <-timer.C:
		return fmt.Errorf("%w within %v", ErrNotStopped, timeout)
	}
}

// Stop sends sig (SIGTERM, SIGINT: a clean stop) and waits up to timeout
// for kvd to exit. It returns nil if kvd exited with status 0, what
// exec.Cmd.Wait returned for another exit, and, if kvd did not exit in
// time, an error wrapping ErrNotStopped, after killing it. If kvd has
// exited already, Stop sends nothing and returns how it exited.
func (p *Proc) Stop(sig os.Signal, timeout time.Duration) error {
	if p.Exited() {
		return p.err
	}
	p.Signal(sig)
	if err := p.Wait(timeout); !errors.Is(err, ErrNotStopped) {
		return err
	}
	p.Kill()
	return fmt.Errorf("%w within %v of %v", ErrNotStopped, timeout, sig)
}

// procLog keeps everything kvd writes and watches for its "kvd listening"
// line.
type procLog struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	partial   []byte        // the last line, while it is incomplete
	listening chan struct{} // closed when the listening line is seen
	seen      bool
	resp      string
	http      string
}

func (l *procLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(b)
	if l.seen {
		return len(b), nil
	}
	l.partial = append(l.partial, b...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		if resp, http, ok := parseListening(l.partial[:i]); ok {
			l.resp, l.http, l.seen = resp, http, true
			l.partial = nil
			close(l.listening)
			break
		}
		l.partial = l.partial[i+1:]
	}
	return len(b), nil
}

func (l *procLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// listeningText matches kvd's startup line in the text log format.
var listeningText = regexp.MustCompile(`msg="kvd listening" resp=(\S+) http=(\S+)`)

// parseListening reports whether line is kvd's startup line ("kvd
// listening", see "kvd --help"), in the text or the JSON log format, and
// returns the addresses it names.
func parseListening(line []byte) (resp, http string, ok bool) {
	if bytes.HasPrefix(line, []byte("{")) {
		var rec struct {
			Msg  string `json:"msg"`
			Resp string `json:"resp"`
			HTTP string `json:"http"`
		}
		if json.Unmarshal(line, &rec) != nil || rec.Msg != "kvd listening" || rec.Resp == "" {
			return "", "", false
		}
		return rec.Resp, rec.HTTP, true
	}
	m := listeningText.FindSubmatch(line)
	if m == nil {
		return "", "", false
	}
	return string(m[1]), string(m[2]), true
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
