package engine

// One invocation: waiting for a runtime, its first run (resolving the
// handler, calling it), settling its promise or returned fetch on the loop,
// its timeout, and classifying its failure.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/dop251/goja"

	"github.com/outbound-dev/outbound/handlers/chain"
	"github.com/outbound-dev/outbound/jsapi"
)

var typePromise = reflect.TypeFor[*goja.Promise]()

// Where an invocation is. Guarded by pl.mu.
const (
	stNew       = iota
	stQueued    // waiting for a runtime
	stBegun     // running or suspended on inv.iso
	stEnded     // its scope has ended; a returned fetch may still be in flight
	stAbandoned // answered while queued, and taken out of the queue
)

type invocation struct {
	pl    *Pool
	c     *Call
	ctx   context.Context
	key   string // the instance: the unit of fairness
	timer *time.Timer
	done  chan struct{} // closed once answered

	// Guarded by pl.mu.
	state    int
	iso      *isolate
	answered bool
	res      result
	fetching bool // res.fetch is being sent by the caller
	timedOut bool // the returned fetch was cancelled by the timeout
	expired  bool // the deadline passed while begun
	retries  int
	scope    *jsapi.Scope // set when begun; its fields are the loop's
	// Cancels the I/O the caller is doing for inv (isolate.callerWork).
	// The timeout calls it: the job that would end the scope may wait
	// behind another instance's code holding the runtime, and the caller
	// with it.
	ioCancel context.CancelFunc

	// Owned by the isolate's loop while begun.
	promise *goja.Promise // the pending promise the handler returned, if any
}

// result is what the caller gets: a response, an error, or a fetch the
// handler returned for the caller to send.
type result struct {
	resp  *http.Response
	err   error
	fetch *jsapi.ReturnedFetch
}

// answerLocked gives the caller its result, once. pl.mu held.
func (inv *invocation) answerLocked(res result) bool {
	if inv.answered {
		return false
	}
	inv.answered = true
	inv.res = res
	if res.fetch != nil {
		inv.fetching = true
	}
	close(inv.done)
	return true
}

// end records that inv's scope has ended with this outcome. What the
// caller no longer takes (it was answered already) is released.
func (inv *invocation) end(resp *http.Response, err error, rf *jsapi.ReturnedFetch) {
	pl := inv.pl
	pl.mu.Lock()
	if iso := inv.iso; iso != nil && iso.invs != nil {
		delete(iso.invs, inv)
	}
	if inv.state == stBegun {
		inv.state = stEnded
	}
	taken := inv.answerLocked(result{resp: resp, err: err, fetch: rf})
	pl.mu.Unlock()
	if !taken {
		if resp != nil {
			_ = resp.Body.Close()
		}
		if rf != nil {
			rf.Cancel()
		}
	}
	if rf == nil || !taken {
		inv.timer.Stop() // else it bounds the returned fetch, which the caller sends
	}
}

// wait blocks until inv is answered or its caller gives up, and sends a
// returned fetch.
func (inv *invocation) wait() (*http.Response, error) {
	select {
	case <-inv.done:
	case <-inv.ctx.Done():
		inv.cancel(inv.ctx.Err())
		<-inv.done
	}
	if rf := inv.res.fetch; rf != nil {
		return inv.send(rf)
	}
	if inv.res.err != nil && inv.ctx.Err() != nil {
		// Failed because the caller went away (a fetch it sent itself saw
		// the context end): say so.
		return nil, inv.ctx.Err()
	}
	return inv.res.resp, inv.res.err
}

// cancel answers err to a caller that gave up. The invocation's jobs stop;
// JS of it that is running goes on until it yields, or until its deadline
// and a grace period have passed.
func (inv *invocation) cancel(err error) {
	pl := inv.pl
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if !inv.answerLocked(result{err: err}) {
		return
	}
	switch inv.state {
	case stQueued:
		inv.unqueueLocked()
		inv.timer.Stop()
	case stBegun:
		inv.stopLocked()
	}
}

// unqueueLocked takes a waiting invocation out of the queue. pl.mu held.
func (inv *invocation) unqueueLocked() {
	inv.state = stAbandoned
	inv.pl.waiting.remove(inv.key, func(x *invocation) bool { return x == inv })
}

// stopLocked ends a begun invocation whose caller has its answer: none of
// its jobs runs any more, and a job ends its scope. pl.mu held.
func (inv *invocation) stopLocked() {
	inv.scope.Stop()
	if inv.ioCancel != nil {
		inv.ioCancel() // the answer is an error: no response of it is kept
	}
	if iso := inv.iso; !iso.dead {
		iso.postLocked(inv.key, func() { iso.abandon(inv) })
	}
}

