package control_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/internal/store"
	"github.com/outbound-dev/outbound/proxy/control"
	"github.com/outbound-dev/outbound/proxy/control/client"
)

// memKV is a KV kept in a map, enough to exercise routing and escaping.
type memKV struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (k *memKV) Get(_ context.Context, key string) ([]byte, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.m[key]
	return v, ok, nil
}
func (k *memKV) Put(_ context.Context, key string, v []byte, _ time.Time) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.m[key] = v
	return nil
}
func (k *memKV) Delete(_ context.Context, key string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.m, key)
	return nil
}
func (k *memKV) List(context.Context, string, string, int) ([]string, string, error) {
	return nil, "", nil
}

type fakeBackend struct {
	kv       *memKV
	lastArgs []json.RawMessage
}

func (f *fakeBackend) Status() any { return map[string]bool{"ok": true} }
func (f *fakeBackend) CreateInstance(_ context.Context, id, class string, _ []netip.Prefix) (control.Created, error) {
	if id == "taken" {
		return control.Created{}, control.Errorf(http.StatusConflict, "instance %q exists", id)
	}
	return control.Created{ID: id, Class: class, ProxyURL: "http://x:y@127.0.0.1:1", CAPEM: "pem"}, nil
}
func (f *fakeBackend) ListInstances() []any { return nil }
func (f *fakeBackend) GetInstance(id string) (any, error) {
	return nil, control.Errorf(http.StatusNotFound, "no instance %q", id)
}
func (f *fakeBackend) DeleteInstance(context.Context, string) error { return nil }
func (f *fakeBackend) CAPEM(string) ([]byte, error)                 { return []byte("PEM"), nil }
func (f *fakeBackend) HAR(string) ([]byte, error)                   { return []byte(`{"log":{}}`), nil }
func (f *fakeBackend) Call(_ context.Context, id, method string, args []json.RawMessage) (any, error) {
	f.lastArgs = args
	if method == "boom" {
		return nil, context.DeadlineExceeded // an internal error: its text must not be shown
	}
	return map[string]string{"id": id, "method": method}, nil
}
func (f *fakeBackend) Explain(_ context.Context, id, rawURL string) (any, error) {
	if id != "sbx" {
		return nil, control.Errorf(http.StatusNotFound, "no instance %q", id)
	}
	return map[string]any{"step": 8, "handler": nil, "blocked": false, "reason": nil, "url": rawURL}, nil
}

func (f *fakeBackend) KV(binding string) (store.KV, bool) {
	if binding != "KEYS" {
		return nil, false
	}
	return f.kv, true
}

func newAPI(t *testing.T, token string) (*httptest.Server, *fakeBackend) {
	t.Helper()
	b := &fakeBackend{kv: &memKV{m: map[string][]byte{}}}
	srv := httptest.NewServer(control.Handler(control.Options{Backend: b, Token: token}))
	t.Cleanup(srv.Close)
	return srv, b
}

func TestErrorsAreJSON(t *testing.T) {
	srv, _ := newAPI(t, "")
	cases := []struct {
		method, path, body string
		status             int
		contains           string
	}{
		{"POST", "/v1/instances", `{"id": 5}`, 400, "expected string"},
		{"POST", "/v1/instances", `{"id": "a"} trailing`, 400, "trailing"},
		{"POST", "/v1/instances", `{`, 400, "malformed"},
		{"POST", "/v1/instances", `{"id":"taken"}`, 409, "exists"},
		{"POST", "/v1/instances/sbx/allowHost", `{"not":"an array"}`, 400, "expected"},
		{"POST", "/v1/instances/sbx/boom", `[]`, 500, "internal error"},
		{"GET", "/v1/instances/nope", ``, 404, "no instance"},
		{"GET", "/v1/nothing", ``, 404, "no such endpoint"},
		{"GET", "/v1/kv/OTHER/k", ``, 404, "no KV binding"},
		{"POST", "/v1/instances", strings.Repeat(" ", 2<<20), 413, "larger than"},
		{"POST", "/v1/instances/sbx/explain", ``, 400, "empty body"},
		{"POST", "/v1/instances/sbx/explain", `{}`, 400, `"url" is required`},
		{"POST", "/v1/instances/sbx/explain", `{"url":5}`, 400, "expected string"},
		{"POST", "/v1/instances/sbx/explain", `{"url":"http://x/","method":"GE T"}`, 400, "not an HTTP method"},
		{"POST", "/v1/instances/nope/explain", `{"url":"http://x/"}`, 404, "no instance"},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error string }
		err = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != c.status || err != nil || !strings.Contains(e.Error, c.contains) {
			t.Errorf("%s %s: got %d %q (%v), want %d containing %q", c.method, c.path, resp.StatusCode, e.Error, err, c.status, c.contains)
		}
		if strings.Contains(e.Error, "deadline") {
			t.Errorf("internal error text leaked: %q", e.Error)
		}
	}
}

