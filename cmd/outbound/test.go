package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/outbound-dev/outbound/engine"
	"github.com/outbound-dev/outbound/internal/policytest"
)

const testUsage = `test [--script FILE] [--handler-timeout DUR] [FILE|DIR...]

Runs handler tests: *.test.js and *.test.ts files that import test, assert,
dispatch, decide and mockFetch from "outbound:test". With no FILE it runs
every test file under the current directory. The script under test is
--script, or NAME.js / NAME.ts beside NAME.test.js. Every fetch and every
forwarded request is answered by the tests' mocks: nothing reaches the
network. Prints one line per test, then "N passed, N failed"; exits 1 if any
test failed. See docs/testing.md.`

func cmdTest(args []string, stdout, stderr io.Writer) int {
	var script string
	var timeout time.Duration
	fs := newFlags("test", testUsage, "outbound test examples/github-token.test.js", stdout)
	fs.StringVar(&script, "script", "", "the policy script `FILE` under test (default: NAME.js or NAME.ts beside NAME.test.js)")
	fs.DurationVar(&timeout, "handler-timeout", engine.DefaultTimeout, "wall-clock limit for one handler invocation, and for one whole test")
	// Flags may come before or after the files.
	paths, err := interspersed(fs, args)
	if code := parsed(fs, err, stderr); code >= 0 {
		return code
	}
	if timeout <= 0 {
		return fail(stderr, "test", 2, "--handler-timeout must be positive")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sum, err := policytest.Run(ctx, policytest.Options{Paths: paths, Script: script, Timeout: timeout, Out: stdout})
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return fail(stderr, "test", 1, "interrupted")
		}
		return fail(stderr, "test", 1, "%v", err)
	}
	if sum.Failed > 0 {
		return 1
	}
	return 0
}
