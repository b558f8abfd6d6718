// Package embed_test checks that kvd's engine can be embedded by another Go
// program the way a user does it: from a module of its own that requires
// github.com/kvdstore/kvd.
//
// TestEmbed builds such a module in a temporary directory (its go.mod
// replaces github.com/kvdstore/kvd with this checkout, as a user pins a local
// copy), runs it, and checks what its program read back after reopening the
// store. It needs the go command; without it the build skips, except under
// CI=true, where it fails.
package embed_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kvdstore/kvd/internal/kvtest"
)

const kvdModule = "github.com/kvdstore/kvd"

// step is one write of the embedding program: a Put when it holds a single
// put, a Batch otherwise. Durability is "sync" or "async". The program
// declares the same types.
type step struct {
	Durability string
	Ops        []op
}

type op struct {
	Key, Value []byte
	Delete     bool
}

// result is what the program prints, after "result: ", once it has reopened
// the store.
type result struct {
	Revision uint64 // revision of the last write
	Reopened uint64 // committed revision after reopening
	Pairs    []pair // every pair in the reopened store, by key
}

type pair struct{ Key, Value []byte }

// embedderMain is the embedding program. It reads the steps from the file
// named by its second argument, writes them into a store in the directory
// named by its first, calls Sync, closes, reopens and prints every pair.
const embedderMain = `package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/kvdstore/kvd/engine"
)

type step struct {
	Durability string
	Ops        []op
}

type op struct {
	Key, Value []byte
	Delete     bool
}

type pair struct{ Key, Value []byte }

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: embedder DIR STEPS")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "embedder:", err)
		os.Exit(1)
	}
}

func run(dir, stepsFile string) error {
	b, err := os.ReadFile(stepsFile)
	if err != nil {
		return err
	}
	var steps []step
	if err := json.Unmarshal(b, &steps); err != nil {
		return err
	}
	db, err := engine.Open(dir, engine.Options{})
	if err != nil {
		return err
	}
	var last uint64
	for i, s := range steps {
		var wo engine.WriteOptions
		switch s.Durability {
		case "sync":
			wo.Durability = engine.DurabilitySync
		case "async":
			wo.Durability = engine.DurabilityAsync
		default:
			return fmt.Errorf("step %d: durability %q", i, s.Durability)
		}
		var rev uint64
		if len(s.Ops) == 1 && !s.Ops[0].Delete {
			rev, err = db.Put(s.Ops[0].Key, s.Ops[0].Value, wo)
		} else {
			var batch engine.Batch
			for _, o := range s.Ops {
				if o.Delete {
					batch.Delete(o.Key)
				} else {
					batch.Put(o.Key, o.Value)
				}
			}
			rev, err = db.Write(&batch, wo)
		}
		if err != nil {
			return fmt.Errorf("step %d: %w", i, err)
		}
		if rev != last+1 {
			return fmt.Errorf("step %d: revision %d after %d", i, rev, last)
		}
		last = rev
		if st := db.Stats(); s.Durability == "sync" && st.DurableRevision < rev {
			return fmt.Errorf("step %d: sync write %d returned with durable revision %d", i, rev, st.DurableRevision)
		}
	}
	if err := db.Sync(); err != nil {
		return err
	}
	if st := db.Stats(); st.DurableRevision != last || st.WrittenRevision != last {
		return fmt.Errorf("after Sync: committed %d, durable %d, want %d", st.WrittenRevision, st.DurableRevision, last)
	}
	if err := db.Close(); err != nil {
		return err
	}

	db, err = engine.Open(dir, engine.Options{})
	if err != nil {
		return fmt.Errorf("reopen: %w", err)
	}
	defer db.Close()
	kvs, err := db.Scan(engine.ScanOptions{})
	if err != nil {
		return err
	}
	pairs := make([]pair, len(kvs))
	for i, kv := range kvs {
		pairs[i] = pair{kv.Key, kv.Value}
	}
	out, err := json.Marshal(struct {
		Revision, Reopened uint64
		Pairs              []pair
	}{last, db.Stats().WrittenRevision, pairs})
	if err != nil {
		return err
	}
	fmt.Printf("result: %s\n", out)
	return db.Close()
}
`

