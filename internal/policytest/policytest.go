// Package policytest runs handler tests (`outbound test`): JS or TS files
// that import "outbound:test" and check what a policy script does with a
// request. A test's dispatch() goes through the same machinery as serve —
// the chain, the policy service, the runtime methods of the instance
// registry, the engine's isolate pool and the Web APIs — with one
// difference: every request that would leave (a handler's fetch, forwarding
// at steps 7 and 8, an opaque tunnel) is answered by the test's mocks, and
// nothing here can reach the network.
//
// It owns discovery of test files, their JS runtime and the outbound:test
// module, mocks, and the report. It decides nothing itself.
package policytest

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/outbound-dev/outbound/engine"
)

//go:embed testapi.js
var testAPI string

// Module is the import name of the test API.
const Module = "outbound:test"

// Options configures Run.
type Options struct {
	// Paths are test files or directories to search; none means Dir.
	Paths []string
	// Script is the policy script under test for every file; "" means the
	// script beside each test file (NAME.js or NAME.ts for NAME.test.js).
	Script string
	// Timeout bounds one handler invocation and one whole test; zero means
	// engine.DefaultTimeout, as serve's --handler-timeout.
	Timeout time.Duration
	// Dir is the directory searched when Paths is empty, and the one that
	// file names in the report are relative to; "" means the working
	// directory.
	Dir string
	// Out receives the report.
	Out io.Writer
}

// Summary counts the results.
type Summary struct {
	Passed, Failed int
}

// ErrNoTests is returned when there is nothing to run.
var ErrNoTests = errors.New("no test files found")

// Run runs every test file and writes the report: one line per test, the
// output of its handlers under it, then "N passed, N failed". A file that
// cannot run at all (no script under test, a syntax error) counts as one
// failure.
func Run(ctx context.Context, opts Options) (Summary, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = engine.DefaultTimeout
	}
	if opts.Dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return Summary{}, err
		}
		opts.Dir = wd
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	files, err := Discover(opts.Dir, opts.Paths)
	if err != nil {
		return Summary{}, err
	}
	r := &runner{opts: opts, scripts: map[string]*script{}}
	var sum Summary
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		if len(files) > 1 {
			fmt.Fprintf(opts.Out, "# %s\n", r.rel(f))
		}
		s := r.runFile(ctx, f)
		sum.Passed += s.Passed
		sum.Failed += s.Failed
	}
	fmt.Fprintf(opts.Out, "%d passed, %d failed\n", sum.Passed, sum.Failed)
	return sum, nil
}

// IsTestFile reports whether name is a test file by its name.
func IsTestFile(name string) bool {
	return strings.HasSuffix(name, ".test.js") || strings.HasSuffix(name, ".test.ts")
}

// Discover lists the test files to run, sorted: each path that is a file,
// and every *.test.js and *.test.ts under each path that is a directory
// (dir when paths is empty). node_modules and hidden directories are
// skipped.
func Discover(dir string, paths []string) ([]string, error) {
	if len(paths) == 0 {
		paths = []string{dir}
	}
	seen := map[string]bool{}
	var out []string
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("test file: %w", err)
		}
		if !st.IsDir() {
			add(filepath.Clean(p))
			continue
		}
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if path != p && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) {
					return filepath.SkipDir
				}
				return nil
			}
			if IsTestFile(d.Name()) {
				add(path)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("searching %s for test files: %w", p, err)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w (want *.test.js or *.test.ts under %s)", ErrNoTests, strings.Join(paths, ", "))
	}
	sort.Strings(out)
	return out, nil
}

// ScriptFor returns the script under test for a test file: NAME.js or
// NAME.ts beside NAME.test.js (the test file's own language first).
func ScriptFor(testFile string) (string, error) {
	ext := filepath.Ext(testFile)
	base := strings.TrimSuffix(strings.TrimSuffix(testFile, ext), ".test")
	exts := []string{".js", ".ts"}
	if ext == ".ts" {
		exts = []string{".ts", ".js"}
	}
	for _, e := range exts {
		if st, err := os.Stat(base + e); err == nil && !st.IsDir() {
			return base + e, nil
		}
	}
	name := filepath.Base(base)
	return "", fmt.Errorf("no script under test: put %s.js or %s.ts beside the test file, or pass --script", name, name)
}

// runner is one Run: its options and the scripts loaded so far.
type runner struct {
	opts    Options
	scripts map[string]*script // by absolute path
}

// rel shows a path relative to Dir when it is inside it.
func (r *runner) rel(p string) string {
	if rel, err := filepath.Rel(r.opts.Dir, p); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return p
}
