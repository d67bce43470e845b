package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/engine"
	"github.com/outbound-dev/outbound/handlers/chain"
	"github.com/outbound-dev/outbound/handlers/instances"
	"github.com/outbound-dev/outbound/internal/decision"
	"github.com/outbound-dev/outbound/jsapi"
)

// staticScripts serves one loaded generation.
type staticScripts struct{ s *Script }

func (s staticScripts) Acquire() (*Script, func()) { return s.s, func() {} }

func loadScript(t *testing.T, name string) *Script {
	t.Helper()
	ctx := context.Background()
	prog, err := engine.Load(ctx, filepath.Join("..", "..", "testdata", "handlers", name), engine.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := chain.CompileScript(prog.Info().Classes)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := engine.NewPool(prog, engine.PoolOptions{Size: 2, Timeout: 500 * time.Millisecond, Fetch: http.DefaultTransport})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return &Script{Policy: pol, Invoker: pool, Info: prog.Info()}
}

type fixture struct {
	svc *Service
	reg *instances.Registry
}

func newFixture(t *testing.T, script string) *fixture {
	t.Helper()
	scripts := staticScripts{loadScript(t, script)}
	reg, err := instances.Open(context.Background(), instances.Options{Policy: PolicyOf(scripts)})
	if err != nil {
		t.Fatal(err)
	}
	env := &jsapi.Env{Vars: map[string]string{"GREETING": "hi"}}
	svc, err := New(Options{Scripts: scripts, Registry: reg, Env: func() *jsapi.Env { return env }, Upstream: http.DefaultTransport})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{svc: svc, reg: reg}
}

func (f *fixture) instance(t *testing.T, id, class string) *instances.Instance {
	t.Helper()
	_, tok, err := f.reg.Create(context.Background(), id, class)
	if err != nil {
		t.Fatal(err)
	}
	inst, ok := f.svc.Authenticate(id, tok)
	if !ok {
		t.Fatal("fresh token refused")
	}
	return inst
}

type result struct {
	status int
	body   string
	out    decision.Outcome
}

func (f *fixture) do(t *testing.T, ctx context.Context, inst *instances.Instance, method, url string) result {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Proxy-Authorization", "Basic c2VjcmV0LXRva2Vu")
	resp, out := f.svc.Handle(ctx, inst, req)
	if resp == nil {
		t.Fatalf("%s %s: nil response", method, url)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return result{resp.StatusCode, string(b), out}
}

func TestServiceHandle(t *testing.T) {
	var upstreamSaw http.Header
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamSaw = r.Header.Clone()
		if r.URL.Path == "/slow" {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return
		}
		io.WriteString(w, "upstream "+r.URL.Path)
	}))
	defer upstream.Close()
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "http://" + dead.Addr().String() + "/x"
	dead.Close()

	f := newFixture(t, "service.js")
	open := f.instance(t, "sbx-open", "Open")
	closed := f.instance(t, "sbx-closed", "Closed")
	ctx := context.Background()

	tests := []struct {
		name     string
		inst     *instances.Instance
		url      string
		status   int
		body     string // substring
		step     string
		handler  string
		notInAny []string
	}{
		{"static by-host handler", open, "http://byhost.test/p", 200, "byhost sbx-open Open hi", "by_host", "outboundByHost[byhost.test]", nil},
		{"uppercase host with trailing dot", open, "http://BYHOST.test./p", 200, "byhost sbx-open", "by_host", "", nil},
		{"static outbound", closed, "https://api.allowed.test/x?q=1", 201, "outbound GET https://api.allowed.test/x?q=1", "outbound", "outbound", nil},
		{"denied: blocked hook answers", open, "http://evil.test/", 520, `"reason":"denied"`, "denied", "blocked", nil},
		{"not allowed: blocked hook answers", closed, "http://other.test/", 520, `"reason":"not_allowed"`, "not_allowed", "blocked", nil},
		{"blocked hook throws: default 520", open, "http://throwblock.test/", 520, "Origin is disallowed", "denied", "blocked", []string{"SECRET"}},
		{"handler throws: 500 without the text", open, "http://throws.test/", 500, "Handler failed", "by_host", "", []string{"SECRET"}},
		{"handler returns a non-Response: 500", open, "http://notresponse.test/", 500, "Handler failed", "by_host", "", nil},
		{"handler runs away: 504", open, "http://loop.test/", 504, "Handler timed out", "by_host", "", nil},
		{"internet: forwarded", open, upstream.URL + "/fwd", 200, "upstream /fwd", "internet", "", nil},
		{"upstream unreachable: 502", open, deadURL, 502, "Upstream unreachable", "internet", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.do(t, ctx, tt.inst, "GET", tt.url)
			if r.status != tt.status || !strings.Contains(r.body, tt.body) || r.out.Step != tt.step {
				t.Fatalf("got %d %q step %q (err %v), want %d %q step %q", r.status, r.body, r.out.Step, r.out.Err, tt.status, tt.body, tt.step)
			}
			if tt.handler != "" && r.out.Handler != tt.handler {
				t.Errorf("handler %q, want %q", r.out.Handler, tt.handler)
			}
			for _, s := range tt.notInAny {
				if strings.Contains(r.body, s) {
					t.Errorf("body %q leaks %q", r.body, s)
				}
			}
			if tt.status >= 500 && tt.status != 520 && r.out.Err == nil {
				t.Error("error outcome without an error for the log")
			}
		})
	}
	if upstreamSaw == nil || upstreamSaw.Get("Proxy-Authorization") != "" {
		t.Fatalf("upstream saw proxy credentials or nothing: %v", upstreamSaw)
	}

	t.Run("upstream timeout: 504", func(t *testing.T) {
		tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		r := f.do(t, tctx, open, "GET", upstream.URL+"/slow")
		if r.status != 504 || r.out.Step != "internet" {
			t.Fatalf("got %d %q %v", r.status, r.body, r.out)
		}
	})

	t.Run("runtime handler gets params; token never reaches JS", func(t *testing.T) {
		if _, err := f.reg.Call(ctx, "sbx-open", "setOutboundHandler", []json.RawMessage{json.RawMessage(`"echo"`), json.RawMessage(`{"allowedHostnames":["github.com"]}`)}); err != nil {
			t.Fatal(err)
		}
		r := f.do(t, ctx, open, "POST", "http://anything.test/a")
		if r.status != 200 || r.out.Step != "outbound_runtime" || r.out.Handler != "echo" {
			t.Fatalf("got %d %q %+v", r.status, r.body, r.out)
		}
		var got struct {
			Params json.RawMessage
			URL    string
			Auth   *string
		}
		json.Unmarshal([]byte(r.body), &got)
		if string(got.Params) != `{"allowedHostnames":["github.com"]}` || got.URL != "http://anything.test/a" || got.Auth != nil {
			t.Fatalf("handler saw %s", r.body)
		}
		// by-host runtime without params: ctx.params is undefined
		f.reg.Call(ctx, "sbx-open", "setOutboundByHost", []json.RawMessage{json.RawMessage(`"*.rt.test"`), json.RawMessage(`"echo"`)})
		r = f.do(t, ctx, open, "GET", "http://a.rt.test/")
		if r.out.Step != "by_host_runtime" || !strings.Contains(r.body, `"params":"undefined"`) {
			t.Fatalf("got %q %+v", r.body, r.out)
		}
		// runtime glob beats static exact key, end to end
		f.reg.Call(ctx, "sbx-open", "setOutboundByHost", []json.RawMessage{json.RawMessage(`"*.test"`), json.RawMessage(`"echo"`), json.RawMessage(`null`)})
		r = f.do(t, ctx, open, "GET", "http://byhost.test/")
		if r.out.Step != "by_host_runtime" || !strings.Contains(r.body, `"params":null`) {
			t.Fatalf("got %q %+v", r.body, r.out)
		}
	})

	t.Run("deleted instance", func(t *testing.T) {
		inst := f.instance(t, "sbx-gone", "Open")
		f.reg.Delete(ctx, "sbx-gone")
		if r := f.do(t, ctx, inst, "GET", "http://byhost.test/"); r.status != 407 {
			t.Fatalf("got %d", r.status)
		}
	})

	t.Run("bad request host", func(t *testing.T) {
		req := &http.Request{Method: "GET", URL: &neturl.URL{Scheme: "ftp", Host: "x.test", Path: "/"}, Header: http.Header{}}
		resp, out := f.svc.Handle(ctx, open, req)
		if resp.StatusCode != 400 || out.Step != "bad_request" {
			t.Fatalf("got %d %+v", resp.StatusCode, out)
		}
	})
}

