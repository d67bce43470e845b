package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dop251/goja"

	"github.com/outbound-dev/outbound/handlers/chain"
	"github.com/outbound-dev/outbound/internal/testlog"
)

// named is a call of an outboundHandlers method of concurrent.js for
// instance inst, with ctx.params.ms = ms.
func named(name, inst string, ms int, req *http.Request) Call {
	if req == nil {
		req = httptest.NewRequest("GET", "http://x.test/", nil)
	}
	c := call("default", chain.HandlerNamed, name, req)
	c.InstanceID = inst
	c.Params = json.RawMessage(fmt.Sprintf(`{"ms":%d}`, ms))
	return c
}

// gateServer answers each request with its path once the test opens the
// gate, and records arrivals and requests whose context ended unanswered.
type gateServer struct {
	*httptest.Server
	open      chan struct{}
	arrived   atomic.Int64
	mu        sync.Mutex
	cancelled []string
}

func newGate(t *testing.T) *gateServer {
	g := &gateServer{open: make(chan struct{})}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.arrived.Add(1)
		select {
		case <-g.open:
			_, _ = io.WriteString(w, "ok"+r.URL.Path)
		case <-r.Context().Done():
			g.mu.Lock()
			g.cancelled = append(g.cancelled, r.URL.Path)
			g.mu.Unlock()
		}
	}))
	t.Cleanup(g.Close)
	t.Cleanup(g.release) // before Close: blocked handlers must return
	return g
}

