package layers

import (
	"bufio"
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/outbound-dev/outbound/"

// rule forbids packages under From (a path prefix inside the module) to
// depend on any package under one of Not, directly or through others.
type rule struct {
	from string
	not  []string
	why  string
}

var rules = []rule{
	{"proxy", []string{"engine", "jsapi", "handlers", "internal/app", "github.com/dop251/goja"},
		"the wire knows nothing of policy or JS: it asks a Backend"},
	{"handlers/chain", []string{"engine", "jsapi", "handlers/policy", "handlers/instances", "proxy", "github.com/dop251/goja", "github.com/evanw/esbuild"},
		"the decision is pure: it never enters JS"},
	{"handlers/hostmatch", []string{"engine", "jsapi", "handlers/chain", "handlers/policy", "handlers/instances", "proxy"},
		"patterns are below the decision"},
	{"handlers", []string{"proxy", "internal/app"},
		"the policy layer knows nothing of sockets"},
	{"jsapi", []string{"engine", "handlers", "proxy", "internal/app"},
		"the Web APIs know nothing of policy, instances or sockets"},
	{"engine", []string{"handlers/policy", "handlers/instances", "proxy", "internal/app"},
		"the engine runs handlers; it does not decide or serve"},
	{"internal/host", []string{""}, "a leaf"},
	{"internal/decision", []string{""}, "a leaf"},
	{"internal/events", []string{""}, "a leaf: the proxy publishes to it"},
	{"internal/platform", []string{""}, "a leaf: what the OS can do, importable by every layer"},
	{"internal/store", []string{"engine", "jsapi", "handlers", "proxy", "internal/app"},
		"persistence is below everything that uses it"},
	{"internal/testlog", []string{""}, "a leaf for tests"},
	{"internal/policytest", []string{"proxy", "internal/app"},
		"handler tests have no transport but their mocks: nothing that dials is reachable"},
}

// leaves may import nothing of the module at all.
var leaves = map[string]bool{"internal/host": true, "internal/decision": true, "internal/events": true, "internal/platform": true, "internal/testlog": true}

type pkg struct {
	path    string   // inside the module
	deps    []string // transitive, full import paths
	imports []string // direct, full import paths
}

func list(t *testing.T) []pkg {
	t.Helper()
	touchSources(t)
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}}|{{join .Deps \" \"}}|{{join .Imports \" \"}}", "../../...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []pkg
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "|")
		if len(f) != 3 || !strings.HasPrefix(f[0], module) {
			continue
		}
		pkgs = append(pkgs, pkg{path: strings.TrimPrefix(f[0], module), deps: strings.Fields(f[1]), imports: strings.Fields(f[2])})
	}
	if len(pkgs) < 20 {
		t.Fatalf("go list found only %d packages of the module", len(pkgs))
	}
	return pkgs
}

// touchSources opens every Go file of the module, so that go test's cache,
// which cannot see what `go list` read, reruns the test when one changes.
func touchSources(t *testing.T) {
	err := filepath.WalkDir("../..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && p != "../.." {
			return filepath.SkipDir
		}
		if strings.HasSuffix(p, ".go") {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			f.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func under(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

// inModule turns a full import path into a module path, or reports false.
func inModule(p string) (string, bool) {
	if !strings.HasPrefix(p, module) {
		return "", false
	}
	return strings.TrimPrefix(p, module), true
}

func TestLayers(t *testing.T) {
	pkgs := list(t)
	for _, p := range pkgs {
		for _, r := range rules {
			if !under(p.path, r.from) {
				continue
			}
		deps:
			for _, d := range p.deps {
				local, own := inModule(d)
				for _, n := range r.not {
					bad := false
					switch {
					case n == "":
						bad = leaves[r.from] && own
					case strings.Contains(n, "."): // a third-party module
						bad = under(d, n)
					default:
						bad = own && under(local, n)
					}
					// A package may use its own sub-packages.
					if bad && own && under(local, p.path) {
						bad = false
					}
					if bad {
						t.Errorf("%s depends on %s: %s", p.path, d, r.why)
						break deps // one line per rule is enough
					}
				}
			}
		}
	}
}

// TestOnlyCmdAssembles checks that the composition root is imported only
// by the commands (tests aside), and that nothing imports a command.
func TestOnlyCmdAssembles(t *testing.T) {
	for _, p := range list(t) {
		for _, d := range p.imports {
			local, own := inModule(d)
			if !own {
				continue
			}
			if under(local, "internal/app") && !under(p.path, "cmd") && !under(p.path, "internal/app") {
				t.Errorf("%s imports %s: only cmd/* assembles outbound", p.path, d)
			}
			if under(local, "cmd") {
				t.Errorf("%s imports the command %s", p.path, d)
			}
		}
	}
}

// TestRulesBite makes sure the checker sees a forbidden edge: proxy really
// depends on internal/decision, so a rule against it must fire.
func TestRulesBite(t *testing.T) {
	var proxy *pkg
	pkgs := list(t)
	for i := range pkgs {
		if pkgs[i].path == "proxy" {
			proxy = &pkgs[i]
		}
	}
	if proxy == nil {
		t.Fatal("package proxy not listed")
	}
	found := false
	for _, d := range proxy.deps {
		if d == module+"internal/decision" {
			found = true
		}
	}
	if !found {
		t.Fatal("the dependency list of proxy lacks internal/decision: the checker reads nothing")
	}
}
