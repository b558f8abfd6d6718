package archtest_test

import (
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

type pkg struct {
	ImportPath string
	Deps       []string
}

// TestImportsFlowOneWay checks the layering of DESIGN.md: engine and wal use
// no networking and nothing above them; server and client never import
// each other or cmd; nothing imports cmd.
func TestImportsFlowOneWay(t *testing.T) {
	touchSources(t)
	out, err := exec.Command("go", "list", "-deps=false", "-json", "github.com/kvdstore/kvd/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 3 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	under := func(path, prefix string) bool { return path == prefix || strings.HasPrefix(path, prefix+"/") }
	rules := []struct {
		layer     string
		forbidden []string
	}{
		{"github.com/kvdstore/kvd/wal", []string{"net", "net/http", "github.com/kvdstore/kvd/engine", "github.com/kvdstore/kvd/server", "github.com/kvdstore/kvd/client", "github.com/kvdstore/kvd/cmd"}},
		{"github.com/kvdstore/kvd/engine", []string{"net", "net/http", "github.com/kvdstore/kvd/server", "github.com/kvdstore/kvd/client", "github.com/kvdstore/kvd/cmd"}},
		{"github.com/kvdstore/kvd/server", []string{"github.com/kvdstore/kvd/client", "github.com/kvdstore/kvd/cmd"}},
		{"github.com/kvdstore/kvd/client", []string{"github.com/kvdstore/kvd/server", "github.com/kvdstore/kvd/engine", "github.com/kvdstore/kvd/wal", "github.com/kvdstore/kvd/cmd"}},
	}
	checked := 0
	for _, p := range pkgs {
		for _, r := range rules {
			if !under(p.ImportPath, r.layer) {
				continue
			}
			checked++
			for _, d := range p.Deps {
				for _, f := range r.forbidden {
					if under(d, f) {
						t.Errorf("%s depends on %s", p.ImportPath, d)
					}
				}
			}
		}
		if !strings.HasPrefix(p.ImportPath, "github.com/kvdstore/kvd/cmd/") {
			for _, d := range p.Deps {
				if under(d, "github.com/kvdstore/kvd/cmd") {
					t.Errorf("%s depends on %s: nothing imports cmd", p.ImportPath, d)
				}
			}
		}
	}
	if checked < 2 {
		t.Fatalf("only %d packages matched a layer rule", checked)
	}
}

// touchSources opens every directory and stats every Go file of the module,
// so that go test's result cache notices a change of imports (it does not
// see what the go list subprocess reads).
func touchSources(t *testing.T) {
	t.Helper()
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != "../.." {
			return filepath.SkipDir
		}
		if strings.HasSuffix(path, ".go") {
			_, err = os.Stat(path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
