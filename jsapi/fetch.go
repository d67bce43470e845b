package jsapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"reflect"
	"slices"

	"github.com/dop251/goja"
)

// maxRedirects is how many redirects fetch follows, as browsers do.
const maxRedirects = 20

// fetchCall is one fetch of an invocation. It is prepared when JS calls
// fetch() and started when the job ends, unless the handler hands it back
// as its answer first (TakeReturnedFetch). When the invocation ends, a fetch
// whose response body is not what the caller got is aborted and its body
// closed; the returned one lives on under the caller's context.
type fetchCall struct {
	s       *Scope
	req     *http.Request
	mode    string
	cancel  context.CancelFunc
	aborted goja.Value // the signal's reason, once it fired
	signal  bool       // the request has an AbortSignal
	started bool
	taken   bool // handed to the caller by TakeReturnedFetch
	body    io.ReadCloser
	p       *goja.Promise // settled only by the fetch itself
	resolve func(any) error
	reject  func(any) error
	// onSettle, if set, runs on the loop right after p settles (see
	// WhenFetchSettles).
	onSettle func(*Scope)
}

// WhenFetchSettles arranges for fn to run on the loop, in the fetch's scope,
// right after p settles, when p is the promise of one of the current
// scope's fetches, and reports whether it is. A caller waiting for a
// handler's `return fetch(...)` then needs no then() reaction, which costs
// a derived promise and two resolving functions per call. Only the fetch
// settles its promise, and JS reactions and microtasks have run by the time
// fn does; fn is not called once the invocation has ended.
func (r *Realm) WhenFetchSettles(p *goja.Promise, fn func(*Scope)) bool {
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
		fn(f.s)
	}
}

func (f *fetchCall) finish(keep io.ReadCloser) {
	if f.taken || (f.body != nil && f.body == keep) {
		return
	}
	if f.body != nil {
		_ = f.body.Close()
	}
	f.cancel()
}

// ReturnedFetch is a fetch a handler returned the promise of, handed over
// to the caller before it started: Do sends it on the caller's goroutine, so
// the runtime is free at once and need not run again when the answer
// arrives.
type ReturnedFetch struct {
	log    *slog.Logger
	rt     http.RoundTripper
	req    *http.Request
	mode   string
	cancel context.CancelFunc
}

// Do sends the request, following redirects as fetch does, and returns the
// RoundTripper's response untouched. Its error reads as the TypeError the
// promise would have been rejected with.
func (f *ReturnedFetch) Do() (*http.Response, error) {
	var resp *http.Response
	err := recovered(f.log, "fetch", func() (err error) {
		resp, _, err = roundTrip(f.rt, f.req, f.mode)
		return err
	})
	if err != nil {
		f.cancel()
		return nil, fmt.Errorf("fetch failed: %w", err)
	}
	return resp, nil
}

// Cancel aborts the request: Do returns an error if it is still waiting for
// the response head, and a body being read fails.
func (f *ReturnedFetch) Cancel() { f.cancel() }

// TakeReturnedFetch hands over the fetch whose promise p a handler of s
// returned, when nothing in JS could tell the difference: the fetch has not
// started, it is the only thing s waits for, the handler has no AbortSignal
// on it, no reaction was ever attached to p (then, catch, await), and
// settling p with a Response would run no JS (no `then` on the Response
// prototype chain). The invocation is then over; p is never settled. It
// returns nil when any of that does not hold, and the fetch goes on as
// usual.
func (r *Realm) TakeReturnedFetch(s *Scope, p *goja.Promise) *ReturnedFetch {
	if s.ended || s.pending != 1 || p.State() != goja.PromiseStatePending || promiseObserved(p) {
		return nil
	}
	i := slices.IndexFunc(r.prepared, func(f *fetchCall) bool { return f.p == p })
	if i < 0 {
		return nil
	}
	f := r.prepared[i]
	if f.s != s || f.signal || f.started || r.responseThenable() {
		return nil
	}
	r.prepared = slices.Delete(r.prepared, i, i+1)
	f.taken = true
	s.pending--
	return &ReturnedFetch{log: r.cfg.Logger, rt: r.cfg.Fetch, req: f.req, mode: f.mode, cancel: f.cancel}
}