func (g *gateServer) release() {
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

func (g *gateServer) wasCancelled(path string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range g.cancelled {
		if p == path {
			return true
		}
	}
	return false
}

// waitFor polls cond until it holds, failing after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// invokeAsync runs c in the background; the channel gets the body or the
// error.
func invokeAsync(pl *Pool, ctx context.Context, c Call) <-chan string {
	out := make(chan string, 1)
	go func() {
		resp, err := pl.Invoke(ctx, c)
		if err != nil {
			out <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out <- string(b)
	}()
	return out
}

func mustBody(t *testing.T, pl *Pool, c Call, want string) {
	t.Helper()
	resp, err := pl.Invoke(context.Background(), c)
	if err != nil {
		t.Fatalf("%s for %s: %v", c.Handler.Key, c.InstanceID, err)
	}
	if got := readBody(t, resp); got != want {
		t.Fatalf("%s for %s: body %q, want %q", c.Handler.Key, c.InstanceID, got, want)
	}
}

func newTransport(t *testing.T) *http.Transport {
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// The starvation case of issue 14: instance A has 24 requests in handlers
// that await a 3 s timer; instance B's trivial request, and A's own, must
// not wait for them. With runtimes held by awaiting invocations, two
// runtimes would serve B after 36 s, past the 30 s timeout.
func TestAwaitingInvocationsHoldNoRuntime(t *testing.T) {
	pl := newPool(t, "concurrent.js", PoolOptions{Size: 2, Timeout: 30 * time.Second})
	var finished atomic.Int64
	var results []<-chan string
	for range 24 {
		ch := make(chan string, 1)
		src := invokeAsync(pl, context.Background(), named("sleep", "A", 3000, nil))
		go func() { s := <-src; finished.Add(1); ch <- s }()
		results = append(results, ch)
	}
	waitFor(t, "A's 24 invocations to begin", func() bool {
		return int64(pl.Stats().Suspended)+finished.Load() >= 24
	})
	mustBody(t, pl, named("fast", "B", 0, nil), "fast")
	mustBody(t, pl, named("fastLater", "B", 0, nil), "fast")
	mustBody(t, pl, named("fast", "A", 0, nil), "fast")
	for i, ch := range results {
		if got := <-ch; got != "slept" {
			t.Errorf("A's invocation %d: %s", i, got)
		}
	}
}

// The same with I/O the test holds open, so that it is certain all of A's
// invocations are still waiting while B is served.
func TestAwaitingFetchHoldsNoRuntime(t *testing.T) {
	g := newGate(t)
	pl := newPool(t, "concurrent.js", PoolOptions{Size: 2, Timeout: 60 * time.Second, Fetch: newTransport(t)})
	var results []<-chan string
	for i := range 24 {
		req := httptest.NewRequest("GET", fmt.Sprintf("%s/a%d", g.URL, i), nil)
		results = append(results, invokeAsync(pl, context.Background(), named("gate", "A", 0, req)))
	}
	waitFor(t, "A's 24 fetches to reach the upstream", func() bool { return g.arrived.Load() == 24 })
	mustBody(t, pl, named("fast", "B", 0, nil), "fast")
	mustBody(t, pl, named("fastLater", "B", 0, nil), "fast")
	mustBody(t, pl, named("fast", "A", 0, nil), "fast")
	if st := pl.Stats(); st.Suspended != 24 || st.Waiting != 0 {
		t.Fatalf("stats while A waits: %+v, want 24 suspended", st)
	}
	g.release()
	for i, ch := range results {
		if got, want := <-ch, fmt.Sprintf("gate ok/a%d", i); got != want {
			t.Errorf("A's invocation %d: %q, want %q", i, got, want)
		}
	}
}

// A CPU-bound noisy neighbour: instance A keeps 150 handlers that each spin
// for 40 ms queued on two runtimes, about 3 s of backlog. Instance B's
// requests take their turn after at most one of A's per runtime, so they
// all finish inside a 2 s timeout; a first-come queue would time them out.
func TestNoisyNeighbour(t *testing.T) {
	pl := newPool(t, "concurrent.js", PoolOptions{Size: 2, Timeout: 2 * time.Second})
	for _, tc := range []struct{ hog, fast string }{{"hog", "fast"}, {"hogLater", "fastLater"}} {
		t.Run(tc.hog, func(t *testing.T) {
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var ok, failed atomic.Int64
			for range 150 {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						resp, err := pl.Invoke(context.Background(), named(tc.hog, "A", 40, nil))
						if err != nil {
							failed.Add(1)
							continue
						}
						resp.Body.Close()
						ok.Add(1)
					}
				})
			}
			waitFor(t, "A's backlog", func() bool { return pl.Stats().Waiting+pl.Stats().Suspended >= 100 })
			for i := range 20 {
				resp, err := pl.Invoke(context.Background(), named(tc.fast, "B", 0, nil))
				if err != nil {
					t.Fatalf("B's request %d while A hogs: %v", i, err)
				}
				if got := readBody(t, resp); got != "fast" {
					t.Fatalf("B's request %d: %q", i, got)
				}
			}
			close(stop)
			wg.Wait()
			if ok.Load() == 0 {
				t.Errorf("none of A's own requests got through (%d failed)", failed.Load())
			}
			t.Logf("A: %d served, %d failed (timed out waiting or busy)", ok.Load(), failed.Load())
		})
	}
}

// A runaway holds the runtime it runs on until its timeout and grace have
// passed; another instance is served by the other runtime meanwhile.
func TestRunawayHoldsOneRuntime(t *testing.T) {
	pl := newPool(t, "concurrent.js", PoolOptions{Size: 2, Timeout: 3 * time.Second})
	runaway := invokeAsync(pl, context.Background(), named("forever", "A", 0, nil))
	waitFor(t, "the runaway to start", func() bool { return pl.Stats().Suspended == 1 })
	for range 5 {
		mustBody(t, pl, named("fast", "B", 0, nil), "fast")
		mustBody(t, pl, named("fastLater", "B", 0, nil), "fast")
	}
	if got := <-runaway; !strings.Contains(got, ErrTimeout.Error()) {
		t.Fatalf("runaway: %s", got)
	}
	waitFor(t, "a replacement runtime", func() bool { return pl.Stats().Runtimes == 2 })
	mustBody(t, pl, named("fast", "A", 0, nil), "fast")
}

