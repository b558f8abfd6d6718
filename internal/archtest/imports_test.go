package archtest_test

import (
	"encoding/json"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/kvdstore/kvd"

// allowed is the import rule of DESIGN.md §2 as an allow-list: for each
// package of the module (its import path relative to the module; a key
// ending in "/..." covers every package under that directory), the packages
// of the module its files may import directly. imports binds the package's
// own files; its _test.go files may import those and testImports too. A
// package may always import itself (an external test package does).
//
// A package of the module that is not in this table fails the test: a new
// package is given its rules here, and the layering decides them:
// cmd → server/client → replication → engine → wal, with internal/ helpers beside them.
// Imports of packages outside the module are not restricted here, except
// networking in engine and wal (see noNetworking).
var allowed = map[string]struct{ imports, testImports []string }{
	"wal":    {nil, []string{"internal/kvtest"}},
	"engine": {[]string{"wal", "internal/faults"}, []string{"internal/kvtest"}},
	"server": {[]string{"engine", "replication", "jobs", "watch", "auth"}, []string{"internal/kvtest", "internal/faults", "internal/watchcheck"}},
	// watch fans the engine's change history out to watchers: server → watch → engine.
	"watch": {[]string{"engine"}, []string{"internal/kvtest", "internal/watchcheck"}},
	// replication runs the store on Raft: server → replication → engine → wal
	// (its log store is a wal.Log).
	"replication": {[]string{"engine", "wal"}, []string{"internal/kvtest", "internal/tlsfiles"}},
	// jobs runs backups, restores, imports... on the store; its records
	// are written with wal.WriteFileDurably.
	"jobs": {[]string{"engine", "wal"}, []string{"internal/kvtest"}},
	// client's tests start a server over an engine in the test process.
	"client":  {nil, []string{"engine", "server", "auth", "internal/kvtest", "internal/faults", "internal/watchcheck"}},
	"cmd/kvd": {[]string{"engine", "server", "replication", "jobs", "wal", "watch", "auth", "internal/buildinfo", "internal/tlsfiles"}, nil},
	// kvctl's offline commands (backup status, restore) read backup files
	// with engine.
	"cmd/kvctl": {[]string{"client", "engine", "internal/histogram", "internal/buildinfo"}, []string{"server"}},

	// auth parses the users file and checks credentials; the server asks it.
	"auth": {nil, nil},

	"internal/archtest":  {nil, nil},
	"internal/buildinfo": {nil, nil},
	"internal/histogram": {nil, nil},
	"internal/kvtest":    {nil, nil},
	"internal/faults":    {nil, nil},
	"internal/powerfs":   {nil, nil},
	// tlsfiles keeps certificate files loaded and reloaded for kvd's
	// listeners and cluster port.
	"internal/tlsfiles": {nil, []string{"internal/kvtest"}},

	// The watch history validator, shared by the watch tests and suites.
	"internal/watchcheck": {nil, nil},

	"bench/...": {[]string{"internal/histogram"}, nil},
	// Black-box suites: they start real kvd processes.
	"tests/...": {nil, []string{"client", "internal/kvtest", "internal/powerfs", "internal/watchcheck"}},
}

// noNetworking lists the packages (with everything under them) whose
// dependencies, direct or transitive, must not include these.
var noNetworking = map[string][]string{
	"wal":    {"net", "net/http"},
	"engine": {"net", "net/http"},
}

// TestAllowListStatesTheLayering checks the table itself against the rules
// DESIGN.md names, so that an edit of the table cannot quietly undo them.
func TestAllowListStatesTheLayering(t *testing.T) {
	for key, r := range allowed {
		for _, imp := range append(slices.Clone(r.imports), r.testImports...) {
			if under(imp, "cmd") {
				t.Errorf("allowed[%q] lists %s: nothing imports cmd", key, imp)
			}
		}
	}
	if r := allowed["wal"]; len(r.imports) > 0 {
		t.Errorf("wal may import %v: wal imports nothing of kvd's", r.imports)
	}
	if slices.Contains(allowed["server"].imports, "wal") {
		t.Error("server may import wal: server reaches the log only through engine")
	}
	for _, imp := range allowed["client"].imports {
		for _, f := range []string{"engine", "wal", "server"} {
			if under(imp, f) {
				t.Errorf("client may import %s: client speaks to a server only over the network", imp)
			}
		}
	}
}

// TestImportsFlowOneWay checks every package of the module against the
// allow-list, reading the import declarations of all its Go files whatever
// their build constraints, and checks that engine and wal use no networking.
func TestImportsFlowOneWay(t *testing.T) {
	pkgs := moduleImports(t)
	if len(pkgs) < 5 {
		t.Fatalf("found only %d packages in the module", len(pkgs))
	}
	used := map[string]bool{}
	for _, rel := range sortedKeys(pkgs) {
		key, ok := ruleFor(rel)
		if !ok {
			t.Errorf("package %s is not in the allow-list: give it its rules in allowed", rel)
			continue
		}
		used[key] = true
		r := allowed[key]
		for _, imp := range pkgs[rel] {
			if imp.path == rel {
				continue
			}
			if slices.Contains(r.imports, imp.path) || imp.test && slices.Contains(r.testImports, imp.path) {
				continue
			}
			t.Errorf("%s imports %s, which allowed[%q] does not list", imp.file, module+"/"+imp.path, key)
		}
	}
	for key := range allowed {
		if !used[key] {
			t.Errorf("allowed[%q] matches no package of the module", key)
		}
	}
	checkNoNetworking(t)
}

type importOf struct {
	path string // relative to the module
	file string // relative to the module root
	test bool   // imported by a _test.go file
}

// moduleImports reads the import declarations of every Go file of the
// module and returns, for each package directory (relative to the module
// root), its imports of packages of the module. Reading every file also
// lets go test's result cache notice a change of imports.
func moduleImports(t *testing.T) map[string][]importOf {
	t.Helper()
	root := filepath.Join("..", "..")
	pkgs := map[string][]importOf{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		dir := pathDir(rel)
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		if _, ok := pkgs[dir]; !ok {
			pkgs[dir] = nil
		}
		for _, spec := range f.Imports {
			p, err := strconv.Unquote(spec.Path.Value)
			if err != nil {
				return err
			}
			if p == module {
				p = module + "/."
			}
			if !strings.HasPrefix(p, module+"/") {
				continue
			}
			pkgs[dir] = append(pkgs[dir], importOf{
				path: strings.TrimPrefix(p, module+"/"),
				file: rel,
				test: strings.HasSuffix(name, "_test.go"),
			})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// checkNoNetworking asks go list for the transitive dependencies of the
// packages in noNetworking (for this platform and its default build tags).
func checkNoNetworking(t *testing.T) {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps=false", "-json", module+"/...").Output()
	if err != nil {
		if e, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list: %v\n%s", err, e.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	checked := 0
	for {
		var p struct {
			ImportPath string
			Deps       []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		for layer, forbidden := range noNetworking {
			if !under(p.ImportPath, module+"/"+layer) {
				continue
			}
			checked++
			for _, d := range p.Deps {
				for _, f := range forbidden {
					if under(d, f) {
						t.Errorf("%s depends on %s: %s imports no networking", p.ImportPath, d, layer)
						break
					}
				}
			}
		}
	}
	if checked < len(noNetworking) {
		t.Fatalf("go list matched only %d packages of %v", checked, sortedKeys(noNetworking))
	}
}

// ruleFor returns the key of allowed that covers the package rel: rel
// itself, or the nearest "dir/..." above it.
func ruleFor(rel string) (string, bool) {
	if _, ok := allowed[rel]; ok {
		return rel, true
	}
	for d := rel; d != "."; d = pathDir(d) {
		if _, ok := allowed[d+"/..."]; ok {
			return d + "/...", true
		}
	}
	return "", false
}

func pathDir(p string) string {
	if i := strings.LastIndex(p, "/"); i >= 0 {
		return p[:i]
	}
	return "."
}

func under(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
