package jsapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"runtime/debug"
	"sync"

	"github.com/dop251/goja"
	"github.com/dop251/goja_nodejs/require"
	"github.com/dop251/goja_nodejs/url"
)

// DefaultMaxBodyBytes caps what JS may read of one body when Config leaves
// MaxBodyBytes zero.
const DefaultMaxBodyBytes = 32 << 20

// Config is what a Realm needs from its owner.
type Config struct {
	// Fetch carries every fetch(). It applies no policy; the proxy's guarded
	// transport enforces the private-network rules. As for any RoundTripper
	// it must not modify the request: its header map may be shared with JS
	// objects (copy-on-write on the JS side). Required.
	Fetch http.RoundTripper
	// MaxBodyBytes caps body reads from JS (text, json, arrayBuffer, stream
	// reads). Zero means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Logger receives console.* when the current Scope has none.
	Logger *slog.Logger
	// OnUncatchable is called on the loop when JS that a job runs (a timer,
	// a promise reaction, a fetch settling) dies of an uncatchable error: an
	// interrupt or a stack overflow. s is the scope whose code was running.
	// goja has dropped every pending promise job by then, so the owner must
	// retire the runtime once the job returns.
	OnUncatchable func(s *Scope, err error)
	// Switch, if set, is called on the loop whenever the scope whose JS may
	// run changes: a job for s begins (s), a promise reaction of another
	// scope runs (that scope) and returns (the job's scope again), a job ends
	// (nil). The owner uses it to know whose code an Interrupt would stop.
	Switch func(s *Scope)
}

// Realm is the Workers platform installed in one goja runtime. It is owned by
// whoever runs the runtime's loop at the moment: every method must be called
// on that loop unless it says otherwise.
type Realm struct {
	vm   *goja.Runtime
	loop Loop
	cfg  Config

	headersProto  *goja.Object
	requestProto  *goja.Object
	responseProto *goja.Object
	streamProto   *goja.Object
	readerProto   *goja.Object
	kvProto       *goja.Object
	keyProto      *goja.Object

	uint8Array    goja.Value
	promiseCtor   *goja.Object
	helpers       *goja.Object // functions the prelude exports to Go
	newAbortErr   goja.Callable
	newDOMExc     goja.Callable
	jsonStringify goja.Callable
	jsonParse     goja.Callable

	scope    *Scope // whose code runs now
	job      *Scope // the scope of the job running now
	envCache map[*Env]*goja.Object
	prepared []*fetchCall // fetches made in this job, started when it ends

	// bg counts goroutines doing I/O for JS (fetch, body reads, KV). Their
	// results come back through Loop.Post; Wait lets the owner drain them.
	bg sync.WaitGroup
}