func TestEmbed(t *testing.T) {
	root := checkoutRoot(t)

	// Go applies replace directives only in the main module's go.mod and
	// ignores them in a dependency's. A kvd that builds only thanks to a
	// replace in its own go.mod therefore builds in this checkout and breaks
	// every program that embeds it, which gets the module kvd replaced.
	t.Run("no_replace_in_kvd_go_mod", func(t *testing.T) {
		gomod := filepath.Join(root, "go.mod")
		data, err := os.ReadFile(gomod)
		if err != nil {
			t.Fatal(err)
		}
		if reps := replaceDirectives(data); len(reps) > 0 {
			t.Errorf("%s has %d replace directive(s):\n\t%s\n"+
				"Go ignores replace directives in a dependency's go.mod, so a program that embeds kvd "+
				"gets the original module instead; kvd must build without them.",
				gomod, len(reps), strings.Join(reps, "\n\t"))
		}
	})

	t.Run("build_and_run", func(t *testing.T) {
		goBin := goTool(t)
		steps := embedSteps()
		mod := writeEmbedder(t, root)

		env := goEnv()
		run := func(name string, args ...string) {
			t.Helper()
			cmd := exec.CommandContext(t.Context(), name, args...)
			cmd.Dir, cmd.Env = mod, env
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s %s in %s: %v\n%s\n(kvd is a dependency here: the replace directives of its go.mod do not apply)",
					filepath.Base(name), strings.Join(args, " "), mod, err, out)
			}
		}
		run(goBin, "mod", "tidy")
		bin := filepath.Join(mod, "embedder")
		if runtime.GOOS == "windows" {
			bin += ".exe"
		}
		run(goBin, "build", "-o", bin, ".")

		stepsFile := filepath.Join(t.TempDir(), "steps.json")
		b, err := json.Marshal(steps)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(stepsFile, b, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(t.Context(), bin, filepath.Join(t.TempDir(), "data"), stepsFile)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("embedder: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.Bytes(), stderr.Bytes())
		}
		res := parseResult(t, stdout.Bytes())
		t.Logf("embedder: last write at revision %d, reopened at %d with %d pairs", res.Revision, res.Reopened, len(res.Pairs))

		want := uint64(len(steps)) // revisions start at 1, one per step
		if res.Revision != want || res.Reopened != want {
			t.Errorf("last write at revision %d, reopened at %d; want both %d", res.Revision, res.Reopened, want)
		}
		checkPairs(t, res.Pairs, expectedPairs(steps))
	})
}

// embedSteps returns the writes of the embedding program: single puts and
// batches, in sync and async mode, with overwrites, a delete, binary values
// and a value larger than a page.
func embedSteps() []step {
	put := func(k, v string) op { return op{Key: []byte(k), Value: []byte(v)} }
	var steps []step
	for i := range 20 {
		steps = append(steps, step{"sync", []op{put(fmt.Sprintf("sync/%02d", i), fmt.Sprintf("value %d\x00\n\xff", i))}})
	}
	var batch []op
	for i := range 30 {
		batch = append(batch, put(fmt.Sprintf("async/%02d", i), fmt.Sprintf("batched %d", i)))
	}
	steps = append(steps, step{"async", batch})
	for i := range 10 {
		steps = append(steps, step{"async", []op{put(fmt.Sprintf("async-put/%02d", i), fmt.Sprint(i*i))}})
	}
	steps = append(steps,
		step{"sync", []op{put("sync/00", "overwritten in a sync batch"), {Key: []byte("async/05"), Delete: true}}},
		step{"async", []op{put("sync/01", "overwritten by an async put")}},
		step{"sync", []op{{Key: []byte("big"), Value: bytes.Repeat([]byte("0123456789abcdef"), 8<<10)}}},
	)
	return steps
}

// expectedPairs applies steps to an empty map and returns its pairs by key.
func expectedPairs(steps []step) []pair {
	m := map[string][]byte{}
	for _, s := range steps {
		for _, o := range s.Ops {
			if o.Delete {
				delete(m, string(o.Key))
			} else {
				m[string(o.Key)] = o.Value
			}
		}
	}
	var pairs []pair
	for _, k := range slices.Sorted(maps.Keys(m)) {
		pairs = append(pairs, pair{[]byte(k), m[k]})
	}
	return pairs
}

// checkPairs compares the pairs read back with those written, both by key.
func checkPairs(t *testing.T, got, want []pair) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("reopened store holds %d pairs, want %d", len(got), len(want))
	}
	bad := 0
	for i := range max(len(got), len(want)) {
		var diff string
		switch {
		case i >= len(got):
			diff = fmt.Sprintf("missing %q = %.40q", want[i].Key, want[i].Value)
		case i >= len(want):
			diff = fmt.Sprintf("extra %q = %.40q", got[i].Key, got[i].Value)
		case !bytes.Equal(got[i].Key, want[i].Key) || !bytes.Equal(got[i].Value, want[i].Value):
			diff = fmt.Sprintf("got %q = %.40q, want %q = %.40q", got[i].Key, got[i].Value, want[i].Key, want[i].Value)
		default:
			continue
		}
		if bad++; bad > 5 {
			t.Errorf("... and more differences")
			return
		}
		t.Errorf("pair %d: %s", i, diff)
	}
}

func parseResult(t *testing.T, stdout []byte) result {
	t.Helper()
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "result: "); ok {
			lines = append(lines, rest)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading the embedder's output: %v", err)
	}
	if len(lines) != 1 {
		t.Fatalf("embedder printed %d result lines, want 1; stdout:\n%.2000s", len(lines), stdout)
	}
	var res result
	if err := json.Unmarshal([]byte(lines[0]), &res); err != nil {
		t.Fatalf("embedder's result line: %v", err)
	}
	return res
}

