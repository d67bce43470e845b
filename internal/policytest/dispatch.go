package policytest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/dop251/goja"

	"github.com/outbound-dev/outbound/engine"
	"github.com/outbound-dev/outbound/handlers/chain"
	"github.com/outbound-dev/outbound/handlers/instances"
	"github.com/outbound-dev/outbound/handlers/policy"
	"github.com/outbound-dev/outbound/internal/decision"
	"github.com/outbound-dev/outbound/internal/host"
	"github.com/outbound-dev/outbound/internal/store"
	"github.com/outbound-dev/outbound/internal/store/memkv"
	"github.com/outbound-dev/outbound/jsapi"
)

// setup is what dispatch and decide options ask for, as the module's
// setup() hands it over.
type setup struct {
	instance, class string
	vars            map[string]string
	kv              map[string]map[string][]byte // binding: key: initial value
	calls           []methodCall
}

// methodCall is a runtime method that an option stands for.
type methodCall struct {
	option, method string
	args           []json.RawMessage
}

func (s *session) readSetup(v goja.Value) (*setup, error) {
	o, ok := v.(*goja.Object)
	if !ok {
		return nil, errors.New("internal: options are not an object")
	}
	st := &setup{
		instance: o.Get("instance").String(),
		class:    o.Get("class").String(),
		vars:     map[string]string{},
		kv:       map[string]map[string][]byte{},
	}
	if vars, ok := o.Get("vars").(*goja.Object); ok {
		for _, k := range vars.Keys() {
			st.vars[k] = vars.Get(k).String()
		}
	}
	if kv, ok := o.Get("kv").(*goja.Object); ok {
		for _, binding := range kv.Keys() {
			contents := map[string][]byte{}
			if c, ok := kv.Get(binding).(*goja.Object); ok {
				for _, key := range c.Keys() {
					b, _ := c.Get(key).Export().([]byte)
					contents[key] = bytes.Clone(b)
				}
			}
			st.kv[binding] = contents
		}
	}
	if calls, ok := o.Get("calls").(*goja.Object); ok {
		for _, i := range calls.Keys() {
			c, ok := calls.Get(i).(*goja.Object)
			if !ok {
				continue
			}
			mc := methodCall{option: c.Get("0").String(), method: c.Get("1").String()}
			if err := json.Unmarshal([]byte(c.Get("2").String()), &mc.args); err != nil {
				return nil, fmt.Errorf("%s: the value cannot be sent as JSON: %v", mc.option, err)
			}
			st.calls = append(st.calls, mc)
		}
	}
	return st, nil
}

// instance makes the instance a dispatch or decide runs as: its own
// registry (so concurrent dispatches do not share overrides), the instance
// created with the real validation of ids and classes, and each override
// set through the runtime method it stands for.
func (f *fileRun) instance(ctx context.Context, st *setup) (*instances.Registry, *instances.Instance, error) {
	pol := f.script.pol
	reg, err := instances.Open(ctx, instances.Options{Policy: func() *chain.ScriptPolicy { return pol }})
	if err != nil {
		return nil, nil, err
	}
	inst, _, err := reg.Create(ctx, st.instance, st.class)
	if err != nil {
		if errors.Is(err, instances.ErrUnknownClass) {
			var names []string
			for _, c := range f.script.prog.Info().Classes {
				names = append(names, c.Name)
			}
			return nil, nil, fmt.Errorf("class: %w (the script defines %s)", err, strings.Join(names, ", "))
		}
		return nil, nil, fmt.Errorf("instance: %w", err)
	}
	for _, c := range st.calls {
		if _, err := reg.Call(ctx, inst.ID(), c.method, c.args); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", c.option, err)
		}
	}
	return reg, inst, nil
}

// service is the policy service of one dispatch, wired as serve wires it
// but with the router for its upstream.
func (f *fileRun) service(tr *testRun, reg *instances.Registry, env *jsapi.Env) (*policy.Service, error) {
	return policy.New(policy.Options{
		Scripts:  f.scripts,
		Registry: reg,
		Env:      func() *jsapi.Env { return env },
		Upstream: f.router,
		Logger:   tr.logger,
	})
}

// kvResult is a binding's contents after a dispatch, for the module's
// writeBack: keys whose value changed (as strings), and keys left as they
// were.
type kvResult struct {
	set  map[string]string
	keep []string
}