func TestBearerToken(t *testing.T) {
	srv, _ := newAPI(t, "s3cret")
	for _, tok := range []string{"", "wrong", "s3cret2"} {
		_, err := client.New(srv.URL, tok).Status(context.Background())
		if e, ok := err.(*client.APIError); !ok || e.Status != 401 {
			t.Errorf("token %q: got %v, want 401", tok, err)
		}
	}
	if _, err := client.New(srv.URL, "s3cret").Status(context.Background()); err != nil {
		t.Fatalf("right token refused: %v", err)
	}
}

// TestDNSRebinding: a page that rebinds its own name to 127.0.0.1 sends
// that name as Host; the API on loopback refuses it, with or without a
// token, and answers to IP literals and localhost.
func TestDNSRebinding(t *testing.T) {
	for _, token := range []string{"", "s3cret"} {
		srv, _ := newAPI(t, token)
		_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
		for host, want := range map[string]int{
			"evil.example:" + port:    http.StatusMisdirectedRequest,
			"evil.example":            http.StatusMisdirectedRequest,
			"LOCALHOST.evil.example.": http.StatusMisdirectedRequest,
			"127.0.0.1:" + port:       http.StatusOK,
			"[::1]:" + port:           http.StatusOK,
			"localhost:" + port:       http.StatusOK,
			"LocalHost.:" + port:      http.StatusOK,
			"app.localhost:" + port:   http.StatusOK,
			"10.1.2.3:" + port:        http.StatusOK, // an IP literal is not a rebound name
		} {
			for _, path := range []string{"/v1/status", "/v1/instances"} {
				req, _ := http.NewRequest("GET", srv.URL+path, nil)
				req.Host = host
				if token != "" {
					req.Header.Set("Authorization", "Bearer "+token)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					t.Errorf("token %q, Host %q, %s: %d %s, want %d", token, host, path, resp.StatusCode, body, want)
				}
			}
		}
	}
}

func TestKVKeysMayHoldSlashes(t *testing.T) {
	srv, b := newAPI(t, "")
	c := client.New(srv.URL, "")
	ctx := context.Background()
	if err := c.KVPut(ctx, "KEYS", "sbx-1/token", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if got := string(b.kv.m["sbx-1/token"]); got != "v1" {
		t.Fatalf("stored under wrong key: %v", b.kv.m)
	}
	v, err := c.KVGet(ctx, "KEYS", "sbx-1/token")
	if err != nil || string(v) != "v1" {
		t.Fatalf("get: %q %v", v, err)
	}
	if err := c.KVDelete(ctx, "KEYS", "sbx-1/token"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.KVGet(ctx, "KEYS", "sbx-1/token"); err == nil || err.(*client.APIError).Status != 404 {
		t.Fatalf("deleted key: %v", err)
	}
}

func TestRuntimeMethodArgs(t *testing.T) {
	srv, b := newAPI(t, "")
	c := client.New(srv.URL, "")
	args := []json.RawMessage{json.RawMessage(`"allowHosts"`), json.RawMessage(`{"allowedHostnames":["github.com"]}`)}
	if _, err := c.Call(context.Background(), "sbx-1", "setOutboundHandler", args); err != nil {
		t.Fatal(err)
	}
	if len(b.lastArgs) != 2 || string(b.lastArgs[1]) != `{"allowedHostnames":["github.com"]}` {
		t.Fatalf("args reached the backend as %q", b.lastArgs)
	}
}

// TestExplain: explain is its own route, not a runtime method, and takes
// an optional method that changes nothing.
func TestExplain(t *testing.T) {
	srv, b := newAPI(t, "")
	raw, err := client.New(srv.URL, "").Explain(context.Background(), "sbx", "https://github.com/x")
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	json.Unmarshal(raw, &got)
	if got["step"] != 8.0 || got["url"] != "https://github.com/x" {
		t.Fatalf("explain answered %s", raw)
	}
	resp, err := http.Post(srv.URL+"/v1/instances/sbx/explain", "application/json", strings.NewReader(`{"url":"https://github.com/x","method":"POST"}`))
	if err != nil {
		t.Fatal(err)
	}
	withMethod, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(withMethod) != string(raw) {
		t.Fatalf("with a method: %d %s, want the answer without one: %s", resp.StatusCode, withMethod, raw)
	}
	if b.lastArgs != nil {
		t.Fatalf("explain reached the runtime method route with %q", b.lastArgs)
	}
}

// FuzzCallBody: whatever a caller sends as runtime method arguments, the
// API answers 200 or a JSON error below 500, and never panics.
func FuzzCallBody(f *testing.F) {
	for _, s := range []string{`[]`, `["a",{"b":1}]`, `{`, `null`, `"x"`, `[1,2,3]`, "\x00", `[{"a":[[[[[[]]]]]]}]`, `{"id":"x","class":"y"}`} {
		f.Add(s)
	}
	b := &fakeBackend{kv: &memKV{m: map[string][]byte{}}}
	h := control.Handler(control.Options{Backend: b})
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{"/v1/instances/sbx/allowHost", "/v1/instances", "/v1/instances/sbx/explain"} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("POST", path, strings.NewReader(body)))
			if rec.Code >= 500 {
				t.Fatalf("%s %q: status %d", path, body, rec.Code)
			}
			if rec.Code >= 400 && !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("%s %q: error body is not JSON: %q", path, body, rec.Body)
			}
		}
	})
}