func TestServiceDefaultBlock(t *testing.T) {
	f := newFixture(t, "noblock.js")
	inst := f.instance(t, "sbx", "")
	ctx := context.Background()
	r := f.do(t, ctx, inst, "GET", "http://other.test/")
	if r.status != 520 || r.body != decision.BlockedBody || r.out.Step != "not_allowed" {
		t.Fatalf("got %d %q %+v", r.status, r.body, r.out)
	}
	if r := f.do(t, ctx, inst, "GET", "http://allowed.test/"); r.status != 200 || r.body != "ok" {
		t.Fatalf("got %d %q", r.status, r.body)
	}
	// empty allowedHosts at runtime blocks everything, handlers included
	f.reg.SetAllowedHosts(ctx, "sbx", []string{})
	if r := f.do(t, ctx, inst, "GET", "http://allowed.test/"); r.status != 520 || r.out.Step != "not_allowed" {
		t.Fatalf("got %d %+v", r.status, r.out)
	}
}

// A block is answered by the class's own hook, the default export's, or
// the module's; a class with none gets the default 520 without a handler
// being invoked.
func TestServiceBlockedHookForms(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		script, class, url string
		status             int
		body, handler      string
	}{
		{"blocked_class.js", "StaticHook", "http://nowhere.test/", 403, `{"hook":"static","reason":"default_deny","className":"StaticHook","self":"StaticHook"}`, "blocked"},
		{"blocked_class.js", "ModuleHook", "http://nowhere.test/", 403, "module ModuleHook default_deny", "blocked"},
		{"blocked_own_only.js", "WithHook", "http://nowhere.test/", 403, "own default_deny", "blocked"},
		{"blocked_own_only.js", "WithoutHook", "http://nowhere.test/", 520, decision.BlockedBody, ""},
		{"blocked_default.js", "", "http://evil.test/", 403, `{"hook":"default","reason":"denied","internet":false}`, "blocked"},
		{"blocked_default.js", "", "http://other.test/", 403, `{"hook":"default","reason":"not_allowed","internet":false}`, "blocked"},
	} {
		t.Run(tc.script+"/"+tc.class+"/"+tc.url, func(t *testing.T) {
			f := newFixture(t, filepath.Join("..", "engine", tc.script))
			r := f.do(t, ctx, f.instance(t, "sbx", tc.class), "GET", tc.url)
			if r.status != tc.status || r.body != tc.body || r.out.Handler != tc.handler || r.out.Err != nil {
				t.Errorf("got %d %q %+v; want %d %q from %q", r.status, r.body, r.out, tc.status, tc.body, tc.handler)
			}
		})
	}
}