// dispatched is what a dispatch hands back to JS.
type dispatched struct {
	resp *http.Response
	kv   map[string]kvResult
}

// dispatch serves one request as serve would for the instance the setup
// describes.
func (f *fileRun) dispatch(ctx context.Context, tr *testRun, st *setup, req *http.Request, fl *flight) (*dispatched, error) {
	reg, inst, err := f.instance(ctx, st)
	if err != nil {
		return nil, err
	}
	env := &jsapi.Env{Vars: st.vars, KV: map[string]store.KV{}}
	kvs := map[string]*memkv.KV{}
	for binding, contents := range st.kv {
		kv := memkv.New(binding, nil)
		for k, v := range contents {
			if err := kv.Put(ctx, k, v, time.Time{}); err != nil {
				return nil, fmt.Errorf("env.%s: %w", binding, err)
			}
		}
		kvs[binding] = kv
		env.KV[binding] = kv
	}
	svc, err := f.service(tr, reg, env)
	if err != nil {
		return nil, err
	}
	if e, err := svc.Explain(inst, req.URL.String()); err == nil && e.Handler != nil {
		tr.named(fl, *e.Handler)
	}
	resp, out := f.serve(ctx, svc, inst, req)
	if out.Err != nil {
		var ff *fetchFailure
		switch {
		case errors.As(out.Err, &ff):
			// Already a failure of the test.
		case errors.Is(out.Err, engine.ErrTimeout):
			tr.handlerTimedOut(fl, f.timeout)
		default:
			what := "forwarding"
			if out.Handler != "" {
				what = "handler " + out.Handler
			}
			tr.log(fmt.Sprintf("error: %s: %s", what, shorten(f.r.opts.Dir, out.Err.Error())))
		}
	}
	d := &dispatched{resp: resp, kv: map[string]kvResult{}}
	for binding, kv := range kvs {
		r := kvResult{set: map[string]string{}}
		for k, v := range kv.Snapshot() {
			if old, ok := st.kv[binding][k]; ok && bytes.Equal(old, v) {
				r.keep = append(r.keep, k)
			} else {
				r.set[k] = string(v)
			}
		}
		d.kv[binding] = r
	}
	return d, nil
}

// serve is what the proxy does with the request: an https URL is a
// CONNECT first, refused, tunnelled as is, or intercepted so that the
// request inside goes through the policy service; an http URL goes to the
// policy service.
func (f *fileRun) serve(ctx context.Context, svc *policy.Service, inst *instances.Instance, req *http.Request) (*http.Response, decision.Outcome) {
	if req.URL.Scheme == "https" {
		h, port, err := host.SplitHostPort(req.URL.Host, "443")
		if err != nil {
			return decision.Text(req, http.StatusBadRequest, "bad CONNECT target: want host:port"), decision.Outcome{Step: "bad_request", Err: err, Blocked: true}
		}
		cd := svc.Connect(ctx, inst, h, port)
		switch {
		case !cd.Allow:
			block := cd.Block
			if block == nil {
				block = decision.Blocked(nil)
			}
			block.Request = req
			return block, decision.Outcome{Step: cd.Step, Blocked: true}
		case !cd.Intercept:
			resp, err := f.router.RoundTrip(req)
			if err != nil {
				return decision.Failure(ctx, req, err), decision.Outcome{Step: cd.Step, Err: err}
			}
			return resp, decision.Outcome{Step: cd.Step}
		}
	}
	return svc.Handle(ctx, inst, req)
}

// proxiedURL is the URL the proxy would hand the policy service for raw:
// the canonical host, an https port only when it is not 443, an http port
// only when one was given.
func proxiedURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	scheme := strings.ToLower(u.Scheme)
	def := map[string]string{"http": "80", "https": "443"}[scheme]
	if def == "" || u.Host == "" {
		return nil, fmt.Errorf("%q is not an absolute http:// or https:// URL", raw)
	}
	h, port, err := host.SplitHostPort(u.Host, def)
	if err != nil {
		return nil, err
	}
	hostport := h
	if strings.Contains(h, ":") {
		hostport = "[" + h + "]"
	}
	if (scheme == "http" && u.Port() != "") || (scheme == "https" && port != 443) {
		hostport = net.JoinHostPort(h, strconv.Itoa(port))
	}
	return &url.URL{Scheme: scheme, Host: hostport, Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery}, nil
}