// expire is the invocation's timeout. Waiting for a runtime, it ends in
// ErrTimeout. Begun, it ends in ErrTimeout at once; a runtime that is
// running its JS right now is interrupted, and retired, only if that run
// goes on past a grace period (a runaway). A returned fetch still waiting
// for its response head is cancelled.
func (inv *invocation) expire() {
	pl := inv.pl
	pl.mu.Lock()
	defer pl.mu.Unlock()
	switch inv.state {
	case stQueued:
		inv.unqueueLocked()
		inv.answerLocked(result{err: fmt.Errorf("waiting for a runtime: %w", ErrTimeout)})
	case stBegun:
		inv.expired = true
		inv.answerLocked(result{err: ErrTimeout})
		inv.stopLocked()
		if iso := inv.iso; !iso.dead && iso.running == inv {
			iso.watchLocked(inv)
		}
	case stEnded:
		if inv.fetching {
			inv.timedOut = true
			inv.res.fetch.Cancel()
		}
	}
}

// send sends the fetch the handler returned, on the caller's goroutine.
func (inv *invocation) send(rf *jsapi.ReturnedFetch) (*http.Response, error) {
	resp, err := rf.Do()
	pl := inv.pl
	pl.mu.Lock()
	inv.fetching = false
	timedOut := inv.timedOut
	pl.mu.Unlock()
	inv.timer.Stop()
	switch {
	case timedOut:
		if resp != nil {
			_ = resp.Body.Close()
		}
		return nil, ErrTimeout
	case err == nil:
		return resp, nil
	case inv.ctx.Err() != nil:
		return nil, inv.ctx.Err()
	}
	return nil, &HandlerError{Msg: "promise rejected: TypeError: " + err.Error()}
}

// abandon is a job: it ends the scope of an invocation whose caller has its
// answer already, so its timers and fetches stop.
func (iso *isolate) abandon(inv *invocation) {
	if inv.scope == nil || inv.scope.Ended() {
		return
	}
	iso.realm.End(inv.scope, nil)
	inv.end(nil, nil, nil)
}

// runStart is the first job of an invocation.
func (iso *isolate) runStart(inv *invocation) {
	if iso.guard(func() { iso.start(inv) }) {
		iso.afterJob()
	}
}

func (iso *isolate) start(inv *invocation) {
	r := iso.realm
	s := inv.scope
	if s.Stopped() {
		return // answered (timed out, cancelled) before it could run
	}
	r.Enter(s)
	iso.call(inv, s)
	r.Leave()
}

func (iso *isolate) call(inv *invocation, s *jsapi.Scope) {
	c := inv.c
	h, err := iso.resolve(c)
	if err != nil {
		iso.finish(inv, nil, err)
		return
	}
	r := iso.realm
	var v goja.Value
	var callErr error
	if ex := iso.vm.Try(func() {
		args := [3]goja.Value{r.NewRequest(c.Request), r.Env(c.Env), iso.ctxObject(c)}
		v, callErr = h.fn(h.this, args[:]...)
	}); ex != nil {
		callErr = ex
	}
	if callErr != nil {
		iso.fail(inv, callErr)
		return
	}
	o, ok := v.(*goja.Object)
	if !ok || o.ExportType() != typePromise {
		iso.settle(inv, v)
		return
	}
	p := o.Export().(*goja.Promise)
	switch p.State() {
	case goja.PromiseStateFulfilled:
		iso.settle(inv, p.Result())
		return
	case goja.PromiseStateRejected:
		iso.finish(inv, nil, iso.rejection(p.Result()))
		return
	}
	// `return fetch(...)` with nothing else going on: the caller sends it,
	// and this runtime is done with the invocation.
	if rf := r.TakeReturnedFetch(s, p); rf != nil {
		r.End(s, nil)
		inv.end(nil, nil, rf)
		return
	}
	// `return fetch(...)` otherwise: the fetch tells us when it settles,
	// without the derived promise a then() reaction costs.
	inv.promise = p
	if r.WhenFetchSettles(p, iso.onFetchSettled) {
		return
	}
	iso.await(inv, o)
}

// await settles the invocation when the pending promise o does.
func (iso *isolate) await(inv *invocation, o *goja.Object) {
	then, _ := goja.AssertFunction(o.Get("then"))
	if _, err := then(o, iso.onFulfilled, iso.onRejected); err != nil {
		iso.fail(inv, err)
	}
}

// fail ends inv with err, an error from calling into JS. If err broke the
// runtime, the runtime is retired when the job returns, and inv gets its
// error then.
func (iso *isolate) fail(inv *invocation, err error) {
	e, fatal := iso.handlerError(err)
	if fatal {
		iso.fatal, iso.fatalScope = err, inv.scope
		return
	}
	iso.finish(inv, nil, e)
}

// current is the invocation whose promise reaction or fetch hook runs.
func (iso *isolate) current(s *jsapi.Scope) *invocation {
	if s == nil || s.Ended() {
		return nil
	}
	inv, _ := s.Owner().(*invocation)
	return inv
}