func TestServiceConnect(t *testing.T) {
	f := newFixture(t, "service.js")
	open := f.instance(t, "sbx-open", "Open")
	closed := f.instance(t, "sbx-closed", "Closed")
	ctx := context.Background()
	tests := []struct {
		inst             *instances.Instance
		host             string
		port             int
		allow, intercept bool
		step             string
	}{
		{open, "evil.test", 443, true, true, "intercept"},
		{open, "evil.test", 22, false, false, "denied"},
		{open, "ssh.test", 22, true, false, "internet"},
		{closed, "allowed.test", 443, true, false, "allowed_fallback"},
		{closed, "allowed.test", 80, true, false, "allowed_fallback"},
		{closed, "allowed.test", 22, false, false, "default_deny"},
		{closed, "other.test", 443, false, false, "not_allowed"},
	}
	for _, tt := range tests {
		r := f.svc.Connect(ctx, tt.inst, tt.host, tt.port)
		if r.Allow != tt.allow || r.Intercept != tt.intercept || r.Step != tt.step {
			t.Errorf("CONNECT %s %s:%d = %+v, want allow %v intercept %v step %s", tt.inst.ID(), tt.host, tt.port, r, tt.allow, tt.intercept, tt.step)
		}
		if !r.Allow {
			if r.Block == nil || r.Block.StatusCode != 520 {
				t.Errorf("refused CONNECT without a 520: %+v", r.Block)
			} else if b, _ := io.ReadAll(r.Block.Body); string(b) != decision.BlockedBody {
				t.Errorf("block body %q", b)
			}
		}
	}
}

// TestServiceClientGone: a request whose sandbox hung up is recorded as
// 499, not as a handler timeout.
func TestServiceClientGone(t *testing.T) {
	f := newFixture(t, "service.js")
	open := f.instance(t, "sbx-gone", "Open")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, u := range []string{"http://byhost.test/", "http://forwarded.test/"} {
		r := f.do(t, ctx, open, "GET", u)
		if r.status != decision.StatusClientClosed || r.out.Err == nil {
			t.Errorf("%s: got %d (%v), want %d", u, r.status, r.out.Err, decision.StatusClientClosed)
		}
	}
}

// What a handler that did not answer turns into.
func TestHandlerFailure(t *testing.T) {
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	bg := context.Background()
	for _, tc := range []struct {
		ctx    context.Context
		err    error
		status int
		body   string
	}{
		{gone, context.Canceled, decision.StatusClientClosed, "Client closed request"},
		{bg, engine.ErrTimeout, 504, "Handler timed out"},
		{bg, fmt.Errorf("waiting for a runtime: %w", engine.ErrTimeout), 504, "Handler timed out"},
		{bg, context.DeadlineExceeded, 504, "Handler timed out"}, // the caller's deadline, before or during the run
		{bg, engine.ErrBusy, 503, "Too many requests waiting for a handler"},
		{bg, engine.ErrRecycled, 503, "Handler runtime restarted"},
		{bg, &engine.HandlerError{Msg: "SECRET in an exception"}, 500, "Handler failed"},
		{bg, engine.ErrClosed, 500, "Handler failed"},
	} {
		r := handlerFailure(tc.ctx, nil, tc.err)
		b, _ := io.ReadAll(r.Body)
		if r.StatusCode != tc.status || string(b) != tc.body {
			t.Errorf("%v: %d %q, want %d %q", tc.err, r.StatusCode, b, tc.status, tc.body)
		}
		if tc.status == 503 && r.Header.Get("Retry-After") == "" {
			t.Errorf("%v: 503 without Retry-After", tc.err)
		}
	}
}
