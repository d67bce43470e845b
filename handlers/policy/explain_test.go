package policy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outbound-dev/outbound/handlers/chain"
	"github.com/outbound-dev/outbound/handlers/instances"
	"github.com/outbound-dev/outbound/internal/host"
	"github.com/outbound-dev/outbound/jsapi"
)

// answering is an upstream that answers every forward itself: these tests
// name hosts that must never be dialed.
type answering struct{}

func (answering) RoundTrip(req *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 299, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("forwarded")), Request: req}, nil
}

func explainFixture(t *testing.T) *fixture {
	t.Helper()
	scripts := staticScripts{loadScript(t, "service.js")}
	reg, err := instances.Open(context.Background(), instances.Options{Policy: PolicyOf(scripts)})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(Options{Scripts: scripts, Registry: reg, Env: func() *jsapi.Env { return &jsapi.Env{} }, Upstream: answering{}})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{svc: svc, reg: reg}
}

// live serves rawURL as the proxy does (an https URL is a CONNECT first)
// and returns the step and handler the service reported.
func (f *fixture) live(t *testing.T, inst *instances.Instance, rawURL string) (step, handler string) {
	t.Helper()
	ctx := context.Background()
	req, err := http.NewRequestWithContext(ctx, "GET", rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if req.URL.Scheme == "https" {
		h, port, err := host.SplitHostPort(req.URL.Host, "443")
		if err != nil {
			t.Fatal(err)
		}
		cd := f.svc.Connect(ctx, inst, h, port)
		if !cd.Intercept {
			return cd.Step, ""
		}
	}
	resp, out := f.svc.Handle(ctx, inst, req)
	resp.Body.Close()
	return out.Step, out.Handler
}

func TestExplain(t *testing.T) {
	f := explainFixture(t)
	ctx := context.Background()
	open := f.instance(t, "sbx-open", "Open")
	closed := f.instance(t, "sbx-closed", "Closed")
	rt := f.instance(t, "sbx-rt", "Open")
	for _, c := range [][]string{{"setOutboundHandler", `"echo"`}, {"setOutboundByHost", `"*.rt.test"`, `"echo"`, `{"a":1}`}} {
		var args []json.RawMessage
		for _, a := range c[1:] {
			args = append(args, json.RawMessage(a))
		}
		if _, err := f.reg.Call(ctx, "sbx-rt", c[0], args); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		inst    *instances.Instance
		url     string
		step    int
		handler string // "" for null
		reason  string // "" for null
	}{
		{open, "http://byhost.test/p", 4, "outboundByHost[byhost.test]", ""},
		{open, "https://BYHOST.test./p", 4, "outboundByHost[byhost.test]", ""},
		{open, "http://evil.test/", 1, "blocked", "denied"},
		{open, "https://evil.test/", 1, "blocked", "denied"},
		{open, "https://evil.test:8443/", 1, "", "denied"}, // a raw tunnel: refused CONNECT, no hook
		{open, "http://other.test/", 8, "", ""},
		{open, "https://ssh.test:22/", 8, "", ""},
		{rt, "http://anything.test/", 5, "echo", ""},
		{rt, "http://a.rt.test/", 3, "echo", ""},
		{rt, "http://byhost.test/", 4, "outboundByHost[byhost.test]", ""},
		{closed, "http://api.allowed.test/x", 6, "outbound", ""},
		{closed, "https://api.allowed.test/x", 7, "", ""}, // not intercepted: no handler can run
		{closed, "http://other.test/", 2, "blocked", "not_allowed"},
		{closed, "https://other.test/", 2, "", "not_allowed"},
		{closed, "https://allowed.test:22/", 9, "", "default_deny"},
	}
	for _, tt := range tests {
		t.Run(tt.inst.ID()+" "+tt.url, func(t *testing.T) {
			e, err := f.svc.Explain(tt.inst, tt.url)
			if err != nil {
				t.Fatal(err)
			}
			if e.Step != tt.step || deref(e.Handler) != tt.handler || deref(e.Reason) != tt.reason || e.Blocked != (tt.reason != "") {
				t.Fatalf("Explain = step %d handler %q blocked %v reason %q, want step %d handler %q reason %q",
					e.Step, deref(e.Handler), e.Blocked, deref(e.Reason), tt.step, tt.handler, tt.reason)
			}
			// The same request served: the same step and handler.
			step, handler := f.live(t, tt.inst, tt.url)
			if step != chain.Step(e.Step).String() || handler != tt.handler {
				t.Fatalf("served: step %q handler %q; Explain: %s %q", step, handler, chain.Step(e.Step), tt.handler)
			}
		})
	}
}

// Explain names the blocked hook only for a class that has one, its own
// or the module's.
func TestExplainPerClassBlockedHook(t *testing.T) {
	f := newFixture(t, filepath.Join("..", "engine", "blocked_own_only.js"))
	for _, tc := range []struct{ class, handler string }{{"WithHook", "blocked"}, {"WithoutHook", ""}} {
		e, err := f.svc.Explain(f.instance(t, "sbx-"+tc.class, tc.class), "http://nowhere.test/")
		if err != nil {
			t.Fatal(err)
		}
		if e.Step != 9 || deref(e.Handler) != tc.handler {
			t.Errorf("%s: step %d handler %q, want 9 %q", tc.class, e.Step, deref(e.Handler), tc.handler)
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func TestExplainErrors(t *testing.T) {
	f := explainFixture(t)
	inst := f.instance(t, "sbx", "Open")
	for _, u := range []string{"github.com", "ftp://x.test/", "http://[::1/", "http:///path", "http://a b/"} {
		if _, err := f.svc.Explain(inst, u); !errors.Is(err, ErrBadURL) {
			t.Errorf("Explain(%q) = %v, want ErrBadURL", u, err)
		}
	}
	none, err := New(Options{Scripts: staticScripts{nil}, Registry: f.reg, Upstream: answering{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := none.Explain(inst, "http://x.test/"); !errors.Is(err, ErrNoScript) {
		t.Errorf("no script: %v, want ErrNoScript", err)
	}
}