// responseThenable reports whether resolving a promise with a Response
// would call a then method.
func (r *Realm) responseThenable() bool {
	v := r.responseProto.Get("then")
	return v != nil && !goja.IsUndefined(v)
}

// promiseObserved reports whether a reaction was ever attached to p. goja
// records it (for its rejection tracker) in an unexported field; reading it
// is the only way to know that nobody awaits the promise. If a goja upgrade
// renames the field, every promise counts as observed: TakeReturnedFetch
// then never applies, which is slower but still correct, and
// TestReturnedFetchTaken fails to say so.
func promiseObserved(p *goja.Promise) bool {
	if promiseHandled == nil {
		return true
	}
	return reflect.ValueOf(p).Elem().FieldByIndex(promiseHandled).Bool()
}

var promiseHandled = func() []int {
	f, ok := reflect.TypeFor[goja.Promise]().FieldByName("handled")
	if !ok || f.Type.Kind() != reflect.Bool {
		return nil
	}
	return f.Index
}()

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
	if s.ended {
		panic(r.endedError())
	}
	ctx, cancel := context.WithCancel(s.ctx)
	f := &fetchCall{s: s, cancel: cancel, mode: q.redirect}
	if sig, ok := q.signal.(*goja.Object); ok {
		if sig.Get("aborted").ToBoolean() {
			cancel()
			return r.rejected(sig.Get("reason"))
		}
		add, _ := goja.AssertFunction(sig.Get("addEventListener"))
		if add != nil {
			f.signal = true
			_, err := add(sig, r.vm.ToValue("abort"), r.vm.ToValue(func(goja.FunctionCall) goja.Value {
				f.aborted = sig.Get("reason")
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
	f.req = hreq.WithContext(ctx)
	f.p, f.resolve, f.reject = r.vm.NewPromise()
	s.fetches = append(s.fetches, f)
	s.pending++
	s.touched = true
	r.prepared = append(r.prepared, f)
	return r.vm.ToValue(f.p)
}

// dispatch starts the fetches the job made.
func (r *Realm) dispatch() {
	for i, f := range r.prepared {
		r.prepared[i] = nil
		if !f.s.ended {
			r.start(f)
		}
	}
	r.prepared = r.prepared[:0]
}

// start sends f on its own goroutine and settles its promise on the loop.
func (r *Realm) start(f *fetchCall) {
	f.started = true
	s := f.s
	rt := r.cfg.Fetch
	r.bg.Add(1)
	r.loop.Go(s, func() {
		defer r.bg.Done()
		var resp *http.Response
		var redirected bool
		err := recovered(r.cfg.Logger, "fetch", func() (err error) {
			resp, redirected, err = roundTrip(rt, f.req, f.mode)
			return err
		})
		ok := r.post(s, func() {
			s.pending--
			if err != nil {
				f.cancel()
				if f.aborted != nil {
					r.uncatchable(f.reject(f.aborted))
				} else {
					r.uncatchable(f.reject(r.typeError("fetch failed: %v", err)))
				}
				f.settled()
				return
			}
			f.body = resp.Body
			final := f.req.URL
			if resp.Request != nil && resp.Request.URL != nil {
				final = resp.Request.URL
			}
			r.uncatchable(f.resolve(r.newFetchedResponse(resp, final, redirected)))
			f.settled()
		}, func() {
			if resp != nil {
				_ = resp.Body.Close()
			}
			f.cancel()
		})
		if !ok && resp != nil {
			_ = resp.Body.Close()
			f.cancel()
		}
	}, f.cancel)
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
