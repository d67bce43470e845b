package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/handlers/chain"
	"github.com/outbound-dev/outbound/internal/testlog"
	"github.com/outbound-dev/outbound/jsapi"
)

func newPool(t testing.TB, script string, opts PoolOptions) *Pool {
	t.Helper()
	if opts.Fetch == nil {
		opts.Fetch = http.DefaultTransport
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	pl, err := NewPool(mustLoad(t, script), opts)
	if err != nil {
		t.Fatalf("NewPool: %v", err)
	}
	t.Cleanup(pl.Close)
	return pl
}

func call(class string, kind chain.HandlerKind, key string, req *http.Request) Call {
	return Call{Class: class, Handler: chain.HandlerRef{Kind: kind, Key: key}, Request: req, InstanceID: "sbx-1",
		Env: &jsapi.Env{Vars: map[string]string{"SECRET": "s3cr3t", "GREETING": "hi"}}}
}

func readBody(t testing.TB, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}

func TestInvokePlainForm(t *testing.T) {
	pl := newPool(t, "plain.js", PoolOptions{Size: 1})
	ctx := context.Background()

	resp, err := pl.Invoke(ctx, call("default", chain.HandlerOutbound, "", httptest.NewRequest("GET", "http://example.com:8080/p?q=1", nil)))
	if err != nil {
		t.Fatal(err)
	}
	if got := readBody(t, resp); got != "hello GET http://example.com:8080/p?q=1 hi" {
		t.Errorf("body = %q", got)
	}
	if resp.StatusCode != 201 || resp.Header.Get("X-Class") != "default" {
		t.Errorf("status %d, x-class %q", resp.StatusCode, resp.Header.Get("X-Class"))
	}

	resp, err = pl.Invoke(ctx, call("default", chain.HandlerByHost, "github.com", httptest.NewRequest("GET", "https://github.com/", nil)))
	if err != nil {
		t.Fatal(err)
	}
	if got := readBody(t, resp); got != "gh sbx-1" {
		t.Errorf("byHost body = %q", got)
	}

	tests := []struct {
		params json.RawMessage
		want   string
	}{
		{json.RawMessage(`{"allowedHostnames":["github.com"]}`), `{"params":{"allowedHostnames":["github.com"]},"id":"sbx-1","cls":"default","hasParams":true}`},
		{nil, `{"params":"undefined","id":"sbx-1","cls":"default","hasParams":true}`},
	}
	for _, tc := range tests {
		c := call("default", chain.HandlerNamed, "allowHosts", httptest.NewRequest("GET", "https://x.com/", nil))
		c.Params = tc.params
		resp, err := pl.Invoke(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if got := readBody(t, resp); got != tc.want {
			t.Errorf("named body = %s, want %s", got, tc.want)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("content-type = %q", ct)
		}
	}

	resp, err = pl.Invoke(ctx, call("default", chain.HandlerNamed, "noHttp", httptest.NewRequest("GET", "http://x.com/", nil)))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 403 || readBody(t, resp) != "" {
		t.Errorf("noHttp: status %d", resp.StatusCode)
	}

	c := call("default", chain.HandlerBlocked, "", httptest.NewRequest("GET", "http://evil.com/x", nil))
	c.Reason = "denied"
	resp, err = pl.Invoke(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if got := readBody(t, resp); got != `{"blocked":true,"reason":"denied","url":"http://evil.com/x"}` || resp.StatusCode != 520 {
		t.Errorf("blocked: %d %s", resp.StatusCode, got)
	}

	for _, c := range []Call{
		call("nope", chain.HandlerOutbound, "", httptest.NewRequest("GET", "http://x.com/", nil)),
		call("default", chain.HandlerByHost, "missing.com", httptest.NewRequest("GET", "http://x.com/", nil)),
		call("default", chain.HandlerNamed, "missing", httptest.NewRequest("GET", "http://x.com/", nil)),
	} {
		_, err := pl.Invoke(ctx, c)
		var he *HandlerError
		if !errors.As(err, &he) {
			t.Errorf("%+v: err = %v, want a HandlerError", c.Handler, err)
		}
	}
}

func TestInvokeClassForm(t *testing.T) {
	pl := newPool(t, "sandbox.ts", PoolOptions{Size: 1})
	ctx := context.Background()
	for _, tc := range []struct {
		c    Call
		want string
	}{
		{call("MySandbox", chain.HandlerByHost, "github.com", httptest.NewRequest("GET", "https://github.com/", nil)), "helper:gh"},
		{call("FieldForm", chain.HandlerByHost, "b.com", httptest.NewRequest("GET", "https://b.com/", nil)), "b"},
		{call("FieldForm", chain.HandlerNamed, "z", httptest.NewRequest("GET", "https://b.com/", nil)), "z"},
		{call("Replaced", chain.HandlerByHost, "two.com", httptest.NewRequest("GET", "https://two.com/", nil)), "2"},
	} {
		resp, err := pl.Invoke(ctx, tc.c)
		if err != nil {
			t.Fatalf("%s %+v: %v", tc.c.Class, tc.c.Handler, err)
		}
		if got := readBody(t, resp); got != tc.want {
			t.Errorf("%s %+v: body %q, want %q", tc.c.Class, tc.c.Handler, got, tc.want)
		}
	}
	c := call("MySandbox", chain.HandlerNamed, "allowHosts", httptest.NewRequest("GET", "https://x.com/", nil))
	c.Params = json.RawMessage(`{"allowedHostnames":["a.com","b.com"]}`)
	resp, err := pl.Invoke(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if got := readBody(t, resp); got != `["a.com","b.com"]` {
		t.Errorf("params body = %s", got)
	}
	if _, err := pl.Invoke(ctx, call("Replaced", chain.HandlerByHost, "one.com", httptest.NewRequest("GET", "https://one.com/", nil))); err == nil {
		t.Error("replaced outboundByHost key one.com still resolves")
	}
}

// upstream echoes what it received and records the last request.
func upstream(t testing.TB) (*httptest.Server, func() *http.Request) {
	var mu sync.Mutex
	var last *http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		last = r.Clone(context.Background())
		mu.Unlock()
		w.Header().Set("X-Seen", r.Header.Get("X-Auth-Token"))
		w.WriteHeader(200)
		_, _ = w.Write([]byte(r.Method + " " + r.URL.Path + " " + string(b)))
	}))
	t.Cleanup(srv.Close)
	return srv, func() *http.Request { mu.Lock(); defer mu.Unlock(); return last }
}

func TestInvokeCredentialInjection(t *testing.T) {
	srv, last := upstream(t)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	pl := newPool(t, "cred.js", PoolOptions{Size: 1, Fetch: tr})
	req := httptest.NewRequest("GET", srv.URL+"/repo", nil)
	req.Header.Set("X-Auth-Token", "from-sandbox")
	req.Header.Set("Accept", "text/plain")
	resp, err := pl.Invoke(context.Background(), call("default", chain.HandlerOutbound, "", req))
	if err != nil {
		t.Fatal(err)
	}
	if got := readBody(t, resp); got != "GET /repo " {
		t.Errorf("body = %q", got)
	}
	got := last()
	if got.Header.Get("X-Auth-Token") != "s3cr3t" || got.Header.Get("Accept") != "text/plain" {
		t.Errorf("upstream headers = %v", got.Header)
	}
	if req.Header.Get("X-Auth-Token") != "from-sandbox" {
		t.Error("the incoming request's headers were modified")
	}

	// Reading and re-sending a body, and reading the upstream's.
	req = httptest.NewRequest("POST", srv.URL+"/up", strings.NewReader("hello"))
	resp, err = pl.Invoke(context.Background(), call("default", chain.HandlerNamed, "reads", req))
	if err != nil {
		t.Fatal(err)
	}
	if got := readBody(t, resp); got != "200:POST /up HELLO" {
		t.Errorf("reads body = %q", got)
	}

	// new Response(up.body, up) moves the Go stream across.
	req = httptest.NewRequest("PUT", srv.URL+"/rewrap", strings.NewReader("data"))
	resp, err = pl.Invoke(context.Background(), call("default", chain.HandlerNamed, "rewrap", req))
	if err != nil {
		t.Fatal(err)
	}
	if got := readBody(t, resp); got != "PUT /rewrap data" || resp.StatusCode != 200 {
		t.Errorf("rewrap = %d %q", resp.StatusCode, got)
	}
}

// sameResponse is a RoundTripper that returns one fixed response, to check
// that Invoke hands back the very object.
type sameResponse struct{ resp *http.Response }

func (s sameResponse) RoundTrip(r *http.Request) (*http.Response, error) {
	s.resp.Request = r
	return s.resp, nil
}

func TestPassThroughIsZeroCopy(t *testing.T) {
	body := io.NopCloser(strings.NewReader("x"))
	up := &http.Response{StatusCode: 200, Header: http.Header{"A": {"b"}}, Body: body, ContentLength: 1}
	pl := newPool(t, "cred.js", PoolOptions{Size: 1, Fetch: sameResponse{up}})
	in := io.NopCloser(strings.NewReader("upload"))
	req := httptest.NewRequest("POST", "http://example.com/", nil)
	req.Body = in
	resp, err := pl.Invoke(context.Background(), call("default", chain.HandlerNamed, "passthrough", req))
	if err != nil {
		t.Fatal(err)
	}
	if resp != up || resp.Body != body {
		t.Fatal("Invoke did not return the RoundTripper's response as is")
	}
	if up.Request.Body != in {
		t.Fatal("the incoming body was not handed to the outgoing request as is")
	}
}

func TestHandlerFailures(t *testing.T) {
	pl := newPool(t, "failing.js", PoolOptions{Size: 1, Timeout: 500 * time.Millisecond, MaxBodyBytes: 1 << 10})
	ctx := context.Background()
	tests := []struct {
		name    string
		want    string // in HandlerError.Msg; "" means ErrTimeout
		noLeak  bool
		maxTime time.Duration
	}{
		{name: "throws", want: "Error: leaked s3cr3t (at "},
		{name: "nonResponse", want: "did not return a Response (got an object of type Object)"},
		{name: "nothing", want: "did not return a Response (got undefined)"},
		{name: "loop", maxTime: 2 * time.Second},
		{name: "asyncLoop", maxTime: 2 * time.Second},
		{name: "regex", maxTime: 3 * time.Second},
		{name: "recursion", want: "Maximum call stack size exceeded"},
		{name: "reject", want: "TypeError: async nope"},
		{name: "stuck", maxTime: 2 * time.Second},
		{name: "bigBody", want: "body is larger than the 1024-byte limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader
			if tc.name == "bigBody" {
				body = bytes.NewReader(make([]byte, 4096))
			}
			start := time.Now()
			resp, err := pl.Invoke(ctx, call("default", chain.HandlerNamed, tc.name, httptest.NewRequest("POST", "http://x.com/", body)))
			if resp != nil {
				t.Fatalf("got a response: %d", resp.StatusCode)
			}
			if tc.want == "" {
				if !errors.Is(err, ErrTimeout) {
					t.Fatalf("err = %v, want ErrTimeout", err)
				}
				if d := time.Since(start); d > tc.maxTime {
					t.Fatalf("took %v", d)
				}
			} else {
				var he *HandlerError
				if !errors.As(err, &he) || !strings.Contains(he.Msg, tc.want) {
					t.Fatalf("err = %v, want a HandlerError containing %q", err, tc.want)
				}
			}
			// The pool still serves.
			resp, err = pl.Invoke(ctx, call("default", chain.HandlerNamed, "sleepy", httptest.NewRequest("GET", "http://x.com/", nil)))
			if err != nil {
				t.Fatalf("next call: %v", err)
			}
			if got := readBody(t, resp); got != "slept" {
				t.Fatalf("next call body = %q", got)
			}
		})
	}
}

