package engine

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"
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

var typePromise = reflect.TypeFor[*goja.Promise]()

// handler is a resolved JS handler and the this it is called with.
type handler struct {
	fn   goja.Callable
	this goja.Value
}

// classTable is one class's handlers inside one runtime.
type classTable struct {
	outbound *handler
	byHost   map[string]*handler
	named    map[string]*handler
}

// rawClass is what introspect.js reports about a class, not yet validated.
type rawClass struct {
	name     string
	source   string
	obj      *goja.Object
	self     goja.Value
	defOrder int
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
	configs, err := iso.readClasses(desc)
	if err != nil {
		return nil, nil, err
	}
	if b, ok := goja.AssertFunction(desc.Get("blocked")); ok {
		iso.blocked = &handler{fn: b, this: mod}
	} else if v := desc.Get("blocked"); v != nil && !goja.IsUndefined(v) && !goja.IsNull(v) {
		return nil, nil, &ScriptError{File: p.info.Path, Line: 1, Col: 1, Msg: "export blocked must be a function"}
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

// readClasses validates introspect.js's report and builds the handler tables.
func (iso *isolate) readClasses(desc *goja.Object) ([]chain.ClassSpec, error) {
	vm := iso.vm
	p := iso.prog
	arr := desc.Get("classes").ToObject(vm)
	n := int(arr.Get("length").ToInteger())
	raws := make([]rawClass, 0, n)
	for i := 0; i < n; i++ {
		o := arr.Get(fmt.Sprint(i)).ToObject(vm)
		rc := rawClass{name: o.Get("name").String(), obj: o, self: o.Get("self"), defOrder: -1}
		if s := o.Get("source"); s != nil && !goja.IsUndefined(s) {
			rc.source = s.String()
		}
		if rc.source != "" {
			rc.defOrder = p.classOffset(rc.name, rc.source)
		}
		raws = append(raws, rc)
	}
	sort.SliceStable(raws, func(i, j int) bool { return raws[i].defOrder < raws[j].defOrder })

	iso.classes = make(map[string]*classTable, len(raws))
	configs := make([]chain.ClassSpec, 0, len(raws))
	for _, rc := range raws {
		cfg, tab, err := iso.readClass(rc)
		if err != nil {
			return nil, err
		}
		if _, dup := iso.classes[cfg.Name]; dup {
			return nil, iso.classError(rc, fmt.Sprintf("class %s is defined twice", cfg.Name))
		}
		iso.classes[cfg.Name] = tab
		configs = append(configs, cfg)
	}
	return configs, nil
}

// classOffset finds where a class is defined in the bundle, for definition
// order and error positions. Anonymous class expressions can share their
// text (class extends Container {}), so the binding name is tried first.
func (p *Program) classOffset(name, source string) int {
	for _, pat := range []string{"var " + name + " = " + source, "let " + name + " = " + source, "class " + name + " "} {
		if i := strings.Index(p.bundle, pat); i >= 0 {
			return i + strings.Index(pat, "class")
		}
	}
	return strings.Index(p.bundle, source)
}

func (iso *isolate) classError(rc rawClass, msg string) error {
	p := iso.prog
	if rc.defOrder >= 0 {
		line := 1 + strings.Count(p.bundle[:rc.defOrder], "\n")
		col := rc.defOrder - strings.LastIndex(p.bundle[:rc.defOrder], "\n")
		if f, l, c, ok := p.original(line, col); ok {
			return &ScriptError{File: f, Line: l, Col: c, Msg: msg}
		}
	}
	return &ScriptError{File: p.info.Path, Line: 1, Col: 1, Msg: msg}
}

func (iso *isolate) readClass(rc rawClass) (chain.ClassSpec, *classTable, error) {
	o := rc.obj
	cfg := chain.ClassSpec{Name: rc.name, EnableInternet: true}
	tab := &classTable{}
	fail := func(format string, args ...any) (chain.ClassSpec, *classTable, error) {
		return chain.ClassSpec{}, nil, iso.classError(rc, fmt.Sprintf("class %s: ", rc.name)+fmt.Sprintf(format, args...))
	}
	isSet := func(v goja.Value) bool { return v != nil && !goja.IsUndefined(v) && !goja.IsNull(v) }
	for _, b := range []struct {
		name string
		dst  *bool
	}{{"enableInternet", &cfg.EnableInternet}, {"interceptHttps", &cfg.InterceptHTTPS}} {
		v := o.Get(b.name)
		if !isSet(v) {
			continue
		}
		bv, ok := v.Export().(bool)
		if !ok {
			return fail("%s must be a boolean, got %s", b.name, jsType(v))
		}
		*b.dst = bv
	}
	for _, l := range []struct {
		name string
		dst  *[]string
	}{{"allowedHosts", &cfg.AllowedHosts}, {"deniedHosts", &cfg.DeniedHosts}} {
		v := o.Get(l.name)
		if !isSet(v) {
			continue
		}
		lo, ok := v.(*goja.Object)
		if !ok || lo.ClassName() != "Array" {
			return fail("%s must be an array of strings, got %s", l.name, jsType(v))
		}
		n := int(lo.Get("length").ToInteger())
		list := make([]string, 0, n)
		for i := 0; i < n; i++ {
			e := lo.Get(fmt.Sprint(i))
			s, ok := e.(goja.String)
			if !ok {
				if _, isStr := e.Export().(string); !isStr {
					return fail("%s[%d] must be a string, got %s", l.name, i, jsType(e))
				}
				list = append(list, e.String())
				continue
			}
			list = append(list, s.String())
		}
		*l.dst = list
	}
	if v := o.Get("outbound"); isSet(v) {
		fn, ok := goja.AssertFunction(v)
		if !ok {
			return fail("outbound must be a function, got %s", jsType(v))
		}
		tab.outbound = &handler{fn: fn, this: rc.self}
		cfg.HasOutbound = true
	}
	if v := o.Get("outboundByHost"); isSet(v) {
		bo, ok := v.(*goja.Object)
		if !ok {
			return fail("outboundByHost must be an object, got %s", jsType(v))
		}
		tab.byHost = make(map[string]*handler)
		for _, k := range bo.Keys() {
			fn, ok := goja.AssertFunction(bo.Get(k))
			if !ok {
				return fail("outboundByHost[%q] must be a function, got %s", k, jsType(bo.Get(k)))
			}
			tab.byHost[k] = &handler{fn: fn, this: bo}
			cfg.ByHostKeys = append(cfg.ByHostKeys, k)
		}
	}
	if v := o.Get("outboundHandlers"); isSet(v) {
		ho, ok := v.(*goja.Object)
		if !ok {
			return fail("outboundHandlers must be an object, got %s", jsType(v))
		}
		tab.named = make(map[string]*handler)
		for _, k := range ho.Keys() {
			fn, ok := goja.AssertFunction(ho.Get(k))
			if !ok {
				return fail("outboundHandlers[%q] must be a function, got %s", k, jsType(ho.Get(k)))
			}
			tab.named[k] = &handler{fn: fn, this: ho}
			cfg.Handlers = append(cfg.Handlers, k)
		}
		sort.Strings(cfg.Handlers)
	}
	return cfg, tab, nil
}

func jsType(v goja.Value) string {
	switch {
	case v == nil || goja.IsUndefined(v):
		return "undefined"
	case goja.IsNull(v):
		return "null"
	}
	if o, ok := v.(*goja.Object); ok {
		if _, fn := goja.AssertFunction(o); fn {
			return "a function"
		}
		if o.ClassName() == "Array" {
			return "an array"
		}
		return "an object"
	}
	switch v.Export().(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int64, float64:
		return "a number"
	}
	return v.String()
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
		if iso.blocked == nil {
			return nil, &HandlerError{Msg: "the script does not export blocked"}
		}
		return iso.blocked, nil
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

func (iso *isolate) ctxObject(c *Call) goja.Value {
	x := &ctxObject{vm: iso.vm, id: c.InstanceID, class: c.Class, kind: c.Handler.Kind, reason: c.Reason}
	if c.Handler.Kind == chain.HandlerNamed {
		x.params = goja.Undefined()
		if c.Params != nil {
			parse, _ := goja.AssertFunction(iso.vm.Get("JSON").ToObject(iso.vm).Get("parse"))
			v, err := parse(goja.Undefined(), iso.vm.ToValue(string(c.Params)))
			if err != nil {
				panic(err)
			}
			x.params = v
		}
	}
	return iso.vm.NewDynamicObject(x)
}

// ctxObject is a handler's ctx: {containerId, className}, plus params for
// Named handlers and reason for Blocked. Backed by Go so that building one
// per call is a single allocation; JS may still add and change properties.
type ctxObject struct {
	vm     *goja.Runtime
	id     string
	class  string
	kind   chain.HandlerKind
	reason string
	params goja.Value
	extra  map[string]goja.Value
	keys   []string // fixed keys still present, then added ones
	init   bool
}

func (x *ctxObject) materialise() {
	if x.init {
		return
	}
	x.init = true
	x.extra = map[string]goja.Value{"containerId": x.vm.ToValue(x.id), "className": x.vm.ToValue(x.class)}
	x.keys = []string{"containerId", "className"}
	switch x.kind {
	case chain.HandlerNamed:
		x.extra["params"] = x.params
		x.keys = append(x.keys, "params")
	case chain.HandlerBlocked:
		x.extra["reason"] = x.vm.ToValue(x.reason)
		x.keys = append(x.keys, "reason")
	}
}

func (x *ctxObject) Get(key string) goja.Value {
	if !x.init {
		switch key {
		case "containerId":
			return x.vm.ToValue(x.id)
		case "className":
			return x.vm.ToValue(x.class)
		case "params":
			if x.kind == chain.HandlerNamed {
				return x.params
			}
		case "reason":
			if x.kind == chain.HandlerBlocked {
				return x.vm.ToValue(x.reason)
			}
		}
		return nil
	}
	return x.extra[key]
}

func (x *ctxObject) Set(key string, val goja.Value) bool {
	x.materialise()
	if _, ok := x.extra[key]; !ok {
		x.keys = append(x.keys, key)
	}
	x.extra[key] = val
	return true
}

func (x *ctxObject) Has(key string) bool {
	x.materialise()
	_, ok := x.extra[key]
	return ok
}

func (x *ctxObject) Delete(key string) bool {
	x.materialise()
	if _, ok := x.extra[key]; ok {
		delete(x.extra, key)
		for i, k := range x.keys {
			if k == key {
				x.keys = append(x.keys[:i], x.keys[i+1:]...)
				break
			}
		}
	}
	return true
}

func (x *ctxObject) Keys() []string {
	x.materialise()
	return x.keys
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
