package jsapi

import (
	"net/http"
	"net/textproto"
	"sort"
	"strings"

	"github.com/dop251/goja"
)

// headers backs a JS Headers object with a Go http.Header, so a request or
// response can go to and from Go without converting. Incoming requests and
// fetched responses are immutable, as in Workers.
type headers struct {
	Expando
	h         http.Header
	immutable bool
	// shared means h is also referenced elsewhere (another Headers, or an
	// outgoing Go request): the first mutation copies it.
	shared bool
}

// share returns h's map for a new owner; both sides copy before writing.
func (h *headers) share() http.Header {
	if !h.immutable {
		h.shared = true
	}
	return h.h
}

func (r *Realm) installHeaders() {
	_, proto := r.constructor("Headers", func(call goja.ConstructorCall, proto *goja.Object) *goja.Object {
		h := make(http.Header)
		r.fillHeaders(h, call.Argument(0))
		return r.wrap(&headers{h: h}, proto)
	})
	r.headersProto = proto
	this := func(call goja.FunctionCall) *headers { return thisAs[*headers](r, call, "Headers") }
	mutable := func(call goja.FunctionCall) *headers {
		h := this(call)
		if h.immutable {
			r.throwType("Can't modify immutable headers.")
		}
		if h.shared {
			h.h = h.h.Clone()
			h.shared = false
		}
		return h
	}
	r.method(proto, "get", func(call goja.FunctionCall) goja.Value {
		h := this(call)
		vals := h.values(r.headerName(call.Argument(0)))
		if len(vals) == 0 {
			return goja.Null()
		}
		if len(vals) == 1 {
			return r.vm.ToValue(vals[0])
		}
		return r.vm.ToValue(strings.Join(vals, ", "))
	})
	r.method(proto, "getAll", func(call goja.FunctionCall) goja.Value {
		h := this(call)
		name := r.headerName(call.Argument(0))
		if !strings.EqualFold(name, "set-cookie") {
			r.throwType("getAll() can only be used with the header name \"Set-Cookie\".")
		}
		return r.stringArray(h.values(name))
	})
	r.method(proto, "getSetCookie", func(call goja.FunctionCall) goja.Value {
		return r.stringArray(this(call).values("Set-Cookie"))
	})
	r.method(proto, "has", func(call goja.FunctionCall) goja.Value {
		return r.vm.ToValue(len(this(call).values(r.headerName(call.Argument(0)))) > 0)
	})
	r.method(proto, "set", func(call goja.FunctionCall) goja.Value {
		h := mutable(call)
		name := r.headerName(call.Argument(0))
		h.del(name)
		h.h[textproto.CanonicalMIMEHeaderKey(name)] = []string{r.headerValue(call.Argument(1))}
		return goja.Undefined()
	})
	r.method(proto, "append", func(call goja.FunctionCall) goja.Value {
		h := mutable(call)
		name := r.headerName(call.Argument(0))
		v := r.headerValue(call.Argument(1))
		k := h.key(name)
		h.h[k] = append(h.h[k], v)
		return goja.Undefined()
	})
	r.method(proto, "delete", func(call goja.FunctionCall) goja.Value {
		mutable(call).del(r.headerName(call.Argument(0)))
		return goja.Undefined()
	})
	r.method(proto, "forEach", func(call goja.FunctionCall) goja.Value {
		h := this(call)
		fn, ok := goja.AssertFunction(call.Argument(0))
		if !ok {
			r.throwType("Headers.forEach: callback is not a function")
		}
		for _, kv := range h.entries() {
			if _, err := fn(call.Argument(1), r.vm.ToValue(kv[1]), r.vm.ToValue(kv[0]), call.This); err != nil {
				panic(err)
			}
		}
		return goja.Undefined()
	})
	iter := func(pick func(kv [2]string) goja.Value) func(goja.FunctionCall) goja.Value {
		return func(call goja.FunctionCall) goja.Value {
			es := this(call).entries()
			items := make([]any, len(es))
			for i, kv := range es {
				items[i] = pick(kv)
			}
			arr := r.vm.NewArray(items...)
			values, _ := goja.AssertFunction(arr.Get("values"))
			it, err := values(arr)
			if err != nil {
				panic(err)
			}
			return it
		}
	}
	entries := iter(func(kv [2]string) goja.Value { return r.vm.NewArray(kv[0], kv[1]) })
	r.method(proto, "entries", entries)
	r.method(proto, "keys", iter(func(kv [2]string) goja.Value { return r.vm.ToValue(kv[0]) }))
	r.method(proto, "values", iter(func(kv [2]string) goja.Value { return r.vm.ToValue(kv[1]) }))
	_ = proto.DefineDataPropertySymbol(goja.SymIterator, r.vm.ToValue(entries), goja.FLAG_TRUE, goja.FLAG_TRUE, goja.FLAG_FALSE)
}

