package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/kvdstore/kvd/internal/kvtest"
)

// readmeBlock is one fenced code block of README.md.
type readmeBlock struct {
	line int    // line of the opening fence
	lang string // after the fence: "go", "sh", ""
	body string
	skip string // the reason of a <!-- readme-test: skip: REASON --> line before it
}

// skipMark marks a block that TestREADME cannot check: the line right
// before its fence (blank lines between are allowed) is this comment,
// which Markdown does not render.
var skipMark = regexp.MustCompile(`^<!-- readme-test: skip: (.+) -->$`)

func readmeBlocks(t *testing.T, path string) []readmeBlock {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		blocks   []readmeBlock
		cur      *readmeBlock
		body     strings.Builder
		lastMark string
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &readmeBlock{line: n, lang: strings.TrimPrefix(line, "```"), skip: lastMark}
			body.Reset()
		case cur != nil && line == "```":
			cur.body = body.String()
			blocks = append(blocks, *cur)
			cur, lastMark = nil, ""
		case cur != nil:
			body.WriteString(line + "\n")
		case strings.TrimSpace(line) == "":
		default:
			lastMark = ""
			if m := skipMark.FindStringSubmatch(line); m != nil {
				lastMark = m[1]
			}
		}
	}
	if cur != nil {
		t.Fatalf("README.md:%d: unclosed code block", cur.line)
	}
	return blocks
}

// TestREADME checks the examples of README.md: every Go block builds as a
// program in a module of its own that requires kvd (as tests/embed builds
// its program), and every transcript (lines "$ command" followed by its
// output) runs, in order, with the output shown, compared with times,
// durations, fsync counts and Date headers masked. An output line may end
// in an annotation after two spaces, "(exit status N)" or "(on standard
// error ...)": it is not output, but an exit status it names is checked
// (0 otherwise). Each transcript runs against a kvd of its own, so that its
// revisions are the ones shown. Any other block must be marked
// "<!-- readme-test: skip: REASON -->" on the line before it.
func TestREADME(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	var goBlocks, transcripts []readmeBlock
	for _, b := range readmeBlocks(t, filepath.Join(root, "README.md")) {
		switch {
		case b.skip != "":
			t.Logf("README.md:%d: not checked: %s", b.line, b.skip)
		case b.lang == "go":
			goBlocks = append(goBlocks, b)
		case strings.HasPrefix(b.body, "$ "):
			transcripts = append(transcripts, b)
		default:
			t.Errorf("README.md:%d: a block that is neither Go nor a transcript starting with \"$ \": "+
				"make it one, or mark it <!-- readme-test: skip: REASON -->", b.line)
		}
	}
	if len(goBlocks) == 0 || len(transcripts) == 0 {
		t.Fatalf("%d Go blocks and %d transcripts found: the parser is broken", len(goBlocks), len(transcripts))
	}

	t.Run("go", func(t *testing.T) {
		goBin := kvtest.NeedTool(t, "go", "install Go")
		sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range goBlocks {
			dir := t.TempDir()
			gomod := fmt.Sprintf("module example.com/readme\n\ngo 1.26\n\nrequire github.com/kvdstore/kvd v0.0.0\n\nreplace github.com/kvdstore/kvd => %s\n",
				strconv.Quote(filepath.ToSlash(root)))
			for name, data := range map[string]string{"go.mod": gomod, "go.sum": string(sum), "main.go": b.body} {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			for _, args := range [][]string{{"mod", "tidy"}, {"vet", "."}} {
				cmd := exec.CommandContext(t.Context(), goBin, args...)
				cmd.Dir, cmd.Env = dir, append(os.Environ(), "GOFLAGS=", "GOWORK=off")
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("README.md:%d: go %s: %v\n%s", b.line, strings.Join(args, " "), err, out)
					break
				}
			}
		}
	})

	t.Run("transcripts", func(t *testing.T) {
		needTool(t, "redis-cli")
		kvtest.NeedTool(t, "curl", "apt-get install curl")
		for _, b := range transcripts {
			p := startKVD(t, "")
			env := append(os.Environ(), "PATH="+filepath.Dir(kvctlBin)+string(os.PathListSeparator)+os.Getenv("PATH"),
				"KVCTL_ADDR="+p.RESPAddr)
			addrs := strings.NewReplacer("-p 6380", "-p "+port(p.RESPAddr), "127.0.0.1:8380", p.HTTPAddr, "127.0.0.1:6380", p.RESPAddr)
			for _, c := range parseTranscript(b) {
				cmd := exec.CommandContext(t.Context(), "sh", "-c", addrs.Replace(c.cmd))
				cmd.Env = env
				out, err := cmd.CombinedOutput()
				code := 0
				if err != nil {
					if cmd.ProcessState == nil {
						t.Fatalf("README.md:%d: %s: %v", c.line, c.cmd, err)
					}
					code = cmd.ProcessState.ExitCode()
				}
				got := maskOutput(strings.ReplaceAll(string(out), p.RESPAddr, "127.0.0.1:6380"))
				if got != maskOutput(c.want) || code != c.code {
					t.Errorf("README.md:%d: $ %s\nexit %d (want %d), output:\n%s\nREADME shows:\n%s", c.line, c.cmd, code, c.code, out, c.want)
				}
			}
		}
	})
}

type transcriptStep struct {
	line int
	cmd  string
	want string
	code int
}

var annotation = regexp.MustCompile(`\s{2,}\(([^()]*)\)$`)
var exitStatus = regexp.MustCompile(`exit status (\d+)`)

func parseTranscript(b readmeBlock) []transcriptStep {
	var steps []transcriptStep
	for i, line := range strings.Split(strings.TrimSuffix(b.body, "\n"), "\n") {
		if cmd, ok := strings.CutPrefix(line, "$ "); ok {
			steps = append(steps, transcriptStep{line: b.line + 1 + i, cmd: cmd})
			continue
		}
		s := &steps[len(steps)-1]
		if m := annotation.FindStringSubmatch(line); m != nil {
			line = line[:len(line)-len(m[0])]
			if e := exitStatus.FindStringSubmatch(m[1]); e != nil {
				s.code, _ = strconv.Atoi(e[1])
			}
		}
		s.want += line + "\n"
	}
	return steps
}

var (
	// volatile matches a field whose value is a time, a duration, a
	// count of fsyncs or the process's heap or resident memory, which
	// differ from run to run, in INFO ("name:v"), JSON ("name":v) and
	// kvctl status ("name:   v"); group 1 is the field's name and
	// separator.
	volatile = regexp.MustCompile(`("?[a-z_ ]*(?:seconds|_ms|fsyncs?|uptime|records|count|heap_|rss_)[a-z_ ]*"?[:=] *)-?[0-9][0-9.e+-]*[a-zµ]*`)
	dateLine = regexp.MustCompile(`(?m)^Date: .*$`)
	// version matches the version a build reports: "devel", or with its
	// VCS revision in a clone.
	version = regexp.MustCompile(`("?version"?[:=] *"?)[^",\n]+`)
)

// maskOutput masks what differs from run to run: times, durations and
// fsync counts (see volatile), Date headers, the build's version, CRs and
// trailing blanks.
// Revisions, sizes and keys are compared: each transcript runs against a
// fresh kvd.
func maskOutput(s string) string {
	s = strings.ReplaceAll(s, "\r", "")
	s = dateLine.ReplaceAllString(s, "Date: *")
	s = volatile.ReplaceAllString(s, "${1}N")
	s = version.ReplaceAllString(s, "${1}V")
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(strings.TrimRight(l, " \t") + "\n")
	}
	return b.String()
}
