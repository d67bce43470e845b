package engine

// One goja runtime and the jobs queued for it. Many invocations share an
// isolate: one that awaits I/O or a timer holds nothing, and jobs of others
// run meanwhile, as in a Workers isolate. Whichever goroutine owns the
// isolate runs its jobs one at a time: the caller of Invoke for a handler's
// first run when the isolate is idle, the goroutine whose I/O finished when
// nothing else is queued, and otherwise the isolate's own runner goroutine.

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"time"

	"github.com/dlclark/regexp2/v2"
	"github.com/dop251/goja"

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

// isolate is one goja runtime with its module evaluated and its jobs.
type isolate struct {
	pl      *Pool // nil for the scratch runtime Load reads the classes with
	vm      *goja.Runtime
	realm   *jsapi.Realm
	prog    *Program
	classes map[string]*classTable
	blocked *handler

	// Promise reactions and the returned-fetch hook, made once per runtime:
	// they find their invocation through the realm's current scope.
	onFulfilled    goja.Value
	onRejected     goja.Value
	onFetchSettled func(*jsapi.Scope)

	// Guarded by pl.mu.
	owned     bool                     // a goroutine is running jobs on the runtime
	jobs      fairQueue[func()]        // jobs waiting, by instance
	running   *invocation              // whose JS would stop if interrupted now
	runSeq    uint64                   // counts changes of running
	interrupt *invocation              // vm.Interrupt was called to stop this one
	invs      map[*invocation]struct{} // begun here and not ended
	dead      bool
	idleAt    int  // index in pl.idle, or -1
	startNext bool // alternate a waiting start with queued jobs
	wake      chan struct{}

	// Owned by the goroutine running a job: an uncatchable error seen
	// during it, and the scope whose code raised it. The runtime is retired
	// when the job returns.
	fatal      error
	fatalScope *jsapi.Scope
	// The invocation whose first run its own caller is running; its first
	// I/O, and the I/O's cancel, are left for that caller to do once it
	// lets the isolate go.
	inlineStart  *invocation
	callerWork   func()
	callerCancel context.CancelFunc
}

// newIsolate builds a runtime, evaluates the program in it and reads its
// classes. For a pool's isolate the creator owns it until it calls release.
func newIsolate(p *Program, cfg jsapi.Config, evalTimeout time.Duration, pl *Pool) (*isolate, []chain.ClassSpec, error) {
	iso := &isolate{pl: pl, prog: p, idleAt: -1, owned: true, wake: make(chan struct{}, 1)}
	vm := jsapi.NewRuntime()
	iso.vm = vm
	vm.SetMaxCallStackSize(maxCallStackSize)
	cfg.OnUncatchable = func(s *jsapi.Scope, err error) {
		if iso.fatal == nil {
			iso.fatal, iso.fatalScope = err, s
		}
	}
	cfg.Switch = iso.switched
	realm, err := jsapi.Install(vm, iso, cfg)
	if err != nil {
		return nil, nil, err
	}
	iso.realm = realm
	iso.initCallbacks()
	if installTestHooks != nil {
		installTestHooks(vm)
	}

	// Module code runs in a scope of its own: timers and fetches begun at
	// module scope do not outlive it.
	s := realm.Begin(context.Background(), nil, "", "", nil)
	realm.Enter(s)
	defer func() {
		realm.End(s, nil)
		realm.Leave()
	}()
	t := time.AfterFunc(evalTimeout, func() { vm.Interrupt(errEvalTimeout) })
	_, err = vm.RunProgram(p.prg)
	if !t.Stop() {
		return nil, nil, &ScriptError{File: p.info.Path, Line: 1, Col: 1, Msg: fmt.Sprintf("module evaluation did not finish within %s", evalTimeout)}
	}
	if err != nil {
		return nil, nil, p.evalError(err)
	}
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
	if iso.fatal != nil {
		return nil, nil, p.evalError(iso.fatal)
	}
	return iso, configs, nil
}

var errEvalTimeout = errors.New("module evaluation timed out")

// installTestHooks, set only by this package's tests, adds bindings to
// every runtime made after, such as one that panics on purpose.
var installTestHooks func(*goja.Runtime)

// evalError turns an error from running module code into a ScriptError.
func (p *Program) evalError(err error) error {
	var ex *goja.Exception
	if errors.As(err, &ex) {
		return p.exceptionError(ex)
	}
	var so *goja.StackOverflowError
	if errors.As(err, &so) {
		return &ScriptError{File: p.info.Path, Line: 1, Col: 1, Msg: "maximum call stack size exceeded at module evaluation"}
	}
	return &ScriptError{File: p.info.Path, Line: 1, Col: 1, Msg: err.Error()}
}

