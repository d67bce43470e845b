package jsapi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/dop251/goja"
)

// response backs a JS Response. One that fetch returned keeps the Go
// response, and if JS hands it back untouched, ToResponse returns that very
// *http.Response: same headers, same Body, nothing copied.
type response struct {
	Expando
	status     int
	statusText string
	hdr        *headers
	hdrObj     *goja.Object
	body       body
	url        string
	finalURL   *url.URL // a fetched response's URL, rendered on demand
	redirected bool
	typ        string
	goResp     *http.Response
}

func (p *response) headers(r *Realm) *goja.Object {
	if p.hdrObj == nil {
		p.hdrObj = r.wrap(p.hdr, r.headersProto)
	}
	return p.hdrObj
}

func nullBodyStatus(s int) bool { return s == 101 || s == 204 || s == 205 || s == 304 }

func (r *Realm) installResponse() {
	ctor, proto := r.constructor("Response", func(call goja.ConstructorCall, proto *goja.Object) *goja.Object {
		b, ct := r.bodyInit(call.Argument(0))
		p := r.newResponse(b, ct, call.Argument(1))
		return r.wrap(p, proto)
	})
	r.responseProto = proto
	this := func(call goja.FunctionCall) *response { return thisAs[*response](r, call, "Response") }
	r.getter(proto, "status", func(call goja.FunctionCall) goja.Value { return r.vm.ToValue(this(call).status) })
	r.getter(proto, "statusText", func(call goja.FunctionCall) goja.Value { return r.vm.ToValue(this(call).statusText) })
	r.getter(proto, "ok", func(call goja.FunctionCall) goja.Value {
		s := this(call).status
		return r.vm.ToValue(s >= 200 && s <= 299)
	})
	r.getter(proto, "headers", func(call goja.FunctionCall) goja.Value { return this(call).headers(r) })
	r.getter(proto, "url", func(call goja.FunctionCall) goja.Value {
		p := this(call)
		if p.url == "" && p.finalURL != nil {
			p.url = p.finalURL.String()
		}
		return r.vm.ToValue(p.url)
	})
	r.getter(proto, "redirected", func(call goja.FunctionCall) goja.Value { return r.vm.ToValue(this(call).redirected) })
	r.getter(proto, "type", func(call goja.FunctionCall) goja.Value { return r.vm.ToValue(this(call).typ) })
	r.getter(proto, "webSocket", func(call goja.FunctionCall) goja.Value { return goja.Null() })
	r.bodyMethods(proto, func(call goja.FunctionCall) *body { return &this(call).body })
	r.method(proto, "clone", func(call goja.FunctionCall) goja.Value {
		p := this(call)
		c := *p
		c.Expando = Expando{}
		c.hdr = &headers{h: p.hdr.h.Clone(), immutable: p.hdr.immutable}
		c.hdrObj = nil
		c.goResp = nil
		c.body = r.cloneBody(&p.body)
		return r.wrap(&c, r.responseProto)
	})

	r.method(ctor, "json", func(call goja.FunctionCall) goja.Value {
		s, err := r.jsonStringify(goja.Undefined(), call.Argument(0))
		if err != nil {
			panic(err)
		}
		if s == nil || goja.IsUndefined(s) {
			r.throwType("Response.json: the data is not JSON-serializable")
		}
		p := r.newResponse(memBody([]byte(s.String())), "application/json", call.Argument(1))
		return r.wrap(p, r.responseProto)
	})
	r.method(ctor, "redirect", func(call goja.FunctionCall) goja.Value {
		u := r.parseURL(call.Argument(0).String())
		status := 302
		if a := call.Argument(1); !goja.IsUndefined(a) {
			status = int(a.ToInteger())
		}
		switch status {
		case 301, 302, 303, 307, 308:
		default:
			panic(r.rangeError("Response.redirect: invalid status %d (want 301, 302, 303, 307 or 308)", status))
		}
		h := http.Header{"Location": {u.String()}}
		p := &response{status: status, hdr: &headers{h: h, immutable: true}, body: nullBody(), typ: "default"}
		return r.wrap(p, r.responseProto)
	})
	r.method(ctor, "error", func(call goja.FunctionCall) goja.Value {
		p := &response{status: 0, hdr: &headers{h: make(http.Header), immutable: true}, body: nullBody(), typ: "error"}
		return r.wrap(p, r.responseProto)
	})
}

func (r *Realm) rangeError(format string, args ...any) goja.Value {
	v, err := r.vm.New(r.vm.Get("RangeError"), r.vm.ToValue(fmt.Sprintf(format, args...)))
	if err != nil {
		panic(err)
	}
	return v
}

