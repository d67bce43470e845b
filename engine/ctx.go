package engine

// The ctx argument of a handler.

import (
	"github.com/dop251/goja"

	"github.com/outbound-dev/outbound/handlers/chain"
	"github.com/outbound-dev/outbound/jsapi"
)

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
// per call is a single allocation; the fixed keys move into the Expando only
// when JS first changes or enumerates the object.
type ctxObject struct {
	jsapi.Expando
	vm     *goja.Runtime
	id     string
	class  string
	kind   chain.HandlerKind
	reason string
	params goja.Value
	init   bool
}

func (x *ctxObject) materialise() {
	if x.init {
		return
	}
	x.init = true
	x.Expando.Set("containerId", x.vm.ToValue(x.id))
	x.Expando.Set("className", x.vm.ToValue(x.class))
	switch x.kind {
	case chain.HandlerNamed:
		x.Expando.Set("params", x.params)
	case chain.HandlerBlocked:
		x.Expando.Set("reason", x.vm.ToValue(x.reason))
	}
}

func (x *ctxObject) Get(key string) goja.Value {
	if x.init {
		return x.Expando.Get(key)
	}
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

func (x *ctxObject) Set(key string, val goja.Value) bool {
	x.materialise()
	return x.Expando.Set(key, val)
}

func (x *ctxObject) Has(key string) bool {
	x.materialise()
	return x.Expando.Has(key)
}

func (x *ctxObject) Delete(key string) bool {
	x.materialise()
	return x.Expando.Delete(key)
}

func (x *ctxObject) Keys() []string {
	x.materialise()
	return x.Expando.Keys()
}
