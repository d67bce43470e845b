package jsapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dop251/goja"
	"github.com/outbound-dev/outbound/internal/store"
	"github.com/outbound-dev/outbound/internal/store/memkv"
)

type brokenKV struct{}

var errStore = errors.New("disk on fire")

func (brokenKV) Get(context.Context, string) ([]byte, bool, error)    { return nil, false, errStore }
func (brokenKV) Put(context.Context, string, []byte, time.Time) error { return errStore }
func (brokenKV) Delete(context.Context, string) error                 { return errStore }
func (brokenKV) List(context.Context, string, string, int) ([]string, string, error) {
	return nil, "", errStore
}

func testUpstream(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Seen", r.Header.Get("X-Auth-Token"))
		_, _ = w.Write([]byte(r.Method + " " + r.URL.Path + " " + string(b)))
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/echo", http.StatusFound)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(bytes.Repeat([]byte("x"), 200000))
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// harness runs JS on a loop, one call at a time.
type harness struct {
	loop  *SerialLoop
	realm *Realm
}

func newHarness(t testing.TB, cfg Config) *harness {
	t.Helper()
	loop := NewSerialLoop()
	r, err := Install(NewRuntime(), loop, cfg)
	if err != nil {
		t.Fatal(err)
	}
	loop.Start()
	t.Cleanup(func() {
		loop.Stop()
		<-loop.Done()
		r.Wait()
	})
	return &harness{loop: loop, realm: r}
}

// do runs f on the loop and waits for it.
func (h *harness) do(f func(vm *goja.Runtime)) {
	done := make(chan struct{})
	h.loop.Run(func() { defer close(done); f(h.realm.VM()) })
	<-done
}

// await calls fn and waits for the promise it returns; it reports the
// rejection as an error.
func (h *harness) await(t *testing.T, fn goja.Callable, args ...goja.Value) error {
	t.Helper()
	res := make(chan error, 1)
	var s *Scope
	h.do(func(vm *goja.Runtime) {
		s = h.realm.Begin(context.Background(), nil, "sbx-test", "TestClass", nil)
		h.realm.Enter(s)
		defer h.realm.Leave()
		v, err := fn(goja.Undefined(), args...)
		if err != nil {
			res <- err
			return
		}
		p, ok := v.Export().(*goja.Promise)
		if !ok {
			res <- nil
			return
		}
		then, _ := goja.AssertFunction(v.ToObject(vm).Get("then"))
		_, _ = then(v, vm.ToValue(func(goja.FunctionCall) goja.Value { res <- nil; return goja.Undefined() }),
			vm.ToValue(func(c goja.FunctionCall) goja.Value {
				msg := c.Argument(0).String()
				if o, ok := c.Argument(0).(*goja.Object); ok {
					if st := o.Get("stack"); st != nil && !goja.IsUndefined(st) {
						msg = st.String()
					}
				}
				res <- errors.New(msg)
				return goja.Undefined()
			}))
		_ = p
	})
	select {
	case err := <-res:
		h.do(func(*goja.Runtime) { h.realm.End(s, nil) })
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("timed out")
		return nil
	}
}

type recordHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func TestWebAPIs(t *testing.T) {
	srv := testUpstream(t)
	logs := &recordHandler{}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	h := newHarness(t, Config{Fetch: tr, Logger: slog.New(logs)})
	src, err := os.ReadFile(filepath.Join("..", "testdata", "engine", "webapi.js"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	tests := map[string]goja.Callable{}
	h.do(func(vm *goja.Runtime) {
		env := &Env{Vars: map[string]string{"SECRET": "s3cr3t"}, KV: map[string]store.KV{"KV": memkv.New("KV", nil), "BROKEN": brokenKV{}}}
		_ = vm.Set("env", h.realm.Env(env))
		_ = vm.Set("UPSTREAM", srv.URL)
		if _, err := vm.RunScript("webapi.js", string(src)); err != nil {
			t.Errorf("webapi.js: %v", err)
			return
		}
		obj := vm.Get("tests").ToObject(vm)
		for _, k := range obj.Keys() {
			fn, _ := goja.AssertFunction(obj.Get(k))
			tests[k] = fn
			names = append(names, k)
		}
	})
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if err := h.await(t, tests[name]); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("console went to slog with instance and class", func(t *testing.T) {
		logs.mu.Lock()
		defer logs.mu.Unlock()
		var got []string
		for _, r := range logs.recs {
			attrs := map[string]string{}
			r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
			if attrs["instance"] != "sbx-test" || attrs["class"] != "TestClass" {
				t.Errorf("record %q has attrs %v", r.Message, attrs)
			}
			got = append(got, r.Level.String()+" "+strings.SplitN(r.Message, "\n", 2)[0])
		}
		want := []string{
			`INFO hello {"a":1} [1,"x"] null undefined 5`,
			"WARN careful",
			"ERROR Error: bad thing",
			"DEBUG details",
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("console records:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
}

func TestInstallNeedsFetch(t *testing.T) {
	if _, err := Install(NewRuntime(), NewSerialLoop(), Config{}); err == nil {
		t.Fatal("Install without Fetch succeeded")
	}
}

// No require, no process: the host environment stays out of JS.
func TestNoHostAccess(t *testing.T) {
	h := newHarness(t, Config{Fetch: http.DefaultTransport})
	h.do(func(vm *goja.Runtime) {
		for _, expr := range []string{"typeof require", "typeof process", "typeof setImmediate"} {
			v, err := vm.RunString(expr)
			if err != nil {
				t.Error(err)
				return
			}
			if v.String() != "undefined" {
				t.Errorf("%s = %s", expr, v)
			}
		}
	})
}

// TestNewResponse: a Go response handed to JS (what a handler test's
// dispatch resolves to) reads like a fetched one, and its url is its
// request's.
func TestNewResponse(t *testing.T) {
	h := newHarness(t, Config{Fetch: http.DefaultTransport})
	req := httptest.NewRequest("GET", "https://example.com/x?y=1", nil)
	resp := &http.Response{
		StatusCode: 520, Status: "520 Origin is disallowed",
		Header:  http.Header{"Content-Type": {"text/plain"}},
		Body:    io.NopCloser(strings.NewReader("Origin is disallowed")),
		Request: req,
	}
	var check goja.Callable
	h.do(func(vm *goja.Runtime) {
		_ = vm.Set("res", h.realm.NewResponse(resp))
		v, err := vm.RunString(`(async () => {
			if (!(res instanceof Response)) throw new Error("not a Response");
			const got = [res.status, res.statusText, res.url, res.headers.get("content-type"), await res.text()].join("|");
			if (got !== "520|Origin is disallowed|https://example.com/x?y=1|text/plain|Origin is disallowed") throw new Error(got);
			try { res.headers.set("x", "y"); throw new Error("headers are mutable"); } catch (e) { if (!(e instanceof TypeError)) throw e; }
		})`)
		if err != nil {
			t.Error(err)
			return
		}
		check, _ = goja.AssertFunction(v)
	})
	if err := h.await(t, check); err != nil {
		t.Fatal(err)
	}
}