// dispatchJS is the native of dispatch(): (url, method, headers, body,
// setup, where) to a promise of {response, kv}.
func (s *session) dispatchJS(call goja.FunctionCall) goja.Value {
	vm := s.vm
	tr := s.cur
	where := call.Argument(5).String()
	if tr == nil {
		panic(s.errorAt(where, "dispatch() must be called inside a test"))
	}
	if where == "" {
		where = tr.tc.where
	}
	u, err := proxiedURL(call.Argument(0).String())
	if err != nil {
		panic(s.errorAt(where, "dispatch: "+err.Error()))
	}
	st, err := s.readSetup(call.Argument(4))
	if err != nil {
		panic(s.errorAt(where, "dispatch: "+err.Error()))
	}
	ctx := context.WithValue(tr.ctx, callKey{}, &callInfo{tr: tr, where: where})
	req, err := http.NewRequestWithContext(ctx, call.Argument(1).String(), u.String(), nil)
	if err != nil {
		panic(s.errorAt(where, "dispatch: "+err.Error()))
	}
	req.URL = u
	req.Host = u.Host
	if hs, ok := call.Argument(2).(*goja.Object); ok {
		for _, i := range hs.Keys() {
			pair, ok := hs.Get(i).(*goja.Object)
			if !ok {
				continue
			}
			name := pair.Get("0").String()
			if strings.EqualFold(name, "host") {
				continue // the URL's host is the only host, as on the wire
			}
			req.Header.Add(name, pair.Get("1").String())
		}
	}
	if b, ok := call.Argument(3).Export().([]byte); ok {
		body := bytes.Clone(b)
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
	}
	p, resolve, reject := vm.NewPromise()
	fl := &flight{method: req.Method, url: u.String()}
	tr.begin(fl)
	s.f.bg.Add(1)
	go func() {
		defer s.f.bg.Done()
		d, err := s.f.dispatch(ctx, tr, st, req, fl)
		tr.finish(fl)
		ok := s.onLoop(tr, func() {
			if tr.ended {
				if d != nil {
					closeUnsent(d.resp)
				}
				return
			}
			if err != nil {
				_ = reject(s.errorAt(where, "dispatch: "+err.Error()))
				return
			}
			tr.resps = append(tr.resps, d.resp)
			kv := vm.NewObject()
			for binding, r := range d.kv {
				o := vm.NewObject()
				_ = o.Set("set", r.set)
				_ = o.Set("keep", r.keep)
				_ = kv.Set(binding, o)
			}
			res := vm.NewObject()
			_ = res.Set("response", s.realm.NewResponse(d.resp))
			_ = res.Set("kv", kv)
			_ = resolve(res)
		})
		if !ok && d != nil {
			closeUnsent(d.resp)
		}
	}()
	return vm.ToValue(p)
}

// decideJS is the native of decide(): (url, setup, where) to a promise of
// {step, handler, blocked, reason}, from the policy service's Explain.
func (s *session) decideJS(call goja.FunctionCall) goja.Value {
	vm := s.vm
	where := call.Argument(2).String()
	tr := s.cur
	if tr == nil {
		panic(s.errorAt(where, "decide() must be called inside a test"))
	}
	st, err := s.readSetup(call.Argument(1))
	if err != nil {
		panic(s.errorAt(where, "decide: "+err.Error()))
	}
	reg, inst, err := s.f.instance(tr.ctx, st)
	if err != nil {
		panic(s.errorAt(where, "decide: "+err.Error()))
	}
	svc, err := s.f.service(tr, reg, &jsapi.Env{})
	if err != nil {
		panic(s.errorAt(where, "decide: "+err.Error()))
	}
	e, err := svc.Explain(inst, call.Argument(0).String())
	if err != nil {
		panic(s.errorAt(where, "decide: "+err.Error()))
	}
	o := vm.NewObject()
	_ = o.Set("step", e.Step)
	_ = o.Set("handler", optString(vm, e.Handler))
	_ = o.Set("blocked", e.Blocked)
	_ = o.Set("reason", optString(vm, e.Reason))
	p, resolve, _ := vm.NewPromise()
	_ = resolve(o)
	return vm.ToValue(p)
}

func optString(vm *goja.Runtime, s *string) goja.Value {
	if s == nil {
		return goja.Null()
	}
	return vm.ToValue(*s)
}