// key returns the map key holding name: the canonical one, or an existing
// odd-cased key a Go producer left in the map.
func (h *headers) key(name string) string {
	k := textproto.CanonicalMIMEHeaderKey(name)
	if _, ok := h.h[k]; ok {
		return k
	}
	for key := range h.h {
		if strings.EqualFold(key, name) {
			return key
		}
	}
	return k
}

func (h *headers) values(name string) []string {
	if v, ok := h.h[textproto.CanonicalMIMEHeaderKey(name)]; ok {
		return v
	}
	for key, v := range h.h {
		if strings.EqualFold(key, name) {
			return v
		}
	}
	return nil
}

func (h *headers) del(name string) {
	delete(h.h, textproto.CanonicalMIMEHeaderKey(name))
	for key := range h.h {
		if strings.EqualFold(key, name) {
			delete(h.h, key)
		}
	}
}

// entries lists the headers as Fetch iterates them: lower-case names in
// order, values combined with ", " except Set-Cookie, which repeats.
func (h *headers) entries() [][2]string {
	names := make([]string, 0, len(h.h))
	byName := make(map[string][]string, len(h.h))
	for k, v := range h.h {
		if len(v) == 0 {
			continue
		}
		lk := strings.ToLower(k)
		if _, ok := byName[lk]; !ok {
			names = append(names, lk)
		}
		byName[lk] = append(byName[lk], v...)
	}
	sort.Strings(names)
	out := make([][2]string, 0, len(names))
	for _, n := range names {
		vals := byName[n]
		if n == "set-cookie" {
			for _, v := range vals {
				out = append(out, [2]string{n, v})
			}
			continue
		}
		out = append(out, [2]string{n, strings.Join(vals, ", ")})
	}
	return out
}

func (r *Realm) stringArray(vals []string) goja.Value {
	items := make([]any, len(vals))
	for i, v := range vals {
		items[i] = v
	}
	return r.vm.NewArray(items...)
}

func (r *Realm) headerName(v goja.Value) string {
	name := v.String()
	if name == "" {
		r.throwType("Invalid header name: empty")
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			r.throwType("Invalid header name: %q", name)
		}
	}
	return name
}

func (r *Realm) headerValue(v goja.Value) string {
	s := strings.Trim(v.String(), " \t\r\n")
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == 0 || c == '\r' || c == '\n' {
			r.throwType("Invalid header value for a header: contains a control character")
		}
	}
	return s
}

func isTokenChar(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// fillHeaders adds a HeadersInit (Headers, a sequence of pairs, or a record)
// to h.
func (r *Realm) fillHeaders(h http.Header, init goja.Value) {
	if init == nil || goja.IsUndefined(init) || goja.IsNull(init) {
		return
	}
	if src, ok := valueAs[*headers](init); ok {
		for k, v := range src.h {
			h[k] = append(h[k], v...)
		}
		return
	}
	o, ok := init.(*goja.Object)
	if !ok {
		r.throwType("Headers: init must be an object, an array of pairs or a Headers")
	}
	add := func(name, value goja.Value) {
		n := r.headerName(name)
		k := textproto.CanonicalMIMEHeaderKey(n)
		h[k] = append(h[k], r.headerValue(value))
	}
	if it := o.GetSymbol(goja.SymIterator); it != nil && !goja.IsUndefined(it) {
		from, _ := goja.AssertFunction(r.vm.Get("Array").ToObject(r.vm).Get("from"))
		arrV, err := from(goja.Undefined(), o)
		if err != nil {
			panic(err)
		}
		arr := arrV.ToObject(r.vm)
		n := arr.Get("length").ToInteger()
		for i := int64(0); i < n; i++ {
			pair, ok := arr.Get(itoa(i)).(*goja.Object)
			if !ok || pair.Get("length").ToInteger() != 2 {
				r.throwType("Headers: each header pair must be a [name, value] sequence of length 2")
			}
			add(pair.Get("0"), pair.Get("1"))
		}
		return
	}
	for _, k := range o.Keys() {
		add(r.vm.ToValue(k), o.Get(k))
	}
}
