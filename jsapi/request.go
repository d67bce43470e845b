package jsapi

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/dop251/goja"
)

// request backs a JS Request. An incoming request wraps the Go request
// without copying: its URL string and headers are made only if JS asks.
type request struct {
	Expando
	method   string
	urlStr   string   // "" until needed when src is set
	u        *url.URL // parsed URL; shared with src when unchanged
	src      *http.Request
	hdr      *headers
	hdrObj   *goja.Object
	body     body
	redirect string
	signal   goja.Value
	cf       goja.Value
}

func (q *request) url() string {
	if q.urlStr == "" && q.u != nil {
		q.urlStr = q.u.String()
	}
	return q.urlStr
}

func (q *request) headers(r *Realm) *goja.Object {
	if q.hdrObj == nil {
		q.hdrObj = r.wrap(q.hdr, r.headersProto)
	}
	return q.hdrObj
}

// NewRequest returns the JS Request for an incoming Go request. req.URL must
// be absolute. Its headers are immutable, as in Workers, and its body
// streams from req.Body.
func (r *Realm) NewRequest(req *http.Request) goja.Value {
	q := &request{
		method:   req.Method,
		u:        req.URL,
		src:      req,
		hdr:      &headers{h: req.Header, immutable: true},
		redirect: "manual",
	}
	if q.hdr.h == nil {
		q.hdr.h = make(http.Header)
	}
	if req.Body != nil && req.Body != http.NoBody {
		q.body = streamBody(req.Body, req.ContentLength)
	}
	return r.wrap(q, r.requestProto)
}

func (r *Realm) installRequest() {
	_, proto := r.constructor("Request", func(call goja.ConstructorCall, proto *goja.Object) *goja.Object {
		q := r.newRequestFrom(call.Argument(0), call.Argument(1))
		return r.wrap(q, proto)
	})
	r.requestProto = proto
	this := func(call goja.FunctionCall) *request { return thisAs[*request](r, call, "Request") }
	r.getter(proto, "method", func(call goja.FunctionCall) goja.Value { return r.vm.ToValue(this(call).method) })
	r.getter(proto, "url", func(call goja.FunctionCall) goja.Value { return r.vm.ToValue(this(call).url()) })
	r.getter(proto, "headers", func(call goja.FunctionCall) goja.Value { return this(call).headers(r) })
	r.getter(proto, "redirect", func(call goja.FunctionCall) goja.Value { return r.vm.ToValue(this(call).redirect) })
	r.getter(proto, "signal", func(call goja.FunctionCall) goja.Value {
		q := this(call)
		if q.signal == nil {
			ac, err := r.vm.New(r.vm.Get("AbortController"))
			if err != nil {
				panic(err)
			}
			q.signal = ac.Get("signal")
		}
		return q.signal
	})
	r.getter(proto, "cf", func(call goja.FunctionCall) goja.Value {
		if q := this(call); q.cf != nil {
			return q.cf
		}
		return goja.Undefined()
	})
	r.getter(proto, "keepalive", func(call goja.FunctionCall) goja.Value { return r.vm.ToValue(false) })
	r.getter(proto, "integrity", func(call goja.FunctionCall) goja.Value { return r.vm.ToValue("") })
	r.bodyMethods(proto, func(call goja.FunctionCall) *body { return &this(call).body })
	r.method(proto, "clone", func(call goja.FunctionCall) goja.Value {
		q := this(call)
		c := *q
		c.Expando = Expando{}
		c.hdr = &headers{h: q.hdr.share(), immutable: q.hdr.immutable, shared: !q.hdr.immutable}
		c.hdrObj = nil
		c.body = r.cloneBody(&q.body)
		return r.wrap(&c, r.requestProto)
	})
}

// newRequestFrom implements new Request(input, init): a Request input is
// copied (its body moves to the copy, and the copy's headers are mutable),
// anything else is a URL.
func (r *Realm) newRequestFrom(input, init goja.Value) *request {
	q := &request{method: "GET", redirect: "follow"}
	if src, ok := valueAs[*request](input); ok {
		if src.body.used {
			r.throwType("Cannot construct a Request with a Request whose body has already been used")
		}
		q.method = src.method
		q.u = src.u
		q.urlStr = src.urlStr
		q.src = src.src
		q.redirect = src.redirect
		q.signal = src.signal
		q.cf = src.cf
		q.hdr = &headers{h: src.hdr.share(), shared: true}
		if !hasOpt(init, "body") {
			q.body = src.body.take()
		}
	} else {
		if input == nil || goja.IsUndefined(input) {
			r.throwType("Failed to construct 'Request': 1 argument required")
		}
		s := input.String()
		q.u = r.parseURL(s)
		q.hdr = &headers{h: make(http.Header)}
	}
	if q.hdr.h == nil {
		q.hdr.h = make(http.Header)
	}
	io, ok := init.(*goja.Object)
	if !ok {
		return q
	}
	if v := opt(io, "method"); v != nil {
		q.method = r.normalizeMethod(v.String())
	}
	if v := opt(io, "headers"); v != nil {
		h := make(http.Header)
		r.fillHeaders(h, v)
		q.hdr = &headers{h: h}
	}
	if v := opt(io, "redirect"); v != nil {
		switch m := v.String(); m {
		case "follow", "manual", "error":
			q.redirect = m
		default:
			r.throwType("Invalid redirect value: %q", m)
		}
	}
	if v := opt(io, "signal"); v != nil {
		if !goja.IsNull(v) {
			if is, _ := goja.AssertFunction(r.helpers.Get("isSignal")); is != nil {
				if ok, _ := is(goja.Undefined(), v); ok == nil || !ok.ToBoolean() {
					r.throwType("Failed to construct 'Request': member signal is not of type AbortSignal")
				}
			}
			q.signal = v
		} else {
			q.signal = nil
		}
	}
	if v := opt(io, "cf"); v != nil {
		q.cf = v
	}
	if hasOpt(init, "body") {
		b, ct := r.bodyInit(io.Get("body"))
		if !b.isNull() && (q.method == "GET" || q.method == "HEAD") {
			r.throwType("Request with a GET or HEAD method cannot have a body.")
		}
		q.body = b
		if ct != "" && q.hdr.values("Content-Type") == nil {
			if q.hdr.shared {
				q.hdr.h, q.hdr.shared = q.hdr.h.Clone(), false
			}
			q.hdr.h.Set("Content-Type", ct)
		}
	} else if !q.body.isNull() && (q.method == "GET" || q.method == "HEAD") {
		r.throwType("Request with a GET or HEAD method cannot have a body.")
	}
	return q
}

func (r *Realm) normalizeMethod(m string) string {
	if m == "" {
		r.throwType("Invalid HTTP method: empty")
	}
	for i := 0; i < len(m); i++ {
		if !isTokenChar(m[i]) {
			r.throwType("Invalid HTTP method: %q", m)
		}
	}
	switch u := strings.ToUpper(m); u {
	case "DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH":
		return u
	case "CONNECT", "TRACE", "TRACK":
		r.throwType("Forbidden HTTP method: %q", m)
	}
	return m
}

// opt returns init[name] unless it is missing or undefined.
func opt(o *goja.Object, name string) goja.Value {
	v := o.Get(name)
	if v == nil || goja.IsUndefined(v) {
		return nil
	}
	return v
}

func hasOpt(init goja.Value, name string) bool {
	o, ok := init.(*goja.Object)
	if !ok {
		return false
	}
	return opt(o, name) != nil
}