func TestAsyncHandler(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(bytes.Repeat([]byte("y"), 100000))
	}))
	t.Cleanup(srv.Close)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	pl := newPool(t, "async.js", PoolOptions{Size: 1, Fetch: tr})
	resp, err := pl.Invoke(context.Background(), call("default", chain.HandlerOutbound, "", httptest.NewRequest("GET", srv.URL+"/start", nil)))
	if err != nil {
		t.Fatal(err)
	}
	if got := readBody(t, resp); got != "waited=true sum=10 read=100000 id=sbx-1" {
		t.Errorf("body = %q", got)
	}
}

func TestInvocationLifecycle(t *testing.T) {
	logs := &testlog.Buffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	t.Cleanup(slow.Close)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	pl := newPool(t, "lifecycle.js", PoolOptions{Size: 1, Fetch: tr, Logger: logger, Timeout: 2 * time.Second})
	ctx := context.Background()
	inv := func(name string) string {
		t.Helper()
		resp, err := pl.Invoke(ctx, call("default", chain.HandlerNamed, name, httptest.NewRequest("GET", "http://x.com/", nil)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return readBody(t, resp)
	}

	inv("leaveInterval")
	if got := inv("count"); got != "0" {
		t.Errorf("a previous invocation's interval ticked %s times in the next one", got)
	}

	inv("overflowLater")
	time.Sleep(50 * time.Millisecond)
	if got := inv("log"); got != "logged" { // served by a replacement runtime
		t.Errorf("after overflow: %q", got)
	}
	out := logs.String()
	if !strings.Contains(out, "msg=\"from sbx-1\"") || !strings.Contains(out, "instance=sbx-1") || !strings.Contains(out, "class=default") {
		t.Errorf("console log record missing attrs: %s", out)
	}

	// A cancelled caller gets its context's error, not the pool's timeout,
	// as soon as it cancels; the runtime is reused.
	cctx, cancel := context.WithCancel(ctx)
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err := pl.Invoke(cctx, call("default", chain.HandlerNamed, "slowFetch", httptest.NewRequest("GET", slow.URL, nil)))
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
		t.Errorf("cancelled: err %v, want context.Canceled", err)
	}
	if got := inv("log"); got != "logged" {
		t.Errorf("after cancel: %q", got)
	}
}

func TestCloseWaitsForInFlight(t *testing.T) {
	arrived := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		time.Sleep(50 * time.Millisecond)
		_, _ = w.Write([]byte("done"))
	}))
	t.Cleanup(srv.Close)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	pl, err := NewPool(mustLoad(t, "lifecycle.js"), PoolOptions{Size: 1, Fetch: tr, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		resp, err := pl.Invoke(context.Background(), call("default", chain.HandlerNamed, "slowFetch", httptest.NewRequest("GET", srv.URL, nil)))
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-arrived
	pl.Close()
	if s := <-got; s != "done" {
		t.Errorf("in-flight call got %q", s)
	}
	if _, err := pl.Invoke(context.Background(), call("default", chain.HandlerNamed, "log", httptest.NewRequest("GET", "http://x.com/", nil))); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

// The blocked hook is found where the class's policy is: a static on the
// class (declared, assigned or inherited), a property of the default
// export, else the module's named export. A class with none of these has
// no hook, and ClassSpec.HasBlocked says so.
func TestBlockedHookForms(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		script, class string
		has           bool
		status        int
		body          string
	}{
		{"blocked_class.js", "StaticHook", true, 403, `{"hook":"static","reason":"denied","className":"StaticHook","self":"StaticHook"}`},
		{"blocked_class.js", "AssignedHook", true, 451, "assigned denied"},
		{"blocked_class.js", "InheritedHook", true, 403, `{"hook":"static","reason":"denied","className":"InheritedHook","self":"InheritedHook"}`},
		{"blocked_class.js", "ModuleHook", true, 403, "module ModuleHook denied"},
		{"blocked_own_only.js", "WithHook", true, 403, "own denied"},
		{"blocked_own_only.js", "WithoutHook", false, 0, ""},
		{"blocked_default.js", "default", true, 403, `{"hook":"default","reason":"denied","internet":false}`},
		{"sandbox.ts", "MySandbox", false, 0, ""},
	} {
		t.Run(tc.script+"/"+tc.class, func(t *testing.T) {
			pl := newPool(t, tc.script, PoolOptions{Size: 1})
			info := mustLoad(t, tc.script).Info()
			spec := info.Class(tc.class)
			if spec == nil {
				t.Fatalf("no class %s in %+v", tc.class, info.Classes)
			}
			if spec.HasBlocked != tc.has {
				t.Errorf("HasBlocked = %v, want %v", spec.HasBlocked, tc.has)
			}
			c := call(tc.class, chain.HandlerBlocked, "", httptest.NewRequest("GET", "http://evil.test/", nil))
			c.Reason = "denied"
			resp, err := pl.Invoke(ctx, c)
			if !tc.has {
				var he *HandlerError
				if !errors.As(err, &he) {
					t.Fatalf("invoking a hook that does not exist: %v, want a HandlerError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := readBody(t, resp); resp.StatusCode != tc.status || got != tc.body {
				t.Errorf("got %d %s, want %d %s", resp.StatusCode, got, tc.status, tc.body)
			}
		})
	}
}