// newResponse applies a ResponseInit to a body.
func (r *Realm) newResponse(b body, contentType string, init goja.Value) *response {
	p := &response{status: 200, body: b, typ: "default"}
	h := make(http.Header)
	if o, ok := init.(*goja.Object); ok {
		if v := opt(o, "status"); v != nil {
			p.status = int(v.ToInteger())
			if p.status < 200 || p.status > 599 {
				panic(r.rangeError("Responses may only be constructed with status codes in the range 200 to 599, inclusive (got %s)", v.String()))
			}
		}
		if v := opt(o, "statusText"); v != nil {
			p.statusText = v.String()
		}
		if v := opt(o, "headers"); v != nil {
			r.fillHeaders(h, v)
		}
	}
	if contentType != "" && h.Get("Content-Type") == "" {
		h.Set("Content-Type", contentType)
	}
	if nullBodyStatus(p.status) && !b.isNull() {
		r.throwType("Response with null body status %d cannot have a body", p.status)
	}
	p.hdr = &headers{h: h}
	return p
}

// newFetchedResponse wraps what the RoundTripper returned.
func (r *Realm) newFetchedResponse(resp *http.Response, finalURL *url.URL, redirected bool) goja.Value {
	if resp.Header == nil {
		resp.Header = make(http.Header)
	}
	p := &response{
		status:     resp.StatusCode,
		statusText: statusText(resp),
		hdr:        &headers{h: resp.Header, immutable: true},
		finalURL:   finalURL,
		redirected: redirected,
		typ:        "basic",
		goResp:     resp,
	}
	if resp.Body != nil && resp.Body != http.NoBody {
		p.body = streamBody(resp.Body, resp.ContentLength)
	}
	return r.wrap(p, r.responseProto)
}

// NewResponse returns the JS Response for a Go response that this realm
// did not fetch itself, such as what a handler test's dispatch() resolves
// to. Its headers are immutable and its body streams from resp.Body; its url
// is resp.Request's, if any.
func (r *Realm) NewResponse(resp *http.Response) goja.Value {
	var u *url.URL
	if resp.Request != nil {
		u = resp.Request.URL
	}
	return r.newFetchedResponse(resp, u, false)
}

func statusText(resp *http.Response) string {
	s := resp.Status
	if len(s) > 4 && s[3] == ' ' {
		if _, err := strconv.Atoi(s[:3]); err == nil {
			return s[4:]
		}
	}
	return http.StatusText(resp.StatusCode)
}

// IsResponse reports whether v is a JS Response.
func (r *Realm) IsResponse(v goja.Value) bool {
	_, ok := valueAs[*response](v)
	return ok
}

// ErrNotResponse is returned by ToResponse when a handler's result is not a
// Response.
var ErrNotResponse = errors.New("handler did not return a Response")

// ToResponse turns the Response a handler returned into a Go response. A
// fetched response handed back untouched comes out as the same
// *http.Response; otherwise the body moves across as its Go stream or bytes.
// The JS object's body is used and its headers frozen afterwards.
func (r *Realm) ToResponse(v goja.Value, req *http.Request) (*http.Response, error) {
	p, ok := valueAs[*response](v)
	if !ok {
		return nil, fmt.Errorf("%w (got %s)", ErrNotResponse, Describe(v))
	}
	if p.body.used || p.body.locked {
		return nil, errors.New("the returned Response's body has already been used")
	}
	if p.status == 0 {
		return nil, errors.New("handler returned Response.error()")
	}
	if g := p.goResp; g != nil {
		// Fetched and untouched: its headers are immutable and its body unread.
		p.body.take()
		p.goResp = nil
		return g, nil
	}
	b := p.body.take()
	p.hdr.immutable = true
	out := &http.Response{
		StatusCode: p.status,
		Status:     strconv.Itoa(p.status) + " " + p.text(),
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     p.hdr.h,
		Request:    req,
	}
	switch {
	case b.inMem:
		out.Body = io.NopCloser(bytes.NewReader(b.buf))
		out.ContentLength = int64(len(b.buf))
	case b.rc != nil:
		out.Body = b.rc
		out.ContentLength = b.length
	default:
		out.Body = http.NoBody
		out.ContentLength = 0
	}
	return out, nil
}

func (p *response) text() string {
	if p.statusText != "" {
		return p.statusText
	}
	return http.StatusText(p.status)
}

// Describe names a JS value's type for error messages: "undefined", "null",
// "a function", "an array", "an object of type Foo", "a string", "a number"…
func Describe(v goja.Value) string {
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
		if c, ok := o.Get("constructor").(*goja.Object); ok {
			if n := c.Get("name"); n != nil && n.String() != "" {
				return "an object of type " + n.String()
			}
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
	return "a " + v.ExportType().String()
}