// Invocations interleaved on one runtime each keep their request, ctx and
// console attribution across awaits.
func TestInterleavedInvocationsStayApart(t *testing.T) {
	g := newGate(t)
	g.release()
	logs := &testlog.Buffer{}
	pl := newPool(t, "concurrent.js", PoolOptions{Size: 1, Fetch: newTransport(t),
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	const n = 8
	var results []<-chan string
	for i := range n {
		req := httptest.NewRequest("GET", fmt.Sprintf("%s/p%d", g.URL, i), nil)
		// Later starters wake first, so the runs interleave.
		results = append(results, invokeAsync(pl, context.Background(), named("whoami", fmt.Sprintf("sbx-%d", i), 5*(n-i), req)))
	}
	for i, ch := range results {
		want := fmt.Sprintf("sbx-%d %s/p%d ok/p%d", i, g.URL, i, i)
		if got := <-ch; got != want {
			t.Errorf("invocation %d: %q, want %q", i, got, want)
		}
	}
	out := logs.String()
	for i := range n {
		line := fmt.Sprintf(`msg="after the wait sbx-%d" source=console instance=sbx-%d`, i, i)
		if !strings.Contains(out, line) {
			t.Errorf("no console line %q in\n%s", line, out)
		}
	}
}

// An invocation whose caller hangs up ends at once, its fetch aborted,
// while another one suspended on the same runtime goes on.
func TestCancelledInvocationLeavesOthers(t *testing.T) {
	g := newGate(t)
	pl := newPool(t, "concurrent.js", PoolOptions{Size: 1, Fetch: newTransport(t)})
	ctxA, cancelA := context.WithCancel(context.Background())
	a := invokeAsync(pl, ctxA, named("gate", "A", 0, httptest.NewRequest("GET", g.URL+"/a", nil)))
	b := invokeAsync(pl, context.Background(), named("gate", "B", 0, httptest.NewRequest("GET", g.URL+"/b", nil)))
	waitFor(t, "both fetches", func() bool { return g.arrived.Load() == 2 })
	cancelA()
	if got := <-a; !strings.Contains(got, context.Canceled.Error()) {
		t.Fatalf("A: %s", got)
	}
	waitFor(t, "A's fetch to be aborted", func() bool { return g.wasCancelled("/a") })
	if g.wasCancelled("/b") {
		t.Fatal("B's fetch was aborted too")
	}
	g.release()
	if got := <-b; got != "gate ok/b" {
		t.Fatalf("B: %s", got)
	}
}

// panicHook installs __testPanic, a binding that panics with a Go value, in
// the runtimes of pools made during the test.
func panicHook(t *testing.T) {
	installTestHooks = func(vm *goja.Runtime) {
		_ = vm.Set("__testPanic", func(msg string) { panic("test hook: " + msg) })
	}
	t.Cleanup(func() { installTestHooks = nil })
}

// A Go panic on a runtime's loop, or a stack overflow, under concurrency:
// the invocation at fault gets a HandlerError (a 500), with the stack in
// the log for a panic; the runtime is retired; invocations suspended on it
// that did no I/O run again elsewhere and succeed, those that did get
// ErrRecycled; nothing waits forever and the pool serves on.
func TestLoopPanicUnderConcurrency(t *testing.T) {
	panicHook(t)
	g := newGate(t)
	logs := &testlog.Buffer{}
	pl := newPool(t, "concurrent.js", PoolOptions{Size: 1, Timeout: 30 * time.Second, Fetch: newTransport(t),
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	for round, tc := range []struct {
		handler, want string
		stack         bool
	}{
		{"boom", "the runtime crashed (test hook: on purpose)", true},
		{"boomLater", "the runtime crashed (test hook: on purpose, in a timer's job)", true},
		{"overflow", "Maximum call stack size exceeded", false},
	} {
		t.Run(tc.handler, func(t *testing.T) {
			var io, quiet []<-chan string
			before := g.arrived.Load()
			mark := len(logs.String())
			for i := range 3 {
				req := httptest.NewRequest("GET", fmt.Sprintf("%s/r%d-%d", g.URL, round, i), nil)
				io = append(io, invokeAsync(pl, context.Background(), named("gate", "io", 0, req)))
				quiet = append(quiet, invokeAsync(pl, context.Background(), named("waitSignal", "quiet", round, nil)))
			}
			waitFor(t, "six suspended invocations", func() bool {
				return g.arrived.Load() == before+3 && pl.Stats().Suspended == 6
			})
			_, err := pl.Invoke(context.Background(), named(tc.handler, "culprit", 0, nil))
			var he *HandlerError
			if !errors.As(err, &he) || !strings.Contains(he.Msg, tc.want) {
				t.Fatalf("%s: err %v, want a HandlerError containing %q", tc.handler, err, tc.want)
			}
			for i, ch := range io {
				if got := <-ch; !strings.Contains(got, ErrRecycled.Error()) {
					t.Errorf("invocation %d that did I/O: %q, want ErrRecycled", i, got)
				}
			}
			// The quiet ones run again on the replacement, where they wait
			// for its signal.
			mustBody(t, pl, named("fireSignal", "quiet", round, nil), "fired")
			for i, ch := range quiet {
				if got := <-ch; got != "signalled" {
					t.Errorf("invocation %d without I/O: %q, want it run again", i, got)
				}
			}
			mustBody(t, pl, named("fast", "after", 0, nil), "fast")
			out := logs.String()[mark:]
			if tc.stack && (!strings.Contains(out, "test hook: on purpose") || !strings.Contains(out, "goroutine ") ||
				!strings.Contains(out, "engine.(*isolate).guard")) {
				t.Errorf("no panic with a stack trace in the log:\n%s", out)
			}
			if !strings.Contains(out, "others_retried=3 others_failed=3") {
				t.Errorf("the retirement was not logged with what happened to the others:\n%s", out)
			}
		})
	}
}

// panicky is a Fetch whose RoundTrip panics, as a buggy transport might.
type panicky struct{}

func (panicky) RoundTrip(*http.Request) (*http.Response, error) { panic("transport bug") }

// A panic in the RoundTripper, on the caller's goroutine (a returned fetch)
// or on a fetch's own, fails that request only.
func TestFetchPanic(t *testing.T) {
	pl := newPool(t, "concurrent.js", PoolOptions{Size: 1, Fetch: panicky{}})
	for _, c := range []Call{
		call("default", chain.HandlerNamed, "gate", httptest.NewRequest("GET", "http://x.test/", nil)),
		named("gate", "A", 0, nil),
	} {
		_, err := pl.Invoke(context.Background(), c)
		var he *HandlerError
		if !errors.As(err, &he) || !strings.Contains(he.Msg, "fetch panicked: transport bug") {
			t.Fatalf("err %v, want a HandlerError about the panic", err)
		}
	}
	pl2 := newPool(t, "cred.js", PoolOptions{Size: 1, Fetch: panicky{}})
	_, err := pl2.Invoke(context.Background(), call("default", chain.HandlerNamed, "passthrough", httptest.NewRequest("GET", "http://x.test/", nil)))
	var he *HandlerError
	if !errors.As(err, &he) || !strings.Contains(he.Msg, "fetch panicked: transport bug") {
		t.Fatalf("returned fetch: err %v, want a HandlerError about the panic", err)
	}
	mustBody(t, pl, named("fast", "A", 0, nil), "fast")
}

// Too many waiting invocations of one instance are refused at once.
func TestWaitingIsBoundedPerInstance(t *testing.T) {
	pl := newPool(t, "concurrent.js", PoolOptions{Size: 1, MaxWaiting: 2, Timeout: 5 * time.Second})
	// A runaway holds the only runtime (until its timeout); two of A's
	// invocations wait and a third is refused, while B may still queue.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runaway := invokeAsync(pl, ctx, named("forever", "A", 0, nil))
	waitFor(t, "the runaway to start", func() bool { return pl.Stats().Suspended == 1 })
	w1 := invokeAsync(pl, ctx, named("fast", "A", 0, nil))
	w2 := invokeAsync(pl, ctx, named("fast", "A", 0, nil))
	waitFor(t, "two waiting", func() bool { return pl.Stats().Waiting == 2 })
	if _, err := pl.Invoke(ctx, named("fast", "A", 0, nil)); !errors.Is(err, ErrBusy) {
		t.Fatalf("third waiting invocation of A: %v, want ErrBusy", err)
	}
	b := invokeAsync(pl, ctx, named("fast", "B", 0, nil))
	waitFor(t, "B waiting", func() bool { return pl.Stats().Waiting == 3 })
	cancel()
	// The runaway's caller is the one running it: it hears once the
	// runaway is stopped, at its timeout.
	for _, ch := range []<-chan string{w1, w2, b, runaway} {
		if got := <-ch; !strings.Contains(got, context.Canceled.Error()) {
			t.Errorf("after cancel: %q", got)
		}
	}
}

// blockingBody is an upload that never ends until closed.
type blockingBody struct{ done chan struct{} }

func (b *blockingBody) Read([]byte) (int, error) { <-b.done; return 0, io.ErrUnexpectedEOF }
func (b *blockingBody) Close() error             { return nil }

// The first I/O of an invocation, which its caller may do itself, never
// holds the answer past the timeout: neither a fetch the upstream does not
// answer nor a read of an upload that does not come.
func TestFirstIOEndsAtTimeout(t *testing.T) {
	g := newGate(t)
	pl := newPool(t, "concurrent.js", PoolOptions{Size: 1, Timeout: 300 * time.Millisecond, Fetch: newTransport(t)})
	body := &blockingBody{done: make(chan struct{})}
	t.Cleanup(func() { close(body.done) })
	upload := httptest.NewRequest("POST", "http://x.test/", nil)
	upload.Body = body
	for _, c := range []Call{
		named("gate", "A", 0, httptest.NewRequest("GET", g.URL+"/never", nil)),
		named("readBody", "A", 0, upload),
	} {
		got := invokeAsync(pl, context.Background(), c)
		select {
		case s := <-got:
			if !strings.Contains(s, ErrTimeout.Error()) {
				t.Fatalf("%s: %s, want a timeout", c.Handler.Key, s)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no answer long after the timeout", c.Handler.Key)
		}
	}
	waitFor(t, "the fetch to be aborted", func() bool { return g.wasCancelled("/never") })
	mustBody(t, pl, named("fast", "A", 0, nil), "fast")
}

// A's first fetch, which A's own caller sends, ends at A's timeout even
// while another instance's code holds the runtime, so that no job of A can
// run: A is answered before B lets go, not when B is stopped.
func TestFirstIOEndsAtTimeoutWhileRuntimeHeld(t *testing.T) {
	held, release := make(chan struct{}), make(chan struct{})
	installTestHooks = func(vm *goja.Runtime) {
		_ = vm.Set("__testHold", func() { close(held); <-release })
	}
	t.Cleanup(func() { installTestHooks = nil })
	g := newGate(t)
	pl := newPool(t, "concurrent.js", PoolOptions{Size: 1, Timeout: 2 * time.Second, Fetch: newTransport(t)})
	var once sync.Once
	letGo := func() { once.Do(func() { close(release) }) }
	t.Cleanup(letGo) // before the pool closes

	a := invokeAsync(pl, context.Background(), named("gate", "A", 0, httptest.NewRequest("GET", g.URL+"/never", nil)))
	waitFor(t, "A's fetch to reach the upstream", func() bool { return g.arrived.Load() == 1 })
	b := invokeAsync(pl, context.Background(), named("hold", "B", 0, nil))
	<-held
	select {
	case got := <-a:
		if !strings.Contains(got, ErrTimeout.Error()) {
			t.Fatalf("A: %s, want a timeout", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("A was not answered while B held the runtime")
	}
	waitFor(t, "A's fetch to be aborted", func() bool { return g.wasCancelled("/never") })
	letGo()
	<-b
	mustBody(t, pl, named("fast", "A", 0, nil), "fast")
}
