package policytest

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the .golden files of the report")

func testdata(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "testdata", "policytest"))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// run runs opts with Dir defaulting to testdata/policytest and returns the
// report.
func run(t *testing.T, opts Options) (string, Summary) {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = testdata(t)
	}
	var out bytes.Buffer
	opts.Out = &out
	sum, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	return out.String(), sum
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join(testdata(t), name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Fatalf("report differs from %s (go test -update to accept):\n--- got\n%s--- want\n%s", name, got, want)
	}
}

// TestPass: dispatch, decide and mockFetch through the real evaluation
// order; the test file checks the behaviour, this checks the report.
func TestPass(t *testing.T) {
	out, sum := run(t, Options{Paths: []string{"pass.test.js"}, Script: filepath.Join(testdata(t), "policy.js")})
	if sum.Failed != 0 || sum.Passed != 12 {
		t.Fatalf("summary %+v\n%s", sum, out)
	}
	golden(t, "pass.golden", out)
}

// TestFailMessages: each kind of failure says what was expected and what
// came instead, at the file and line of the failed assertion.
func TestFailMessages(t *testing.T) {
	out, sum := run(t, Options{Paths: []string{"fail.test.js"}, Script: filepath.Join(testdata(t), "policy.js")})
	if sum.Failed != 15 || sum.Passed != 0 {
		t.Fatalf("summary %+v\n%s", sum, out)
	}
	golden(t, "fail.golden", out)
}