// Install builds a Realm in vm (made by NewRuntime), whose jobs loop runs.
// It removes require() afterwards and never loads the process module, so
// host environment and files stay out of reach.
func Install(vm *goja.Runtime, loop Loop, cfg Config) (*Realm, error) {
	if cfg.Fetch == nil {
		return nil, errors.New("jsapi: Config.Fetch is required")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Realm{vm: vm, loop: loop, cfg: cfg, envCache: make(map[*Env]*goja.Object)}
	err := func() (err error) {
		defer func() {
			if x := recover(); x != nil {
				err = fmt.Errorf("jsapi: install: %v", x)
			}
		}()
		r.install()
		return nil
	}()
	if err != nil {
		return nil, err
	}
	vm.SetAsyncContextTracker(r)
	return r, nil
}

// NewRuntime returns a runtime with no console, no timers, no require
// loader and no process module; Install completes it. (goja_nodejs's URL
// is loaded through require, which Install deletes afterwards.)
func NewRuntime() *goja.Runtime {
	vm := goja.New()
	require.NewRegistry(require.WithLoader(func(path string) ([]byte, error) {
		return nil, require.ModuleFileDoesNotExistError
	})).Enable(vm)
	return vm
}

func (r *Realm) install() {
	vm := r.vm
	g := vm.GlobalObject()
	url.Enable(vm)
	// require was only needed for URL; a policy script has no use for it.
	g.Delete("require")

	r.uint8Array = g.Get("Uint8Array")
	r.promiseCtor = g.Get("Promise").ToObject(vm)
	js := g.Get("JSON").ToObject(vm)
	r.jsonStringify, _ = goja.AssertFunction(js.Get("stringify"))
	r.jsonParse, _ = goja.AssertFunction(js.Get("parse"))

	r.installPrelude()
	r.installTimers()
	r.installConsole()
	r.installCrypto()
	r.installHeaders()
	r.installStreams()
	r.installRequest()
	r.installResponse()
	r.installFetch()
	r.installKV()
}

// uncatchable reports an error from calling into JS outside a handler's own
// call (a resolving function, a timer, a listener) that JS could not catch.
// Exceptions are JS's business; anything else means goja dropped its job
// queue and the runtime is done for.
func (r *Realm) uncatchable(err error) {
	if err == nil {
		return
	}
	if _, ok := err.(*goja.Exception); ok {
		return
	}
	if r.cfg.OnUncatchable != nil {
		r.cfg.OnUncatchable(r.scope, err)
	}
}

// VM returns the runtime.
func (r *Realm) VM() *goja.Runtime { return r.vm }

// Wait blocks until every I/O goroutine started for JS has finished. Call it
// after the loop has stopped and the scope has ended, so that bodies are
// closed and contexts cancelled.
func (r *Realm) Wait() { r.bg.Wait() }

// goAsync runs work on its own goroutine and settles a promise with its
// result back on the loop, in the scope that asked. settle runs on the loop
// and returns the resolution value or panics with a JS error. The scope
// counts it as pending work and as I/O until then.
func (r *Realm) goAsync(work func() (any, error), settle func(v any, err error) goja.Value) goja.Value {
	s := r.curScope()
	if s.ended {
		return r.rejected(r.endedError())
	}
	s.pending++
	s.touched = true
	p, resolve, reject := r.vm.NewPromise()
	r.bg.Add(1)
	go func() {
		defer r.bg.Done()
		var v any
		err := recovered(r.cfg.Logger, "a Web API's I/O", func() (err error) {
			v, err = work()
			return err
		})
		r.post(s, func() {
			s.pending--
			var out goja.Value
			if ex := r.vm.Try(func() { out = settle(v, err) }); ex != nil {
				r.uncatchable(reject(ex.Value()))
				return
			}
			r.uncatchable(resolve(out))
		}, nil)
	}()
	return r.vm.ToValue(p)
}

// recovered runs f and turns a Go panic in it (a RoundTripper's or a KV
// backend's bug, on an I/O goroutine nothing else would recover on) into an
// error, logging the stack trace. The process lives on.
func recovered(log *slog.Logger, what string, f func() error) (err error) {
	defer func() {
		if x := recover(); x != nil {
			log.Error("jsapi: a Go panic in "+what, "panic", fmt.Sprint(x), "stack", string(debug.Stack()))
			err = fmt.Errorf("internal error: %s panicked: %v", what, x)
		}
	}()
	return f()
}

// resolved returns a promise already fulfilled with v.
func (r *Realm) resolved(v goja.Value) goja.Value {
	p, resolve, _ := r.vm.NewPromise()
	_ = resolve(v)
	return r.vm.ToValue(p)
}

// rejected returns a promise already rejected with v.
func (r *Realm) rejected(v goja.Value) goja.Value {
	p, _, reject := r.vm.NewPromise()
	_ = reject(v)
	return r.vm.ToValue(p)
}

// asPromise runs f and turns a thrown JS error into a rejected promise, as
// Web APIs that return promises do.
func (r *Realm) asPromise(f func() goja.Value) (out goja.Value) {
	if ex := r.vm.Try(func() { out = f() }); ex != nil {
		return r.rejected(ex.Value())
	}
	return out
}

func (r *Realm) typeError(format string, args ...any) *goja.Object {
	return r.vm.NewTypeError(fmt.Sprintf(format, args...))
}

func (r *Realm) throwType(format string, args ...any) {
	panic(r.typeError(format, args...))
}

// domException builds a DOMException(message, name).
func (r *Realm) domException(msg, name string) goja.Value {
	v, err := r.newDOMExc(goja.Undefined(), r.vm.ToValue(msg), r.vm.ToValue(name))
	if err != nil {
		panic(err)
	}
	return v
}

func (r *Realm) newUint8Array(b []byte) goja.Value {
	ab := r.vm.NewArrayBuffer(b)
	o, err := r.vm.New(r.uint8Array, r.vm.ToValue(ab))
	if err != nil {
		panic(err)
	}
	return o
}

// bufferSourceBytes returns the bytes an ArrayBuffer or a view refers to,
// without copying.
func (r *Realm) bufferSourceBytes(v goja.Value) ([]byte, bool) {
	o, ok := v.(*goja.Object)
	if !ok {
		return nil, false
	}
	switch o.ExportType() {
	case typeArrayBuffer:
		return o.Export().(goja.ArrayBuffer).Bytes(), true
	case typeBytes:
		return o.Export().([]byte), true // a Uint8Array exports its window of the buffer
	}
	buf, ok := o.Get("buffer").(*goja.Object)
	if !ok {
		return nil, false
	}
	ab, ok := buf.Export().(goja.ArrayBuffer)
	if !ok {
		return nil, false
	}
	off := o.Get("byteOffset").ToInteger()
	n := o.Get("byteLength").ToInteger()
	b := ab.Bytes()
	if off < 0 || n < 0 || off+n > int64(len(b)) {
		return nil, false
	}
	return b[off : off+n], true
}

func (r *Realm) stringify(v goja.Value) string {
	s, err := r.jsonStringify(goja.Undefined(), v)
	if err != nil || s == nil || goja.IsUndefined(s) {
		return v.String()
	}
	return s.String()
}

// method defines a non-enumerable function property, as Web IDL methods are.
func (r *Realm) method(o *goja.Object, name string, fn func(goja.FunctionCall) goja.Value) {
	_ = o.DefineDataProperty(name, r.vm.ToValue(fn), goja.FLAG_TRUE, goja.FLAG_TRUE, goja.FLAG_FALSE)
}

// getter defines an accessor with a getter only.
func (r *Realm) getter(o *goja.Object, name string, fn func(goja.FunctionCall) goja.Value) {
	_ = o.DefineAccessorProperty(name, r.vm.ToValue(fn), nil, goja.FLAG_TRUE, goja.FLAG_TRUE)
}

// constructor makes a native constructor named name whose prototype is
// returned. The construct function receives the prototype the new object must
// get (so subclasses work).
func (r *Realm) constructor(name string, construct func(call goja.ConstructorCall, proto *goja.Object) *goja.Object) (*goja.Object, *goja.Object) {
	ctor := r.vm.ToValue(func(call goja.ConstructorCall) *goja.Object {
		if call.This == nil || call.This == r.vm.GlobalObject() {
			r.throwType("Failed to construct '%s': Please use the 'new' operator", name)
		}
		return construct(call, call.This.Prototype())
	}).(*goja.Object)
	_ = ctor.DefineDataProperty("name", r.vm.ToValue(name), goja.FLAG_FALSE, goja.FLAG_TRUE, goja.FLAG_FALSE)
	proto := ctor.Get("prototype").(*goja.Object)
	_ = proto.DefineDataPropertySymbol(goja.SymToStringTag, r.vm.ToValue(name), goja.FLAG_FALSE, goja.FLAG_TRUE, goja.FLAG_FALSE)
	_ = r.vm.GlobalObject().DefineDataProperty(name, ctor, goja.FLAG_TRUE, goja.FLAG_TRUE, goja.FLAG_FALSE)
	return ctor, proto
}

// Expando is the storage of properties that JS adds to a Go-backed object
// (a goja.DynamicObject): the Web API objects here and the engine's ctx
// embed it, while their own surface lives on a prototype or in Go.
type Expando struct {
	props map[string]goja.Value
	order []string
}

func (h *Expando) Get(key string) goja.Value {
	if h.props == nil {
		return nil
	}
	return h.props[key]
}

func (h *Expando) Set(key string, val goja.Value) bool {
	if h.props == nil {
		h.props = make(map[string]goja.Value)
	}
	if _, ok := h.props[key]; !ok {
		h.order = append(h.order, key)
	}
	h.props[key] = val
	return true
}

func (h *Expando) Has(key string) bool {
	_, ok := h.props[key]
	return ok
}

func (h *Expando) Delete(key string) bool {
	if _, ok := h.props[key]; ok {
		delete(h.props, key)
		for i, k := range h.order {
			if k == key {
				h.order = append(h.order[:i], h.order[i+1:]...)
				break
			}
		}
	}
	return true
}

func (h *Expando) Keys() []string { return h.order }

// wrap returns a JS object backed by d with the given prototype.
func (r *Realm) wrap(d goja.DynamicObject, proto *goja.Object) *goja.Object {
	o := r.vm.NewDynamicObject(d)
	_ = o.SetPrototype(proto)
	return o
}

// thisAs returns the Go value behind call.This, or throws "Illegal invocation".
func thisAs[T any](r *Realm, call goja.FunctionCall, what string) T {
	v, ok := valueAs[T](call.This)
	if !ok {
		r.throwType("Illegal invocation: not a %s", what)
	}
	return v
}

// valueAs returns the Go value behind v if v is one of ours.
func valueAs[T any](v goja.Value) (T, bool) {
	var zero T
	o, ok := v.(*goja.Object)
	// ExportType is cheap; Export of a plain object would copy it.
	if !ok || o.ExportType() != reflect.TypeFor[T]() {
		return zero, false
	}
	x, ok := o.Export().(T)
	return x, ok
}

var (
	typeArrayBuffer = reflect.TypeFor[goja.ArrayBuffer]()
	typeBytes       = reflect.TypeFor[[]byte]()
)