// Post queues a job (jsapi.Loop). When the isolate is idle the job runs
// here and now, on the goroutine whose I/O or timer finished, which spares
// waking another goroutine to run it.
func (iso *isolate) Post(s *jsapi.Scope, fn func()) bool {
	pl := iso.pl
	if pl == nil {
		return false // the scratch runtime: its jobs never run
	}
	pl.mu.Lock()
	if iso.dead {
		pl.mu.Unlock()
		return false
	}
	if !iso.owned {
		iso.owned = true
		pl.unidle(iso)
		pl.mu.Unlock()
		iso.runJob(fn)
		iso.release()
		return true
	}
	iso.jobs.push(s.Instance(), fn)
	pl.mu.Unlock()
	return true
}

// Go runs the network I/O of a fetch (jsapi.Loop). The first fetch of an
// invocation whose caller is running its first job is left to that
// caller, which would otherwise only wait: it sends the request and runs
// the continuation itself, and no goroutine is started or woken for it.
// (A fetch ends when the invocation does, which its timeout ensures.)
// Anything else gets a goroutine of its own.
func (iso *isolate) Go(s *jsapi.Scope, work func(), cancel context.CancelFunc) {
	if inv := iso.inlineStart; inv != nil && iso.callerWork == nil && s.Owner() == any(inv) {
		iso.callerWork, iso.callerCancel = work, cancel
		return
	}
	go work()
}

// postLocked queues a job for key with pl.mu held, and gets the runner going
// if nobody owns the isolate.
func (iso *isolate) postLocked(key string, fn func()) {
	if iso.dead {
		return
	}
	iso.jobs.push(key, fn)
	if !iso.owned {
		iso.owned = true
		iso.pl.unidle(iso)
		iso.signal()
	}
}

// signal wakes the runner, which owns the isolate from then on. pl.mu held.
func (iso *isolate) signal() {
	select {
	case iso.wake <- struct{}{}:
	default:
	}
}

// release gives the isolate up after a job run outside the runner: to the
// runner if jobs or waiting starts remain, else to the idle list.
func (iso *isolate) release() {
	pl := iso.pl
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if iso.dead {
		return
	}
	if iso.jobs.len() > 0 || pl.waiting.len() > 0 {
		iso.signal()
		return
	}
	iso.owned = false
	pl.pushIdle(iso)
}

// runner is the isolate's own goroutine: woken when it owns the isolate, it
// runs jobs and waiting starts until there are none.
func (iso *isolate) runner() {
	defer iso.pl.workers.Done()
	for range iso.wake {
		iso.drain()
	}
}

func (iso *isolate) drain() {
	pl := iso.pl
	for {
		pl.mu.Lock()
		if iso.dead {
			pl.mu.Unlock()
			return
		}
		var inv *invocation
		if iso.startNext || iso.jobs.len() == 0 {
			inv = pl.nextWaiting()
		}
		if inv != nil {
			iso.beginLocked(inv)
			iso.startNext = false
			pl.mu.Unlock()
			iso.runStart(inv)
			continue
		}
		if fn, ok := iso.jobs.pop(); ok {
			iso.startNext = true
			pl.mu.Unlock()
			iso.runJob(fn)
			continue
		}
		iso.owned = false
		pl.pushIdle(iso)
		pl.mu.Unlock()
		return
	}
}

// runJob runs one job and retires the runtime if it broke it.
func (iso *isolate) runJob(fn func()) {
	if iso.guard(fn) {
		iso.afterJob()
	}
}

// guard runs fn and turns a Go panic into retiring the isolate: the
// invocation whose code was running gets a 500, the process lives on.
func (iso *isolate) guard(fn func()) (ok bool) {
	defer func() {
		if x := recover(); x != nil {
			stack := debug.Stack()
			var blame *invocation
			if iso.pl != nil {
				iso.pl.mu.Lock()
				blame = iso.running
				iso.pl.mu.Unlock()
			}
			iso.pl.log().Error("engine: a Go panic on a runtime's loop; the runtime is retired",
				"panic", fmt.Sprint(x), "stack", string(stack))
			iso.kill(blame, &HandlerError{Msg: fmt.Sprintf("internal error: the runtime crashed (%v); the stack trace is in the log", x)})
			ok = false
		}
	}()
	fn()
	return true
}

