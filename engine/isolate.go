package engine

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/dlclark/regexp2/v2"
	"github.com/dop251/goja"
	"github.com/dop251/goja_nodejs/eventloop"

	"github.com/outbound-dev/outbound/handlers/chain"
	"github.com/outbound-dev/outbound/jsapi"
)

// maxCallStackSize bounds JS recursion; past it the call fails with a stack
// overflow and the runtime is replaced.
const maxCallStackSize = 2000

// regexMatchTimeout bounds one backtracking regexp match. goja cannot
// interrupt a match and treats a timed-out match as no match, so this is a
// backstop that frees the runtime's goroutine; the handler timeout still
// fails the invocation.
const regexMatchTimeout = 2 * time.Second

func init() {
	// regexp2 reads this when goja compiles a backtracking regexp; goja has
	// no per-runtime setting for it.
	regexp2.DefaultMatchTimeout = regexMatchTimeout
}

// isolate is one goja runtime with its event loop, owned by one goroutine.
type isolate struct {
	loop    *eventloop.EventLoop
	vm      *goja.Runtime
	realm   *jsapi.Realm
	prog    *Program
	classes map[string]*classTable
	blocked *handler

	dead  atomic.Bool
	ended chan struct{} // closed when the loop goroutine has finished

	// The current invocation, handed to the loop through RunOnLoop.
	call  *Call
	ctx   context.Context
	seq   uint64
	done  chan result
	timer *time.Timer
	runFn func(*goja.Runtime)

	cur            invocation // loop-owned
	onFulfilled    goja.Value
	onRejected     goja.Value
	onFetchSettled func()
}

type result struct {
	seq   uint64
	resp  *http.Response
	err   error
	fatal bool
}

// newIsolate builds a runtime, evaluates the program in it and reads its
// classes. The caller starts the loop with start.
func newIsolate(p *Program, cfg jsapi.Config, evalTimeout time.Duration) (*isolate, []chain.ClassSpec, error) {
	iso := &isolate{prog: p, done: make(chan result, 1), ended: make(chan struct{})}
	iso.loop = jsapi.NewLoop()
	var vm *goja.Runtime
	iso.loop.Run(func(v *goja.Runtime) { vm = v }) // borrow the runtime; the loop is idle
	iso.vm = vm
	vm.SetMaxCallStackSize(maxCallStackSize)
	cfg.OnUncatchable = func(err error) { iso.retire() }
	realm, err := jsapi.Install(vm, iso.loop, cfg)
	if err != nil {
		return nil, nil, err
	}
	iso.realm = realm
	iso.runFn = iso.run
	iso.initCallbacks()

	t := time.AfterFunc(evalTimeout, func() { vm.Interrupt(errEvalTimeout) })
	modV, err := vm.RunProgram(p.prg)
	if !t.Stop() {
		return nil, nil, &ScriptError{File: p.info.Path, Line: 1, Col: 1, Msg: fmt.Sprintf("module evaluation did not finish within %s", evalTimeout)}
	}
	realm.End(nil) // timers and fetches begun at module scope do not outlive it
	if err != nil {
		return nil, nil, p.evalError(err)
	}
	_ = modV
	mod, ok := vm.Get(bundleGlobal).(*goja.Object)
	if !ok {
		return nil, nil, &ScriptError{File: p.info.Path, Line: 1, Col: 1, Msg: "the module has no exports"}
	}
	intro, err := vm.RunProgram(introspect)
	if err != nil {
		return nil, nil, fmt.Errorf("introspect: %w", err)
	}
	introFn, _ := goja.AssertFunction(intro)
	descV, err := introFn(goja.Undefined(), mod)
	if err != nil {
		return nil, nil, p.evalError(err)
	}
	desc := descV.ToObject(vm)
	if err := iso.readBlocked(desc, mod); err != nil {
		return nil, nil, err
	}
	configs, err := iso.readClasses(desc)
	if err != nil {
		return nil, nil, err
	}
	return iso, configs, nil
}

var errEvalTimeout = errors.New("module evaluation timed out")

// evalError turns an error from running module code into a ScriptError.
func (p *Program) evalError(err error) error {
	var ex *goja.Exception
	if errors.As(err, &ex) {
		return p.exceptionError(p.info.Path, ex)
	}
	var so *goja.StackOverflowError
	if errors.As(err, &so) {
		return &ScriptError{File: p.info.Path, Line: 1, Col: 1, Msg: "maximum call stack size exceeded at module evaluation"}
	}
	return &ScriptError{File: p.info.Path, Line: 1, Col: 1, Msg: err.Error()}
}

// start runs the loop on its own goroutine until the isolate is retired.
func (iso *isolate) start(onExit func()) {
	go func() {
		defer close(iso.ended)
		defer onExit()
		iso.loop.StartInForeground()
		iso.loop.Terminate()
		iso.realm.Wait()
	}()
}

// retire stops the loop after its current job. Safe from any goroutine.
func (iso *isolate) retire() {
	iso.dead.Store(true)
	iso.loop.StopNoWait()
	// StopNoWait does nothing to a loop that has not started yet; a queued
	// job stops it once it does.
	iso.loop.RunOnLoop(func(*goja.Runtime) { iso.loop.StopNoWait() })
}

// kill interrupts running JS and retires the isolate: it is never reused.
func (iso *isolate) kill() {
	iso.vm.Interrupt(ErrTimeout)
	iso.retire()
}
