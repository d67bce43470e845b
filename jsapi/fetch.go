package jsapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/dop251/goja"
)

// maxRedirects is how many redirects fetch follows, as browsers do.
const maxRedirects = 20

// fetchCall is one fetch of an invocation. When the invocation ends, a fetch
// whose response body is not what the caller got is aborted and its body
// closed; the returned one lives on under the caller's context.
type fetchCall struct {
	cancel context.CancelFunc
	body   io.ReadCloser
	p      *goja.Promise // settled only by the fetch itself
	// onSettle, if set, runs on the loop right after p settles (see
	// WhenFetchSettles).
	onSettle func()
}

// WhenFetchSettles arranges for fn to run on the loop right after p
// settles, when p is the promise of one of the current invocation's
// fetches, and reports whether it is. A caller waiting for a handler's
// `return fetch(...)` then needs no then() reaction, which costs a derived
// promise and two resolving functions per call. Only the fetch settles its
// promise, and JS reactions and microtasks have run by the time fn does; fn
// is not called once the invocation has ended.
func (r *Realm) WhenFetchSettles(p *goja.Promise, fn func()) bool {
	s := r.scope
	if s == nil || s.ended || p == nil {
		return false
	}
	for _, f := range s.fetches {
		if f.p == p {
			f.onSettle = fn
			return true
		}
	}
	return false
}

// settled runs the onSettle hook once.
func (f *fetchCall) settled() {
	if fn := f.onSettle; fn != nil {
		f.onSettle = nil
		fn()
	}
}

func (f *fetchCall) finish(keep io.ReadCloser) {
	if f.body != nil && f.body == keep {
		return
	}
	if f.body != nil {
		_ = f.body.Close()
	}
	f.cancel()
}

func (r *Realm) installFetch() {
	_ = r.vm.GlobalObject().Set("fetch", func(call goja.FunctionCall) goja.Value {
		return r.asPromise(func() goja.Value { return r.fetch(call.Argument(0), call.Argument(1)) })
	})
}

func (r *Realm) fetch(input, init goja.Value) goja.Value {
	q, ok := valueAs[*request](input)
	if !ok || (init != nil && !goja.IsUndefined(init)) {
		q = r.newRequestFrom(input, init)
	}
	if q.body.used || q.body.locked {
		r.throwType("fetch: the request body has already been used")
	}
	s := r.curScope()
	ctx, cancel := context.WithCancel(s.ctx)
	var aborted goja.Value // the signal's reason, once it fires
	if sig, ok := q.signal.(*goja.Object); ok {
		if sig.Get("aborted").ToBoolean() {
			cancel()
			return r.rejected(sig.Get("reason"))
		}
		add, _ := goja.AssertFunction(sig.Get("addEventListener"))
		if add != nil {
			_, err := add(sig, r.vm.ToValue("abort"), r.vm.ToValue(func(goja.FunctionCall) goja.Value {
				aborted = sig.Get("reason")
				cancel()
				return goja.Undefined()
			}))
			if err != nil {
				panic(err)
			}
		}
	}
	hreq := &http.Request{
		Method:     q.method,
		URL:        q.u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     q.hdr.share(), // copied on the next write from JS
		Host:       q.u.Host,
	}
	b := q.body.take()
	switch {
	case b.inMem:
		buf := b.buf
		hreq.Body = io.NopCloser(bytes.NewReader(buf))
		hreq.ContentLength = int64(len(buf))
		hreq.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	case b.rc != nil:
		hreq.Body = b.rc
		if b.length > 0 {
			hreq.ContentLength = b.length
		}
	}
	hreq = hreq.WithContext(ctx)
	p, resolve, reject := r.vm.NewPromise()
	f := &fetchCall{cancel: cancel, p: p}
	s.fetches = append(s.fetches, f)
	mode := q.redirect
	rt := r.cfg.Fetch
	r.bg.Add(1)
	go func() {
		defer r.bg.Done()
		resp, redirected, err := roundTrip(rt, hreq, mode)
		ok := r.loop.RunOnLoop(func(vm *goja.Runtime) {
			if s.ended {
				if resp != nil {
					_ = resp.Body.Close()
				}
				cancel()
				return
			}
			if err != nil {
				cancel()
				if aborted != nil {
					_ = reject(aborted)
				} else {
					_ = reject(r.typeError("fetch failed: %v", err))
				}
				f.settled()
				return
			}
			f.body = resp.Body
			final := hreq.URL
			if resp.Request != nil && resp.Request.URL != nil {
				final = resp.Request.URL
			}
			_ = resolve(r.newFetchedResponse(resp, final, redirected))
			f.settled()
		})
		if !ok && resp != nil {
			_ = resp.Body.Close()
			cancel()
		}
	}()
	return r.vm.ToValue(p)
}

// roundTrip sends req, following redirects when mode is "follow" the way
// fetch does. Body-bearing 307/308 redirects are followed only when the body
// can be replayed; otherwise the redirect response is returned.
func roundTrip(rt http.RoundTripper, req *http.Request, mode string) (*http.Response, bool, error) {
	redirected := false
	for hops := 0; ; hops++ {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			return nil, redirected, err
		}
		if resp.Body == nil {
			resp.Body = http.NoBody
		}
		if resp.Request == nil {
			resp.Request = req
		}
		if mode == "manual" || !isRedirect(resp.StatusCode) {
			return resp, redirected, nil
		}
		loc := resp.Header.Get("Location")
		if loc == "" {
			return resp, redirected, nil
		}
		if mode == "error" {
			_ = resp.Body.Close()
			return nil, redirected, fmt.Errorf("redirect to %q with redirect mode \"error\"", loc)
		}
		if hops >= maxRedirects {
			_ = resp.Body.Close()
			return nil, redirected, errors.New("too many redirects")
		}
		next, err := req.URL.Parse(loc)
		if err != nil || (next.Scheme != "http" && next.Scheme != "https") {
			_ = resp.Body.Close()
			return nil, redirected, fmt.Errorf("invalid redirect location %q", loc)
		}
		method := req.Method
		keepBody := true
		switch {
		case resp.StatusCode == 303 && method != "HEAD",
			(resp.StatusCode == 301 || resp.StatusCode == 302) && method == "POST":
			method, keepBody = "GET", false
		}
		var body io.ReadCloser
		if keepBody && req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return resp, redirected, nil // a stream cannot be sent twice
			}
			if body, err = req.GetBody(); err != nil {
				return resp, redirected, nil
			}
		}
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		_ = resp.Body.Close()
		nr := req.Clone(req.Context())
		nr.Method = method
		nr.URL = next
		nr.Host = next.Host
		nr.Body = body
		if body == nil {
			nr.ContentLength = 0
			nr.GetBody = nil
			for _, h := range []string{"Content-Type", "Content-Length", "Content-Encoding", "Content-Language", "Content-Location"} {
				nr.Header.Del(h)
			}
		}
		if !sameOrigin(req.URL, next) {
			nr.Header.Del("Authorization")
		}
		req = nr
		redirected = true
	}
}

func isRedirect(code int) bool {
	switch code {
	case 301, 302, 303, 307, 308:
		return true
	}
	return false
}

func sameOrigin(a, b *url.URL) bool {
	return a.Scheme == b.Scheme && a.Host == b.Host
}