// TestTimeouts: a test that runs past the handler timeout fails with a
// clear message, whether a handler or the test itself runs away, and the
// tests after it still run.
func TestTimeouts(t *testing.T) {
	// Long enough that the tests that pass do so on a loaded machine.
	const timeout = 3 * time.Second
	out, sum := run(t, Options{Paths: []string{"timeout.test.js"}, Script: filepath.Join(testdata(t), "policy.js"), Timeout: timeout})
	if sum.Failed != 3 || sum.Passed != 2 {
		t.Fatalf("summary %+v\n%s", sum, out)
	}
	for _, want := range []string{
		"FAIL handler runs away: timeout.test.js:5:6: test timed out after 3s (the handler timeout; set it with --handler-timeout)\n",
		"ok runs after a handler timeout\n",
		"FAIL test spins: timeout.test.js:13:6: test timed out after 3s",
		"FAIL test never settles: timeout.test.js:17:6: test timed out after 3s",
		"ok runs after the runtime was replaced\n    log: still here\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

// TestTypeScript: a .test.ts file of a .ts policy with an import, found by
// searching a directory; a failure points into the .ts source.
func TestTypeScript(t *testing.T) {
	out, sum := run(t, Options{Paths: []string{"ts"}})
	want := "ok a TypeScript test of a TypeScript policy\n    log: greeting ts\n" +
		"FAIL a failure points into the .ts file: ts/policy.test.ts:14:16: assert.equal: actual 1, expected 2\n" +
		"1 passed, 1 failed\n"
	if out != want || sum != (Summary{Passed: 1, Failed: 1}) {
		t.Fatalf("report:\n%s\nwant:\n%s", out, want)
	}
}

// TestNetworkNeverTouched: without mocks, neither a handler's fetch, nor
// forwarding at step 8, nor the test's own fetch reaches the network: a
// loopback server they all aim at sees nothing, and each test fails with
// "unmocked fetch".
func TestNetworkNeverTouched(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer srv.Close()
	dir := t.TempDir()
	for _, name := range []string{"policy.js", "policy.test.js"} {
		b, err := os.ReadFile(filepath.Join(testdata(t), "network", name))
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.ReplaceAll(b, []byte("__TARGET__"), []byte(srv.URL+"/secret"))
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, sum := run(t, Options{Dir: dir})
	if sum.Failed != 3 || hits.Load() != 0 {
		t.Fatalf("summary %+v, upstream hits %d\n%s", sum, hits.Load(), out)
	}
	unmocked := "unmocked fetch: GET " + srv.URL + "/secret"
	for _, want := range []string{
		"FAIL a handler's fetch without a mock: policy.test.js:6:30: " + unmocked + "\n",
		"FAIL forwarding at step 8 without a mock: policy.test.js:11:30: " + unmocked + "\n",
		"FAIL the test's own fetch without a mock: policy.test.js:15:6: " + unmocked + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

// TestFileErrors: a file that cannot run fails as a whole, with one line
// saying why, and the run goes on.
func TestFileErrors(t *testing.T) {
	policy := filepath.Join(testdata(t), "policy.js")
	tests := []struct {
		file, script, want string
	}{
		{"broken.test.js", policy, "FAIL errors/broken.test.js: errors/broken.test.js:4:13: Unexpected \";\"\n"},
		{"toplevel_loop.test.js", policy, "FAIL errors/toplevel_loop.test.js: evaluating the test file did not finish within 500ms\n"},
		{"dupe.test.js", policy, "FAIL errors/dupe.test.js: errors/dupe.test.js:4:6: TypeError: test(\"same name\"): a test of this name already exists in the file\n"},
		{"empty.test.js", policy, "FAIL errors/empty.test.js: no tests: call test(name, fn) from \"outbound:test\"\n"},
		{"orphan.test.js", "", "FAIL errors/orphan.test.js: no script under test: put orphan.js or orphan.ts beside the test file, or pass --script\n"},
		{"badscript.test.js", "", "FAIL errors/badscript.test.js: policy script: errors/badscript.js:3:1: Unexpected \"}\"\n"},
		{"nested.test.js", policy, "FAIL registers a test inside a test: errors/nested.test.js:4:8: TypeError: test() must be called at the top level of a test file, not inside a test\n"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			timeout := time.Duration(0) // the default: nothing here should come near it
			if strings.Contains(tt.want, "did not finish") {
				timeout = 500 * time.Millisecond
			}
			out, sum := run(t, Options{Paths: []string{filepath.Join("errors", tt.file)}, Script: tt.script, Timeout: timeout})
			if out != tt.want+"0 passed, 1 failed\n" || sum.Failed != 1 {
				t.Fatalf("report:\n%s\nwant:\n%s", out, tt.want)
			}
		})
	}
}

func TestDiscover(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"a.test.js", "sub/b.test.ts", "sub/deeper/c.test.js", "node_modules/x/d.test.js", ".git/e.test.js", "policy.js", "f.test.jsx"} {
		p := filepath.Join(dir, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, nil, 0o644)
	}
	got, err := Discover(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(dir, "a.test.js"), filepath.Join(dir, "sub/b.test.ts"), filepath.Join(dir, "sub/deeper/c.test.js")}
	if !slices.Equal(got, want) {
		t.Fatalf("Discover = %v, want %v", got, want)
	}
	// A named file runs whatever its name; a named directory is searched.
	got, err = Discover(dir, []string{"policy.js", "sub", "sub/b.test.ts"})
	if err != nil || !slices.Equal(got, []string{filepath.Join(dir, "policy.js"), filepath.Join(dir, "sub/b.test.ts"), filepath.Join(dir, "sub/deeper/c.test.js")}) {
		t.Fatalf("Discover(paths) = %v, %v", got, err)
	}
	if _, err := Discover(filepath.Join(dir, "node_modules"), nil); err != nil {
		t.Fatalf("a named directory is searched even if it would be skipped: %v", err)
	}
	if _, err := Discover(dir, []string{"missing.test.js"}); err == nil {
		t.Fatal("a missing file was accepted")
	}
	empty := t.TempDir()
	if _, err := Discover(empty, nil); !errors.Is(err, ErrNoTests) {
		t.Fatalf("empty dir: %v, want ErrNoTests", err)
	}
}

func TestScriptFor(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"both.js", "both.ts", "js.js", "ts.ts"} {
		os.WriteFile(filepath.Join(dir, f), nil, 0o644)
	}
	os.Mkdir(filepath.Join(dir, "dir.js"), 0o755)
	for test, want := range map[string]string{
		"both.test.js": "both.js",
		"both.test.ts": "both.ts",
		"js.test.ts":   "js.js",
		"ts.test.js":   "ts.ts",
		"dir.test.js":  "",
		"none.test.js": "",
	} {
		got, err := ScriptFor(filepath.Join(dir, test))
		if want == "" {
			if err == nil || !strings.Contains(err.Error(), "--script") {
				t.Errorf("ScriptFor(%s) = %q, %v; want an error naming --script", test, got, err)
			}
			continue
		}
		if err != nil || got != filepath.Join(dir, want) {
			t.Errorf("ScriptFor(%s) = %q, %v; want %s", test, got, err, want)
		}
	}
}

// TestRunSeveralFiles: each file is headed by its name, and the summary
// counts them all.
func TestRunSeveralFiles(t *testing.T) {
	out, sum := run(t, Options{Paths: []string{"ts", filepath.Join("errors", "orphan.test.js")}})
	if sum != (Summary{Passed: 1, Failed: 2}) || !strings.HasPrefix(out, "# errors/orphan.test.js\nFAIL errors/orphan.test.js: ") ||
		!strings.Contains(out, "\n# ts/policy.test.ts\nok a TypeScript test") || !strings.HasSuffix(out, "\n1 passed, 2 failed\n") {
		t.Fatalf("summary %+v, report:\n%s", sum, out)
	}
}

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern, url string
		want         bool
	}{
		{"https://api.github.com/*", "https://api.github.com/user", true},
		{"https://api.github.com/*", "https://api.github.com/", true},
		{"https://api.github.com/*", "https://api.github.com.evil.test/", false},
		{"https://api.github.com/*", "http://api.github.com/user", false},
		{"https://api.github.com", "https://api.github.com/", true},
		{"https://api.github.com", "https://api.github.com/user", false},
		{"https://api.github.com/user", "https://api.github.com/user?x=1", false},
		{"https://api.github.com/user*", "https://api.github.com/user?x=1", true},
		{"https://*.github.com/*", "https://a.b.github.com/x", true},
		{"https://*.github.com/*", "https://github.com/x", false},
		{"api.github.com/*", "https://api.github.com/user", true},
		{"api.github.com/*", "http://api.github.com/user", true},
		{"*", "https://anything.test/at/all", true},
		{"*/v1/*", "https://x.test/v1/y", true},
		{"https://x.test:8443/*", "https://x.test:8443/a", true},
		{"https://x.test:8443/*", "https://x.test/a", false},
	}
	for _, tt := range tests {
		g, err := parseGlob(tt.pattern)
		if err != nil {
			t.Fatalf("parseGlob(%q): %v", tt.pattern, err)
		}
		u, _ := http.NewRequest("GET", tt.url, nil)
		if got := g.match(matchTarget(u.URL)); got != tt.want {
			t.Errorf("%q matches %q = %v, want %v", tt.pattern, tt.url, got, tt.want)
		}
	}
	for _, bad := range []string{"", "https://x.test/ y"} {
		if _, err := parseGlob(bad); err == nil {
			t.Errorf("parseGlob(%q) accepted", bad)
		}
	}
}