// fetchSettled runs on the loop once the fetch whose promise the handler
// returned has settled.
func (iso *isolate) fetchSettled(s *jsapi.Scope) {
	inv := iso.current(s)
	if inv == nil || inv.promise == nil {
		return
	}
	p := inv.promise
	switch p.State() {
	case goja.PromiseStateFulfilled:
		iso.settle(inv, p.Result())
	case goja.PromiseStateRejected:
		iso.finish(inv, nil, iso.rejection(p.Result()))
	default: // resolved with a thenable: wait for it the ordinary way
		iso.await(inv, iso.vm.ToValue(p).(*goja.Object))
	}
}

// initCallbacks makes the promise reactions once per runtime. A reaction
// runs in the scope that attached it (goja's async context tracker), which
// names the invocation.
func (iso *isolate) initCallbacks() {
	iso.onFetchSettled = iso.fetchSettled
	iso.onFulfilled = iso.vm.ToValue(func(call goja.FunctionCall) goja.Value {
		if inv := iso.current(iso.realm.Current()); inv != nil {
			iso.settle(inv, call.Argument(0))
		}
		return goja.Undefined()
	})
	iso.onRejected = iso.vm.ToValue(func(call goja.FunctionCall) goja.Value {
		if inv := iso.current(iso.realm.Current()); inv != nil {
			iso.finish(inv, nil, iso.rejection(call.Argument(0)))
		}
		return goja.Undefined()
	})
}

func (iso *isolate) settle(inv *invocation, v goja.Value) {
	if inv.scope.Ended() {
		return
	}
	resp, err := iso.realm.ToResponse(v, inv.c.Request)
	if err != nil {
		iso.finish(inv, nil, &HandlerError{Msg: err.Error()})
		return
	}
	iso.finish(inv, resp, nil)
}

// finish ends the invocation's scope and answers the caller.
func (iso *isolate) finish(inv *invocation, resp *http.Response, err error) {
	if inv.scope.Ended() {
		if resp != nil {
			_ = resp.Body.Close()
		}
		return
	}
	iso.realm.End(inv.scope, resp)
	inv.end(resp, err, nil)
}

func (iso *isolate) resolve(c *Call) (*handler, error) {
	if c.Handler.Kind == chain.HandlerBlocked {
		return iso.blockedHook(c.Class)
	}
	tab := iso.classes[c.Class]
	if tab == nil {
		return nil, &HandlerError{Msg: fmt.Sprintf("class %q is not defined by the script", c.Class)}
	}
	var h *handler
	switch c.Handler.Kind {
	case chain.HandlerOutbound:
		h = tab.outbound
		if h == nil {
			return nil, &HandlerError{Msg: fmt.Sprintf("class %s has no outbound handler", c.Class)}
		}
	case chain.HandlerByHost:
		h = tab.byHost[c.Handler.Key]
		if h == nil {
			return nil, &HandlerError{Msg: fmt.Sprintf("class %s has no outboundByHost handler for %q", c.Class, c.Handler.Key)}
		}
	case chain.HandlerNamed:
		h = tab.named[c.Handler.Key]
		if h == nil {
			return nil, &HandlerError{Msg: fmt.Sprintf("Outbound handler method '%s' not found in outboundHandlers for %s", c.Handler.Key, c.Class)}
		}
	default:
		return nil, &HandlerError{Msg: fmt.Sprintf("unknown handler kind %d", c.Handler.Kind)}
	}
	return h, nil
}

// handlerError classifies an error from calling into JS. fatal means the
// runtime must not be used again.
func (iso *isolate) handlerError(err error) (error, bool) {
	var ie *goja.InterruptedError
	if errors.As(err, &ie) {
		return ErrTimeout, true
	}
	var so *goja.StackOverflowError
	if errors.As(err, &so) {
		return &HandlerError{Msg: "RangeError: Maximum call stack size exceeded"}, true
	}
	var ex *goja.Exception
	if errors.As(err, &ex) {
		se := iso.prog.exceptionError(ex)
		return &HandlerError{Msg: fmt.Sprintf("%s (at %s:%d:%d)", se.Msg, se.File, se.Line, se.Col)}, false
	}
	return &HandlerError{Msg: err.Error()}, false
}

// rejection describes a rejected handler promise.
func (iso *isolate) rejection(v goja.Value) error {
	if o, ok := v.(*goja.Object); ok {
		if st := o.Get("stack"); st != nil && !goja.IsUndefined(st) {
			msg := st.String()
			if name, m := o.Get("name"), o.Get("message"); m != nil && !goja.IsUndefined(m) && !strings.Contains(msg, m.String()) {
				msg = name.String() + ": " + m.String() + "\n" + msg
			}
			return &HandlerError{Msg: "promise rejected: " + strings.TrimSpace(msg)}
		}
	}
	if v == nil {
		return &HandlerError{Msg: "promise rejected with undefined"}
	}
	return &HandlerError{Msg: "promise rejected: " + v.String()}
}
