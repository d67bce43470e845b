package engine

// One invocation on an isolate's loop: resolving the handler, calling it,
// settling its promise or returned fetch, and classifying its failure.

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"

	"github.com/dop251/goja"

	"github.com/outbound-dev/outbound/handlers/chain"
)

var typePromise = reflect.TypeFor[*goja.Promise]()

// run executes iso.call on the loop.
func (iso *isolate) run(vm *goja.Runtime) {
	c := iso.call
	iso.cur = invocation{seq: iso.seq, call: c}
	r := iso.realm
	r.Begin(iso.ctx, c.Logger, c.InstanceID, c.Class)
	h, err := iso.resolve(c)
	if err != nil {
		iso.finish(nil, err, false)
		return
	}
	var v goja.Value
	var callErr error
	if ex := vm.Try(func() {
		args := [3]goja.Value{r.NewRequest(c.Request), r.Env(c.Env), iso.ctxObject(c)}
		v, callErr = h.fn(h.this, args[:]...)
	}); ex != nil {
		callErr = ex
	}
	if callErr != nil {
		e, fatal := iso.handlerError(callErr)
		iso.finish(nil, e, fatal)
		return
	}
	o, ok := v.(*goja.Object)
	if !ok || o.ExportType() != typePromise {
		iso.settle(v)
		return
	}
	p := o.Export().(*goja.Promise)
	switch p.State() {
	case goja.PromiseStateFulfilled:
		iso.settle(p.Result())
		return
	case goja.PromiseStateRejected:
		iso.finish(nil, iso.rejection(p.Result()), false)
		return
	}
	// `return fetch(...)`: the fetch tells us when it settles, without the
	// derived promise a then() reaction costs.
	iso.cur.promise = p
	if iso.realm.WhenFetchSettles(p, iso.onFetchSettled) {
		return
	}
	iso.await(o)
}

// await settles the invocation when the pending promise o does.
func (iso *isolate) await(o *goja.Object) {
	then, _ := goja.AssertFunction(o.Get("then"))
	if _, err := then(o, iso.onFulfilled, iso.onRejected); err != nil {
		e, fatal := iso.handlerError(err)
		iso.finish(nil, e, fatal)
	}
}

// fetchSettled runs on the loop once the fetch whose promise the handler
// returned has settled.
func (iso *isolate) fetchSettled() {
	p := iso.cur.promise
	if iso.cur.finished || p == nil {
		return
	}
	switch p.State() {
	case goja.PromiseStateFulfilled:
		iso.settle(p.Result())
	case goja.PromiseStateRejected:
		iso.finish(nil, iso.rejection(p.Result()), false)
	default: // resolved with a thenable: wait for it the ordinary way
		iso.await(iso.vm.ToValue(p).(*goja.Object))
	}
}

// invocation is the state of the call running on the loop.
type invocation struct {
	seq      uint64
	call     *Call
	finished bool
	promise  *goja.Promise // the pending promise the handler returned, if any
}

// initCallbacks makes the promise reactions once per runtime; they act on
// whichever invocation is current, since a runtime runs one at a time.
func (iso *isolate) initCallbacks() {
	iso.onFetchSettled = iso.fetchSettled
	iso.onFulfilled = iso.vm.ToValue(func(call goja.FunctionCall) goja.Value {
		iso.settle(call.Argument(0))
		return goja.Undefined()
	})
	iso.onRejected = iso.vm.ToValue(func(call goja.FunctionCall) goja.Value {
		iso.finish(nil, iso.rejection(call.Argument(0)), false)
		return goja.Undefined()
	})
}

func (iso *isolate) settle(v goja.Value) {
	if iso.cur.finished {
		return
	}
	resp, err := iso.realm.ToResponse(v, iso.cur.call.Request)
	if err != nil {
		iso.finish(nil, &HandlerError{Msg: err.Error()}, false)
		return
	}
	iso.finish(resp, nil, false)
}

func (iso *isolate) finish(resp *http.Response, err error, fatal bool) {
	if iso.cur.finished {
		return
	}
	iso.cur.finished = true
	iso.realm.End(resp)
	if fatal {
		iso.retire()
	}
	iso.done <- result{seq: iso.cur.seq, resp: resp, err: err, fatal: fatal}
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
		se := iso.prog.exceptionError(iso.prog.info.Path, ex)
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
