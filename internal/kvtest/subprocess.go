package kvtest

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// subprocessEnv names the test that a process of the test binary was started
// to run alone (see InSubprocess).
const subprocessEnv = "KVD_TEST_SUBPROCESS"

// InSubprocess runs the calling top-level test alone in a new process of the
// test binary, and reports true in the calling process, which then returns at
// once: the test passes or fails there as it did in the new process, whose
// output it logs. In the new process it reports false, and the test runs.
//
// Tests that change what belongs to the whole process, such as its file
// size limit (FileLimit), run this way: `go test` has the test binary write
// a log of the files and environment a test used (for its cache), and a file
// size limit would make those writes fail, and with them the package.
func InSubprocess(t *testing.T) bool {
	t.Helper()
	if strings.Contains(t.Name(), "/") {
		t.Fatalf("kvtest.InSubprocess is for top-level tests, not %s", t.Name())
	}
	if os.Getenv(subprocessEnv) == t.Name() {
		return false
	}
	args := []string{"-test.run=^" + regexp.QuoteMeta(t.Name()) + "$", "-test.count=1", "-test.v"}
	if d, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout="+timeUntil(d))
	}
	cmd := exec.CommandContext(t.Context(), os.Args[0], args...)
	cmd.Env = append(os.Environ(), subprocessEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	t.Logf("%s in its own process:\n%s", t.Name(), out)
	if err != nil {
		t.Fatalf("%s failed in its own process: %v", t.Name(), err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("%s did not run in its own process", t.Name())
	}
	return true
}

// inSubprocess reports whether this process runs one test alone.
func inSubprocess() bool { return os.Getenv(subprocessEnv) != "" }

func timeUntil(d time.Time) string { return time.Until(d).Round(time.Second).String() }
