package policytest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dop251/goja"

	"github.com/outbound-dev/outbound/jsapi"
)

var typePromise = reflect.TypeFor[*goja.Promise]()

// testRun is one test while it runs.
type testRun struct {
	tc     *testCase
	sess   *session
	ctx    context.Context // carries the callInfo the router reads
	cancel context.CancelFunc
	logger *slog.Logger
	done   chan struct{}

	// Loop-owned.
	scope   *jsapi.Scope // the realm's scope of the test, once started
	mocks   []*mock
	settled bool
	ended   bool
	resps   []*http.Response

	mu       sync.Mutex
	failures []string // "file:line:col: message", in the order they happened
	output   []string
	inflight map[*flight]struct{}
	timeouts []string
}

// flight is a dispatch on its way, for the report of a test that times out.
type flight struct {
	method, url string
	handler     string // what runs, when a handler does
}

func (fl *flight) String() string {
	if fl.handler != "" {
		return fmt.Sprintf("handler %s (%s %s)", fl.handler, fl.method, fl.url)
	}
	return fmt.Sprintf("dispatch of %s %s", fl.method, fl.url)
}

// callInfo tells the router which test a request belongs to and where the
// dispatch that caused it was called.
type callInfo struct {
	tr    *testRun
	where string
}

type callKey struct{}

func newTestRun(s *session, tc *testCase) *testRun {
	tr := &testRun{tc: tc, sess: s, done: make(chan struct{}), inflight: map[*flight]struct{}{}}
	ctx, cancel := context.WithCancel(context.Background())
	tr.ctx = context.WithValue(ctx, callKey{}, &callInfo{tr: tr})
	tr.cancel = cancel
	tr.logger = slog.New(&captureHandler{tr: tr, dir: s.f.r.opts.Dir})
	return tr
}

// settle records how the test function ended (failure "" for success);
// only the first call counts.
func (tr *testRun) settle(failure string) {
	if tr.settled {
		return
	}
	tr.settled = true
	if failure != "" {
		tr.fail(failure)
	}
	close(tr.done)
}

func (tr *testRun) fail(msg string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.failures = append(tr.failures, msg)
}

func (tr *testRun) log(line string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.output = append(tr.output, line)
}

func (tr *testRun) begin(fl *flight) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.inflight[fl] = struct{}{}
}

func (tr *testRun) finish(fl *flight) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	delete(tr.inflight, fl)
}

// named records which handler a dispatch runs.
func (tr *testRun) named(fl *flight, handler string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	fl.handler = handler
}

func (tr *testRun) handlerTimedOut(fl *flight, d time.Duration) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.timeouts = append(tr.timeouts, fmt.Sprintf("%s timed out after %s", fl, d))
}

// flights describes the handlers that timed out and the dispatches still
// running.
func (tr *testRun) flights() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := append([]string{}, tr.timeouts...)
	var running []string
	for fl := range tr.inflight {
		running = append(running, fl.String()+" was still running")
	}
	sort.Strings(running)
	return append(out, running...)
}

func (tr *testRun) result() *result {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return &result{
		name:     tr.tc.name,
		failures: append([]string{}, tr.failures...),
		output:   append([]string{}, tr.output...),
	}
}

// result is what the report shows of one test.
type result struct {
	name     string
	failures []string
	output   []string
	timedOut bool // the session had to be ended
}

func (r *result) failed() bool { return len(r.failures) > 0 }

// timeout puts the timeout first: it explains whatever else went wrong.
func (r *result) timeout(where string, d time.Duration, flights []string) {
	msg := fmt.Sprintf("%s: test timed out after %s (the handler timeout; set it with --handler-timeout)", where, d)
	for _, f := range flights {
		msg += "\n" + f
	}
	r.failures = append([]string{msg}, r.failures...)
}

// write prints "ok NAME" or "FAIL NAME: message", any further failures,
// then the test's output, indented.
func (r *result) write(w io.Writer) {
	var b strings.Builder
	if len(r.failures) == 0 {
		fmt.Fprintf(&b, "ok %s\n", r.name)
	} else {
		fmt.Fprintf(&b, "FAIL %s: %s\n", r.name, indentRest(r.failures[0]))
		for _, f := range r.failures[1:] {
			fmt.Fprintf(&b, "    also: %s\n", indentRest(f))
		}
	}
	for _, line := range r.output {
		fmt.Fprintf(&b, "    %s\n", indentRest(line))
	}
	_, _ = io.WriteString(w, b.String())
}