// afterJob retires the runtime if the job ran into an uncatchable error.
func (iso *isolate) afterJob() {
	if iso.fatal == nil {
		return
	}
	err, _ := iso.handlerError(iso.fatal)
	iso.kill(iso.current(iso.fatalScope), err)
}

// switched is jsapi's Config.Switch: it records whose code runs, so that a
// timeout interrupts only its own invocation. An Interrupt that code did
// not see before it stopped running is taken back here.
func (iso *isolate) switched(s *jsapi.Scope) {
	pl := iso.pl
	if pl == nil {
		return
	}
	var inv *invocation
	if s != nil {
		if s.Ended() {
			return // leftover code of a finished invocation: charge the job's
		}
		inv, _ = s.Owner().(*invocation)
	}
	pl.mu.Lock()
	if iso.interrupt != nil && iso.interrupt != inv {
		iso.vm.ClearInterrupt()
		iso.interrupt = nil
	}
	iso.running = inv
	iso.runSeq++
	if inv != nil && inv.expired {
		iso.watchLocked(inv) // code of a timed-out invocation runs again
	}
	pl.mu.Unlock()
}

// watchLocked interrupts inv's code, and so retires the isolate, if the
// run of it going on now is still going on after the grace period: inv's
// deadline has passed. A job that merely started shortly before the
// deadline finishes; only a runaway is stopped. pl.mu held.
func (iso *isolate) watchLocked(inv *invocation) {
	seq := iso.runSeq
	pl := iso.pl
	time.AfterFunc(pl.grace(), func() {
		pl.mu.Lock()
		defer pl.mu.Unlock()
		if !iso.dead && iso.running == inv && iso.runSeq == seq {
			iso.interrupt = inv
			iso.vm.Interrupt(ErrTimeout)
		}
	})
}

// beginLocked records that inv runs here. pl.mu held.
func (iso *isolate) beginLocked(inv *invocation) {
	inv.state = stBegun
	inv.iso = iso
	c := inv.c
	inv.scope = iso.realm.Begin(inv.ctx, c.Logger, c.InstanceID, c.Class, inv)
	if iso.invs == nil {
		iso.invs = make(map[*invocation]struct{})
	}
	iso.invs[inv] = struct{}{}
}

// kill retires the isolate at once, on the goroutine that owns it: it broke
// (an interrupted runaway, a stack overflow, a Go panic) or the pool is
// closing. blame, if set, is the invocation at fault and gets err. Every
// other invocation suspended on it either runs again from the start on
// another isolate, when it has not started any I/O and has not been run
// again before, or ends with ErrRecycled. None is left waiting.
func (iso *isolate) kill(blame *invocation, err error) {
	pl := iso.pl
	if pl == nil {
		return
	}
	pl.mu.Lock()
	if iso.dead {
		pl.mu.Unlock()
		return
	}
	iso.dead = true
	iso.owned = false
	pl.unidle(iso)
	close(iso.wake)
	if i := slices.Index(pl.live, iso); i >= 0 {
		pl.live = slices.Delete(pl.live, i, i+1)
	}
	invs := make([]*invocation, 0, len(iso.invs))
	for inv := range iso.invs {
		invs = append(invs, inv)
	}
	iso.invs = nil
	iso.jobs.drain(func(func()) {})
	iso.running, iso.interrupt = nil, nil
	closed := pl.closed
	pl.mu.Unlock()

	retried, failed := 0, 0
	for _, inv := range invs {
		switch {
		case inv == blame:
			iso.lose(inv, err)
		case !closed && inv.retries == 0 && inv.scope != nil && !inv.scope.Touched():
			iso.realm.End(inv.scope, nil)
			pl.retry(inv)
			retried++
		default:
			iso.lose(inv, ErrRecycled)
			failed++
		}
	}
	if !closed {
		attrs := []any{"err", err, "others_retried", retried, "others_failed", failed}
		if blame != nil {
			attrs = append(attrs, "instance", blame.key, "class", blame.c.Class)
		}
		pl.log().Error("engine: runtime retired", attrs...)
	}
	pl.workers.Add(1)
	go func() {
		defer pl.workers.Done()
		iso.realm.Wait() // its fetches and reads see their scopes ended
	}()
	pl.replace()
}

// lose ends inv, which was on a retired isolate, with err.
func (iso *isolate) lose(inv *invocation, err error) {
	if inv.scope != nil {
		iso.realm.End(inv.scope, nil)
	}
	inv.end(nil, err, nil)
}
