package policytest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outbound-dev/outbound/engine"
	"github.com/outbound-dev/outbound/handlers/chain"
	"github.com/outbound-dev/outbound/handlers/policy"
)

// script is a policy script under test, loaded once per Run.
type script struct {
	path string
	prog *engine.Program
	pol  *chain.ScriptPolicy
	err  error
}

func (r *runner) load(ctx context.Context, path string) *script {
	abs, err := filepath.Abs(path)
	if err != nil {
		return &script{path: path, err: err}
	}
	if s, ok := r.scripts[abs]; ok {
		return s
	}
	s := &script{path: abs}
	s.prog, s.err = engine.Load(ctx, abs, engine.LoadOptions{})
	if s.err == nil {
		s.pol, s.err = chain.CompileScript(s.prog.Info().Classes)
	}
	r.scripts[abs] = s
	return s
}

// fileRun is one test file being run: its script, the pool that runs the
// script's handlers, and the router that answers every request that would
// leave.
type fileRun struct {
	r       *runner
	script  *script
	scripts policy.Scripts
	pool    *engine.Pool
	router  *router
	timeout time.Duration

	cur atomic.Pointer[testRun] // for the pool's own log lines
	bg  sync.WaitGroup          // dispatch goroutines
}

// runFile runs one test file and reports each of its tests.
func (r *runner) runFile(ctx context.Context, path string) Summary {
	out := r.opts.Out
	fileFail := func(format string, args ...any) Summary {
		msg := fmt.Sprintf(format, args...)
		fmt.Fprintf(out, "FAIL %s: %s\n", r.rel(path), indentRest(msg))
		return Summary{Failed: 1}
	}
	scriptPath := r.opts.Script
	if scriptPath == "" {
		var err error
		if scriptPath, err = ScriptFor(path); err != nil {
			return fileFail("%v", err)
		}
	}
	sc := r.load(ctx, scriptPath)
	if sc.err != nil {
		return fileFail("%s", r.scriptErr(sc))
	}
	bundle, err := engine.BundleFile(path, engine.BundleOptions{Modules: map[string]string{Module: testAPI}})
	if err != nil {
		return fileFail("%s", r.relErr(err))
	}
	prg, err := bundle.Compile()
	if err != nil {
		return fileFail("%s", r.relErr(err))
	}

	f := &fileRun{r: r, script: sc, timeout: r.opts.Timeout}
	f.router = &router{}
	f.scripts = staticScripts{&policy.Script{Policy: sc.pol, Info: sc.prog.Info()}}
	f.pool, err = engine.NewPool(sc.prog, engine.PoolOptions{
		Size:    2,
		Timeout: r.opts.Timeout,
		Fetch:   f.router,
		Logger:  slog.New(&captureHandler{current: f.current}),
	})
	if err != nil {
		return fileFail("policy script %s: %s", r.rel(sc.path), r.relErr(err))
	}
	f.scripts.(staticScripts).s.Invoker = f.pool
	defer func() {
		f.bg.Wait()
		f.pool.Close()
	}()

	var sum Summary
	var names []string
	next := 0
	for {
		sess, err := f.newSession(bundle, prg)
		if err != nil {
			sum.Failed++
			fmt.Fprintf(out, "FAIL %s: %s\n", r.rel(path), indentRest(err.Error()))
			return sum
		}
		if names == nil {
			for _, tc := range sess.tests {
				names = append(names, tc.name)
			}
			if len(names) == 0 {
				sess.close()
				return fileFail("no tests: call test(name, fn) from %q", Module)
			}
		} else if !sameNames(names, sess.tests) {
			sess.close()
			sum.Failed++
			fmt.Fprintf(out, "FAIL %s: the file registered other tests when it was evaluated again after a timeout\n", r.rel(path))
			return sum
		}
		alive := true
		for ; next < len(sess.tests) && alive; next++ {
			if ctx.Err() != nil {
				sess.close()
				return sum
			}
			res := sess.run(sess.tests[next])
			alive = !res.timedOut
			if res.failed() {
				sum.Failed++
			} else {
				sum.Passed++
			}
			res.write(out)
		}
		sess.close()
		if next >= len(names) {
			return sum
		}
	}
}

func sameNames(names []string, tests []*testCase) bool {
	if len(names) != len(tests) {
		return false
	}
	for i, tc := range tests {
		if tc.name != names[i] {
			return false
		}
	}
	return true
}

func (f *fileRun) current() *testRun { return f.cur.Load() }

// relErr shortens absolute paths inside an error message.
func (r *runner) relErr(err error) string {
	msg := err.Error()
	var se *engine.ScriptError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s:%d:%d: %s", r.rel(se.File), se.Line, se.Col, se.Msg)
	}
	return shorten(r.opts.Dir, msg)
}

// scriptErr describes why the script under test cannot be used.
func (r *runner) scriptErr(sc *script) string {
	var se *engine.ScriptError
	if errors.As(sc.err, &se) {
		return "policy script: " + r.relErr(se)
	}
	return fmt.Sprintf("policy script %s: %s", r.rel(sc.path), r.relErr(sc.err))
}

// staticScripts serves the one generation under test.
type staticScripts struct{ s *policy.Script }

func (s staticScripts) Acquire() (*policy.Script, func()) { return s.s, func() {} }

// indentRest indents every line after the first, for the report.
func indentRest(s string) string {
	return strings.ReplaceAll(s, "\n", "\n    ")
}
