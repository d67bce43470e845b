package policytest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dop251/goja"

	"github.com/outbound-dev/outbound/engine"
	"github.com/outbound-dev/outbound/jsapi"
)

// testCase is one test() of a file.
type testCase struct {
	name  string
	fn    goja.Callable
	where string // where test() was called
}

// session is one evaluation of a test file in its own runtime, with the
// Web APIs and the outbound:test natives. Its event loop runs on its own
// goroutine; a test that times out ends the session, and the file goes on
// in a new one.
type session struct {
	f      *fileRun
	bundle *engine.Bundle
	loop   *jsapi.SerialLoop
	vm     *goja.Runtime
	realm  *jsapi.Realm

	tests       []*testCase
	fileMocks   []*mock // mockFetch at the top level: every test sees them
	registering bool
	cur         *testRun // loop-owned: the test running now

	dead      chan struct{} // closed when the session is ended
	ended     chan struct{} // closed when its loop goroutine is done
	closeOnce sync.Once
}

var (
	errSessionClosed = errors.New("the test ended")
	errEvalTimeout   = errors.New("evaluation timed out")
)

// newSession evaluates the test file, which registers its tests, and starts
// the session's loop.
func (f *fileRun) newSession(b *engine.Bundle, prg *goja.Program) (*session, error) {
	s := &session{f: f, bundle: b, dead: make(chan struct{}), ended: make(chan struct{})}
	s.loop = jsapi.NewSerialLoop() // idle until Start: the runtime is ours meanwhile
	s.vm = jsapi.NewRuntime()
	realm, err := jsapi.Install(s.vm, s.loop, jsapi.Config{
		Fetch:  f.router,
		Logger: slog.New(&captureHandler{current: f.current, dir: f.r.opts.Dir}),
	})
	if err != nil {
		return nil, err
	}
	s.realm = realm
	s.installNatives()

	sc := realm.Begin(context.Background(), nil, "", "", nil)
	realm.Enter(sc)
	s.registering = true
	t := time.AfterFunc(f.timeout, func() { s.vm.Interrupt(errEvalTimeout) })
	_, err = s.vm.RunProgram(prg)
	inTime := t.Stop()
	s.registering = false
	realm.End(sc, nil)
	realm.Leave()
	if !inTime {
		return nil, fmt.Errorf("evaluating the test file did not finish within %s", f.timeout)
	}
	if err != nil {
		var ex *goja.Exception
		if errors.As(err, &ex) {
			return nil, errors.New(f.r.relErr(b.Locate(ex)))
		}
		return nil, fmt.Errorf("evaluating the test file: %w", err)
	}
	s.loop.Start()
	go func() {
		defer close(s.ended)
		<-s.loop.Done()
		s.realm.Wait()
	}()
	return s, nil
}

// onLoop runs fn on the loop, in tr's scope while the test runs: JS that
// fn calls is the test's (its console lines, its fetches).
func (s *session) onLoop(tr *testRun, fn func()) bool {
	return s.loop.Run(func() {
		if sc := tr.scope; sc != nil && !sc.Ended() {
			s.realm.Enter(sc)
			defer s.realm.Leave()
		}
		fn()
	})
}

// close ends the session: running JS is interrupted, waiting requests are
// refused, and the loop stops.
func (s *session) close() {
	s.closeOnce.Do(func() {
		close(s.dead)
		s.vm.Interrupt(errSessionClosed)
		s.loop.Stop()
	})
	<-s.ended
}

func (s *session) installNatives() {
	vm := s.vm
	nat := vm.NewObject()
	_ = nat.Set("register", func(call goja.FunctionCall) goja.Value {
		if !s.registering {
			panic(vm.NewTypeError("test() must be called at the top level of a test file, not inside a test"))
		}
		name := call.Argument(0).String()
		fn, _ := goja.AssertFunction(call.Argument(1))
		for _, tc := range s.tests {
			if tc.name == name {
				panic(vm.NewTypeError(fmt.Sprintf("test(%q): a test of this name already exists in the file", name)))
			}
		}
		s.tests = append(s.tests, &testCase{name: name, fn: fn, where: s.where()})
		return goja.Undefined()
	})
	_ = nat.Set("where", func(goja.FunctionCall) goja.Value { return vm.ToValue(s.where()) })
	_ = nat.Set("dispatch", s.dispatchJS)
	_ = nat.Set("decide", s.decideJS)
	_ = nat.Set("mock", s.mockJS)
	_ = vm.Set("__outbound_test", nat)
}

// where is file:line:col of the innermost frame of the running JS that is
// in a file of the user's, through the source map.
func (s *session) where() string {
	for _, fr := range s.vm.CaptureCallStack(0, nil) {
		pos := fr.Position()
		if loc := s.location(pos.Filename, pos.Line, pos.Column); loc != "" {
			return loc
		}
	}
	return ""
}

// location renders a source-mapped position, or "" for a virtual module,
// the bundle's own glue or a native frame.
func (s *session) location(file string, line, col int) string {
	if line <= 0 || file == "" || engine.IsVirtual(file) {
		return ""
	}
	p := s.bundle.SourcePath(file)
	if p == s.bundle.Name {
		return ""
	}
	return fmt.Sprintf("%s:%d:%d", s.f.r.rel(p), line, col+engine.ColumnFix)
}

// stackFrame matches one frame of goja's Error.stack: "at fn (file:L:C(pc))".
var stackFrame = regexp.MustCompile(`at (?:.* \()?(.+):(\d+):(\d+)\(\d+\)\)?\s*$`)