// FuzzGlob holds the matcher to the meaning of a glob: the same answer as
// the regular expression with each '*' as ".*" and everything else
// literal.
func FuzzGlob(f *testing.F) {
	for _, s := range [][2]string{
		{"https://api.github.com/*", "https://api.github.com/user"},
		{"*a*a*", "aaa"}, {"a*a", "a"}, {"*", ""}, {"x.test/*/y", "https://x.test/a/b/y"},
		{"**", "z"}, {"https://h", "https://h/"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, target string) {
		g, err := parseGlob(pattern)
		if err != nil {
			return
		}
		expr := "^"
		if g.lead {
			expr += ".*"
		}
		quoted := make([]string, len(g.parts))
		for i, p := range g.parts {
			quoted[i] = regexp.QuoteMeta(p)
		}
		expr += strings.Join(quoted, ".*")
		if g.trail && len(g.parts) > 0 {
			expr += ".*"
		}
		expr += "$"
		re, err := regexp.Compile("(?s)" + expr)
		if err != nil {
			t.Skip()
		}
		text := target
		if !g.scheme {
			if i := strings.Index(text, "://"); i >= 0 {
				text = text[i+3:]
			}
		}
		if got, want := g.match(target), re.MatchString(text); got != want {
			t.Fatalf("glob %q on %q = %v, regexp %s says %v", pattern, target, got, expr, want)
		}
	})
}