// writeEmbedder writes the embedding module into a new temporary directory
// and returns the directory.
func writeEmbedder(t *testing.T, root string) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.ToSlash(root)
	if strings.ContainsAny(path, " \t\"'`") {
		path = strconv.Quote(path)
	}
	gomod := fmt.Sprintf("module example.com/embedder\n\ngo 1.26\n\nrequire %s v0.0.0\n\nreplace %s => %s\n",
		kvdModule, kvdModule, path)
	// kvd's go.sum holds the checksums of the dependencies kvd verified, so
	// that go mod tidy needs the checksum database only for new ones.
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"go.mod":  []byte(gomod),
		"go.sum":  sum,
		"main.go": []byte(embedderMain),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// goTool returns the go command. go test puts its own toolchain first on the
// PATH of the tests it runs, so this is the go that runs the test. Without
// it the test skips, except under CI=true, where it fails.
func goTool(t *testing.T) string {
	t.Helper()
	return kvtest.NeedTool(t, "go", "install Go from go.dev/dl")
}

// goEnv returns the environment for the go commands run in the embedding
// module: the test's own, without GOFLAGS that would make them use kvd's
// vendor directory or another go.mod, and outside any go.work.
func goEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if flags, ok := strings.CutPrefix(kv, "GOFLAGS="); ok {
			var keep []string
			for _, f := range strings.Fields(flags) {
				name, _, _ := strings.Cut(strings.TrimLeft(f, "-"), "=")
				if name != "mod" && name != "modfile" {
					keep = append(keep, f)
				}
			}
			kv = "GOFLAGS=" + strings.Join(keep, " ")
		}
		if strings.HasPrefix(kv, "GOWORK=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "GOWORK=off")
}

// checkoutRoot returns the directory of kvd's go.mod: the nearest one above
// the test's working directory that declares module github.com/kvdstore/kvd.
func checkoutRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && modulePath(data) == kvdModule {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod of module %s above the working directory", kvdModule)
		}
		dir = parent
	}
}

// modulePath returns the path of the module directive of a go.mod.
func modulePath(gomod []byte) string {
	for _, line := range goModLines(gomod) {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

// replaceDirectives returns the replace directives of a go.mod, one line
// each ("old [version] => new [version]"), from both the one-line form and
// replace ( ... ) blocks.
func replaceDirectives(gomod []byte) []string {
	var reps []string
	block := "" // the directive of the ( ... ) block the line is in
	for _, line := range goModLines(gomod) {
		if block != "" {
			if line == ")" {
				block = ""
			} else if block == "replace" {
				reps = append(reps, line)
			}
			continue
		}
		verb := line[:len(line)-len(strings.TrimLeftFunc(line, func(r rune) bool { return 'a' <= r && r <= 'z' }))]
		switch rest := strings.TrimSpace(line[len(verb):]); {
		case rest == "(":
			block = verb
		case verb == "replace":
			reps = append(reps, rest)
		}
	}
	return reps
}

// goModLines returns the non-empty lines of a go.mod, trimmed and without
// comments.
func goModLines(gomod []byte) []string {
	var lines []string
	for line := range strings.Lines(string(gomod)) {
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		if line = strings.TrimSpace(line); line != "" {
			lines = append(lines, line)
		}
	}
	return lines
}

func TestReplaceDirectives(t *testing.T) {
	tests := []struct {
		name  string
		gomod string
		want  []string
	}{
		{"none", "module m\n\ngo 1.26\n\nrequire (\n\ta v1.0.0\n\tb v1.0.0 // indirect\n)\n", nil},
		{"one line", "module m\nreplace a => ./a\n", []string{"a => ./a"}},
		{"one line with versions", "module m\nreplace a v1.2.1 => b v1.3.0 // fork\n", []string{"a v1.2.1 => b v1.3.0"}},
		{"block", "module m\nreplace (\n\ta => ./a\n\n\t// b is pinned\n\tb => ../b\n)\nrequire c v1.0.0\n",
			[]string{"a => ./a", "b => ../b"}},
		{"block without a space", "module m\nreplace(\n\ta => ./a\n)\n", []string{"a => ./a"}},
		{"commented out", "module m\n// replace a => ./a\n", nil},
		{"other directives", "module m\nreplacement a => ./a\nrequire (\n\treplace v1.0.0\n)\nexclude replace v1.0.0\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := replaceDirectives([]byte(tt.gomod)); !slices.Equal(got, tt.want) {
				t.Errorf("replaceDirectives = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestModulePath(t *testing.T) {
	for gomod, want := range map[string]string{
		"// kvd\nmodule github.com/kvdstore/kvd\n\ngo 1.26.0\n": kvdModule,
		"module \"example.com/quoted\" // comment\n":            "example.com/quoted",
		"go 1.26\n": "",
	} {
		if got := modulePath([]byte(gomod)); got != want {
			t.Errorf("modulePath(%q) = %q, want %q", gomod, got, want)
		}
	}
}