// stackWhere is the first user frame of an Error's stack text.
func (s *session) stackWhere(stack string) string {
	for _, line := range strings.Split(stack, "\n") {
		m := stackFrame.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		l, _ := strconv.Atoi(m[2])
		c, _ := strconv.Atoi(m[3])
		if loc := s.location(m[1], l, c); loc != "" {
			return loc
		}
	}
	return ""
}

// describe turns what a test threw into "file:line:col: message".
func (s *session) describe(v goja.Value, ex *goja.Exception, fallback string) string {
	where, msg := s.explainThrown(v, ex)
	if where == "" {
		where = fallback
	}
	return where + ": " + msg
}

// explainThrown says what a thrown value is and where it was thrown, when
// that is known.
func (s *session) explainThrown(v goja.Value, ex *goja.Exception) (where, msg string) {
	if o, ok := v.(*goja.Object); ok {
		if w := o.Get("where"); w != nil && !goja.IsUndefined(w) {
			where = w.String()
		}
		if m := o.Get("message"); m != nil && !goja.IsUndefined(m) {
			name := "Error"
			if n := o.Get("name"); n != nil && !goja.IsUndefined(n) {
				name = n.String()
			}
			msg = m.String()
			if name != "AssertionError" {
				msg = name + ": " + msg
			}
		}
		if where == "" {
			if st := o.Get("stack"); st != nil && !goja.IsUndefined(st) {
				where = s.stackWhere(st.String())
			}
		}
	}
	if msg == "" {
		msg = "threw " + jsapi.Describe(v)
		if v != nil && !goja.IsUndefined(v) && !goja.IsNull(v) {
			msg += ": " + v.String()
		}
	}
	if where == "" && ex != nil {
		for _, fr := range ex.Stack() {
			pos := fr.Position()
			if where = s.location(pos.Filename, pos.Line, pos.Column); where != "" {
				break
			}
		}
	}
	return where, msg
}

// errorAt makes a JS Error whose where is the given location, so a failed
// dispatch is reported where it was called.
func (s *session) errorAt(where, msg string) goja.Value {
	e, err := s.vm.New(s.vm.Get("Error"), s.vm.ToValue(msg))
	if err != nil {
		return s.vm.ToValue(msg)
	}
	_ = e.DefineDataProperty("where", s.vm.ToValue(where), goja.FLAG_FALSE, goja.FLAG_TRUE, goja.FLAG_FALSE)
	return e
}

// await calls done with v's settled value: at once for a value or a
// settled promise, else when it settles.
func (s *session) await(v goja.Value, done func(val goja.Value, rejected bool)) {
	o, ok := v.(*goja.Object)
	if !ok || o.ExportType() != typePromise {
		done(v, false)
		return
	}
	p := o.Export().(*goja.Promise)
	switch p.State() {
	case goja.PromiseStateFulfilled:
		done(p.Result(), false)
		return
	case goja.PromiseStateRejected:
		done(p.Result(), true)
		return
	}
	then, _ := goja.AssertFunction(o.Get("then"))
	_, err := then(o,
		s.vm.ToValue(func(call goja.FunctionCall) goja.Value { done(call.Argument(0), false); return goja.Undefined() }),
		s.vm.ToValue(func(call goja.FunctionCall) goja.Value { done(call.Argument(0), true); return goja.Undefined() }))
	if err != nil {
		done(s.vm.ToValue(err.Error()), true)
	}
}

// run runs one test and returns its result. A test that does not finish
// within the timeout is failed and its session ended.
func (s *session) run(tc *testCase) *result {
	tr := newTestRun(s, tc)
	s.f.cur.Store(tr)
	defer s.f.cur.Store(nil)
	start := time.Now()
	started := s.loop.Run(func() { s.start(tr) })
	timer := time.NewTimer(s.f.timeout)
	defer timer.Stop()
	finished := false
	if started {
		select {
		case <-tr.done:
			finished = true
		case <-timer.C:
		}
	}
	tr.cancel()
	if finished {
		end := make(chan struct{})
		if s.loop.Run(func() { s.end(tr); close(end) }) {
			select {
			case <-end:
			case <-s.ended:
			}
		}
	} else {
		s.close()
	}
	res := tr.result()
	if !started {
		res.failures = append(res.failures, tc.where+": the test's runtime had stopped")
	} else if !finished || time.Since(start) >= s.f.timeout {
		res.timeout(tc.where, s.f.timeout, tr.flights())
		res.timedOut = !finished
	}
	return res
}

// start calls the test function on the loop.
func (s *session) start(tr *testRun) {
	s.cur = tr
	tr.scope = s.realm.Begin(tr.ctx, tr.logger, "", "", tr)
	s.realm.Enter(tr.scope)
	defer s.realm.Leave()
	v, err := tr.tc.fn(goja.Undefined())
	if err != nil {
		var ie *goja.InterruptedError
		if errors.As(err, &ie) {
			return // the test timed out; run reports it
		}
		var ex *goja.Exception
		if errors.As(err, &ex) {
			tr.settle(s.describe(ex.Value(), ex, tr.tc.where))
		} else {
			tr.settle(tr.tc.where + ": " + err.Error())
		}
		return
	}
	s.await(v, func(val goja.Value, rejected bool) {
		if rejected {
			tr.settle(s.describe(val, nil, tr.tc.where))
		} else {
			tr.settle("")
		}
	})
}

// end finishes a test on the loop: its timers stop, and the bodies of the
// responses it got and did not read are closed.
func (s *session) end(tr *testRun) {
	tr.ended = true
	if s.cur == tr {
		s.cur = nil
	}
	s.realm.End(tr.scope, nil)
	for _, r := range tr.resps {
		_ = r.Body.Close()
	}
	tr.resps = nil
}

// closeUnsent closes a response that never reached JS.
func closeUnsent(resp *http.Response) {
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
}
