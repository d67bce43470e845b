package chain

import (
	"encoding/json"
	"strings"
	"testing"
)

func mustClass(t testing.TB, c ClassSpec) *ClassPolicy {
	t.Helper()
	p, err := CompileClass(c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustRuntime(t testing.TB, o Overrides) *Runtime {
	t.Helper()
	rt, err := CompileOverrides(o)
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func named(m string) HandlerRef  { return HandlerRef{Kind: HandlerNamed, Key: m} }
func byHost(k string) HandlerRef { return HandlerRef{Kind: HandlerByHost, Key: k} }

var outboundRef = HandlerRef{Kind: HandlerOutbound}

func TestDecide(t *testing.T) {
	full := ClassSpec{
		Name:           "Full",
		EnableInternet: true,
		AllowedHosts:   []string{"*.example.com", "example.com", "Static.Example.NET.", "10.0.0.0/8", "192.168.1.1", "*.org", "github.com"},
		DeniedHosts:    []string{"evil.example.com", "*.bad.org", "10.6.6.0/24", "0x7f.1"},
		ByHostKeys:     []string{"*.example.com", "API.example.com", "static.example.net", "10.1.0.0/16"},
		Handlers:       []string{"allowHosts", "noHttp", "tag"},
		HasOutbound:    true,
	}
	bare := ClassSpec{Name: "Bare", EnableInternet: true}
	closed := ClassSpec{Name: "Closed", EnableInternet: false}
	allowOnly := ClassSpec{Name: "AllowOnly", EnableInternet: false, AllowedHosts: []string{"github.com"}}
	emptyAllow := ClassSpec{Name: "EmptyAllow", EnableInternet: true, AllowedHosts: []string{}, ByHostKeys: []string{"*"}, HasOutbound: true, Handlers: []string{"h"}}
	withHandlers := ClassSpec{Name: "H", EnableInternet: false, Handlers: []string{"h", "g"}, HasOutbound: true, ByHostKeys: []string{"static.com", "*.glob.com"}}

	tests := []struct {
		name    string
		class   ClassSpec
		rt      *Overrides
		host    string
		step    Step
		handler HandlerRef
		params  string
		staleBH string
		staleOB string
	}{
		// each step decided by that step
		{name: "1 denied exact", class: full, host: "evil.example.com", step: StepDenied},
		{name: "1 denied glob", class: full, host: "x.bad.org", step: StepDenied},
		{name: "1 denied CIDR", class: full, host: "10.6.6.6", step: StepDenied},
		{name: "1 denied IP spelled differently in pattern", class: full, host: "127.0.0.1", step: StepDenied},
		{name: "1 denied mapped IPv4", class: full, host: "::ffff:127.0.0.1", step: StepDenied},
		{name: "1 denied beats runtime by-host", class: full, host: "evil.example.com",
			rt: &Overrides{ByHost: []HostChoice{{Host: "evil.example.com", Choice: Choice{Method: "tag"}}}}, step: StepDenied},
		{name: "2 not allowed", class: full, host: "example.net", step: StepNotAllowed},
		{name: "2 not allowed gates per-host handlers", class: withHandlers, host: "static.com",
			rt: &Overrides{AllowedHosts: []string{"other.com"}}, step: StepNotAllowed},
		{name: "2 not allowed, IP outside CIDR", class: full, host: "11.0.0.1", step: StepNotAllowed},
		{name: "3 runtime by-host exact", class: full, host: "api.example.com",
			rt:   &Overrides{ByHost: []HostChoice{{Host: "api.example.com", Choice: Choice{Method: "noHttp"}}}},
			step: StepByHostRuntime, handler: named("noHttp")},
		{name: "3 runtime by-host carries params", class: full, host: "github.com",
			rt:   &Overrides{ByHost: []HostChoice{{Host: "github.com", Choice: Choice{Method: "allowHosts", Params: json.RawMessage(`{"a":1}`)}}}},
			step: StepByHostRuntime, handler: named("allowHosts"), params: `{"a":1}`},
		{name: "3 runtime exact beats earlier runtime glob", class: full, host: "api.example.com",
			rt:   &Overrides{ByHost: []HostChoice{{Host: "*.example.com", Choice: Choice{Method: "tag"}}, {Host: "api.example.com", Choice: Choice{Method: "noHttp"}}}},
			step: StepByHostRuntime, handler: named("noHttp")},
		{name: "3 runtime first glob in insertion order", class: full, host: "a.b.example.com",
			rt:   &Overrides{ByHost: []HostChoice{{Host: "*.b.example.com", Choice: Choice{Method: "tag"}}, {Host: "*.example.com", Choice: Choice{Method: "noHttp"}}}},
			step: StepByHostRuntime, handler: named("tag")},
		{name: "4 static by-host exact beats earlier static glob", class: full, host: "api.example.com",
			step: StepByHost, handler: byHost("API.example.com")},
		{name: "4 static by-host glob", class: full, host: "www.example.com",
			step: StepByHost, handler: byHost("*.example.com")},
		{name: "4 static by-host CIDR", class: full, host: "10.1.2.3",
			step: StepByHost, handler: byHost("10.1.0.0/16")},
		{name: "5 runtime catch-all", class: full, host: "example.com",
			rt:   &Overrides{Outbound: &Choice{Method: "allowHosts", Params: json.RawMessage(`null`)}},
			step: StepOutboundRuntime, handler: named("allowHosts"), params: `null`},
		{name: "6 static outbound", class: full, host: "example.com", step: StepOutbound, handler: outboundRef},
		{name: "7 allowed fallback even with internet off", class: allowOnly, host: "github.com", step: StepAllowedFallback},
		{name: "7 runtime allow list set on a closed class", class: closed, host: "x.com",
			rt: &Overrides{AllowedHosts: []string{"x.com"}}, step: StepAllowedFallback},
		{name: "8 internet", class: bare, host: "anything.example", step: StepInternet},
		{name: "9 default deny", class: closed, host: "anything.example", step: StepDefaultDeny},

		// precedence consequences
		{name: "runtime glob beats static exact key", class: withHandlers, host: "static.com",
			rt:   &Overrides{ByHost: []HostChoice{{Host: "*.com", Choice: Choice{Method: "g"}}}},
			step: StepByHostRuntime, handler: named("g")},
		{name: "static per-host beats runtime catch-all", class: withHandlers, host: "a.glob.com",
			rt: &Overrides{Outbound: &Choice{Method: "h"}}, step: StepByHost, handler: byHost("*.glob.com")},
		{name: "runtime catch-all beats static outbound", class: withHandlers, host: "other.com",
			rt: &Overrides{Outbound: &Choice{Method: "h"}}, step: StepOutboundRuntime, handler: named("h")},

		// empty allowedHosts blocks all
		{name: "empty class allowedHosts blocks everything", class: emptyAllow, host: "example.com", step: StepNotAllowed},
		{name: "empty runtime allowedHosts blocks everything", class: bare, host: "example.com",
			rt: &Overrides{AllowedHosts: []string{}}, step: StepNotAllowed},
		{name: "runtime allow list replaces class list", class: emptyAllow, host: "example.com",
			rt: &Overrides{AllowedHosts: []string{"example.com"}}, step: StepByHost, handler: byHost("*")},
		{name: "runtime deny list replaces class list", class: full, host: "evil.example.com",
			rt: &Overrides{DeniedHosts: []string{}}, step: StepByHost, handler: byHost("*.example.com")},
		{name: "runtime deny list applies", class: bare, host: "b.com",
			rt: &Overrides{DeniedHosts: []string{"B.com."}}, step: StepDenied},

		// stale overrides fall through and are reported
		{name: "stale runtime by-host falls to static by-host", class: withHandlers, host: "static.com",
			rt:   &Overrides{ByHost: []HostChoice{{Host: "static.com", Choice: Choice{Method: "gone"}}}},
			step: StepByHost, handler: byHost("static.com"), staleBH: "gone"},
		{name: "stale runtime catch-all falls to static outbound", class: withHandlers, host: "x.org",
			rt: &Overrides{Outbound: &Choice{Method: "gone"}}, step: StepOutbound, handler: outboundRef, staleOB: "gone"},
		{name: "stale overrides fall to default deny", class: closed, host: "x.org",
			rt:   &Overrides{Outbound: &Choice{Method: "gone"}, ByHost: []HostChoice{{Host: "*", Choice: Choice{Method: "gone2"}}}},
			step: StepDefaultDeny, staleBH: "gone2", staleOB: "gone"},

		// host spellings: Decide gets canonical hosts, patterns are normalised
		{name: "pattern with trailing dot and upper case", class: full, host: "static.example.net", step: StepByHost, handler: byHost("static.example.net")},
		{name: "bare IP allow entry", class: full, host: "192.168.1.1", step: StepOutbound, handler: outboundRef},
		{name: "IPv6 not in allow list", class: full, host: "2001:db8::1", step: StepNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustClass(t, tt.class)
			var rt *Runtime
			if tt.rt != nil {
				rt = mustRuntime(t, *tt.rt)
			}
			d := Decide(p, rt, tt.host)
			if d.Step != tt.step {
				t.Fatalf("step = %v, want %v", d.Step, tt.step)
			}
			if tt.step.RunsHandler() && d.Handler != tt.handler {
				t.Errorf("handler = %+v, want %+v", d.Handler, tt.handler)
			}
			if string(d.Params) != tt.params {
				t.Errorf("params = %q, want %q", d.Params, tt.params)
			}
			if d.StaleByHost != tt.staleBH || d.StaleOutbound != tt.staleOB {
				t.Errorf("stale = %q/%q, want %q/%q", d.StaleByHost, d.StaleOutbound, tt.staleBH, tt.staleOB)
			}
			if d.Reason() != tt.step.String() {
				t.Errorf("reason %q", d.Reason())
			}
		})
	}
}

func TestParamsNilIsUndefined(t *testing.T) {
	p := mustClass(t, ClassSpec{Name: "C", Handlers: []string{"h"}})
	rt := mustRuntime(t, Overrides{Outbound: &Choice{Method: "h"}})
	if d := Decide(p, rt, "a.com"); d.Step != StepOutboundRuntime || d.Params != nil {
		t.Fatalf("got %+v, want nil params", d)
	}
}

func TestConnectDecide(t *testing.T) {
	intercept := ClassSpec{Name: "I", EnableInternet: false, InterceptHTTPS: true, AllowedHosts: []string{"github.com"}, DeniedHosts: []string{"evil.com"}}
	tunnel := ClassSpec{Name: "T", EnableInternet: false, AllowedHosts: []string{"github.com"}, DeniedHosts: []string{"evil.com"}}
	open := ClassSpec{Name: "O", EnableInternet: true, DeniedHosts: []string{"evil.com"}, HasOutbound: true}
	closed := ClassSpec{Name: "C", EnableInternet: false, HasOutbound: true, ByHostKeys: []string{"*"}}
	tests := []struct {
		name      string
		class     ClassSpec
		rt        *Overrides
		host      string
		port      int
		step      Step
		allow     bool
		intercept bool
	}{
		{"intercept 443 even if denied (inner requests decide)", intercept, nil, "evil.com", 443, StepIntercept, true, true},
		{"intercept 443", intercept, nil, "github.com", 443, StepIntercept, true, true},
		{"intercept class, port 80 is a tunnel: allowed fallback", intercept, nil, "github.com", 80, StepAllowedFallback, true, false},
		{"intercept class, port 80 denied", intercept, nil, "evil.com", 80, StepDenied, false, false},
		{"intercept class, other port: internet off", intercept, nil, "github.com", 22, StepDefaultDeny, false, false},
		{"tunnel 443 denied", tunnel, nil, "evil.com", 443, StepDenied, false, false},
		{"tunnel 443 not allowed", tunnel, nil, "example.com", 443, StepNotAllowed, false, false},
		{"tunnel 443 allowed fallback with internet off", tunnel, nil, "github.com", 443, StepAllowedFallback, true, false},
		{"tunnel 80 allowed fallback", tunnel, nil, "github.com", 80, StepAllowedFallback, true, false},
		{"allowed host cannot pivot to ssh", tunnel, nil, "github.com", 22, StepDefaultDeny, false, false},
		{"allowed host cannot pivot to smtp", tunnel, nil, "github.com", 25, StepDefaultDeny, false, false},
		{"other port still checks deny first", open, nil, "evil.com", 22, StepDenied, false, false},
		{"other port, internet on", open, nil, "example.com", 22, StepInternet, true, false},
		{"443 internet on, handlers never run on a tunnel", open, nil, "example.com", 443, StepInternet, true, false},
		{"443 closed, static handlers do not open a tunnel", closed, nil, "example.com", 443, StepDefaultDeny, false, false},
		{"runtime deny on tunnel", open, &Overrides{DeniedHosts: []string{"x.com"}}, "x.com", 443, StepDenied, false, false},
		{"runtime empty allow on tunnel", open, &Overrides{AllowedHosts: []string{}}, "x.com", 443, StepNotAllowed, false, false},
		{"runtime allow on closed tunnel", closed, &Overrides{AllowedHosts: []string{"x.com"}}, "x.com", 443, StepAllowedFallback, true, false},
		{"runtime allow, other port, internet off", closed, &Overrides{AllowedHosts: []string{"x.com"}}, "x.com", 8443, StepDefaultDeny, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rt *Runtime
			if tt.rt != nil {
				rt = mustRuntime(t, *tt.rt)
			}
			d := ConnectDecide(mustClass(t, tt.class), rt, tt.host, tt.port)
			if d.Step != tt.step || d.Allow != tt.allow || d.Intercept != tt.intercept {
				t.Fatalf("got %+v (%v), want step %v allow %v intercept %v", d, d.Step, tt.step, tt.allow, tt.intercept)
			}
		})
	}
}

// TestRawDecide: a captured stream that is neither TLS nor HTTP gets the
// rule of a CONNECT to a non-web port even on 80 and 443, and interception
// does not open it.
func TestRawDecide(t *testing.T) {
	intercept := ClassSpec{Name: "I", EnableInternet: false, InterceptHTTPS: true, AllowedHosts: []string{"github.com"}}
	open := ClassSpec{Name: "O", EnableInternet: true, DeniedHosts: []string{"evil.com"}}
	tests := []struct {
		name  string
		class ClassSpec
		host  string
		step  Step
		allow bool
	}{
		{"allowed host, internet off", intercept, "github.com", StepDefaultDeny, false},
		{"not allowed", intercept, "example.com", StepNotAllowed, false},
		{"denied before internet", open, "evil.com", StepDenied, false},
		{"internet on", open, "example.com", StepInternet, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := RawDecide(mustClass(t, tt.class), nil, tt.host)
			if d.Step != tt.step || d.Allow != tt.allow || d.Intercept {
				t.Fatalf("got %+v (%v), want step %v allow %v", d, d.Step, tt.step, tt.allow)
			}
		})
	}
}

func TestCompileScript(t *testing.T) {
	info := []ClassSpec{
		{Name: "A", AllowedHosts: []string{"a.com"}},
		{Name: "B", DeniedHosts: []string{"*.b.com"}},
	}
	s, err := CompileScript(info)
	if err != nil {
		t.Fatal(err)
	}
	if s.Class("A") == nil || s.Class("B") == nil || s.Class("C") != nil {
		t.Fatal("Class lookup wrong")
	}
	if _, ok := s.DefaultClass(); ok {
		t.Fatal("two classes have no default")
	}
	one, _ := CompileScript([]ClassSpec{{Name: "default"}})
	if n, ok := one.DefaultClass(); !ok || n != "default" {
		t.Fatalf("DefaultClass = %q, %v", n, ok)
	}

	bad := []struct {
		c    ClassSpec
		want []string
	}{
		{ClassSpec{Name: "X", AllowedHosts: []string{"ok.com", "bad host"}}, []string{"X", "allowedHosts", `"bad host"`}},
		{ClassSpec{Name: "Y", DeniedHosts: []string{"10.0.0.0/40"}}, []string{"Y", "deniedHosts", `"10.0.0.0/40"`}},
		{ClassSpec{Name: "Z", ByHostKeys: []string{"a.com:443"}}, []string{"Z", "outboundByHost", `"a.com:443"`}},
	}
	for _, b := range bad {
		_, err := CompileScript([]ClassSpec{{Name: "fine"}, b.c})
		if err == nil {
			t.Fatalf("class %s compiled", b.c.Name)
		}
		for _, w := range b.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %s", err, w)
			}
		}
	}
	if _, err := CompileScript([]ClassSpec{{Name: "D"}, {Name: "D"}}); err == nil {
		t.Fatal("duplicate class compiled")
	}
}

func TestOverridesJSON(t *testing.T) {
	o := Overrides{
		AllowedHosts: []string{},
		Outbound:     &Choice{Method: "h", Params: json.RawMessage(`null`)},
		ByHost:       []HostChoice{{Host: "a.com", Choice: Choice{Method: "g"}}, {Host: "*.b.com", Choice: Choice{Method: "h", Params: json.RawMessage(`{"x":[1]}`)}}},
	}
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	var back Overrides
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.AllowedHosts == nil || len(back.AllowedHosts) != 0 {
		t.Errorf("empty list lost: %#v", back.AllowedHosts)
	}
	if back.DeniedHosts != nil {
		t.Errorf("unset list became %#v", back.DeniedHosts)
	}
	if string(back.Outbound.Params) != "null" {
		t.Errorf("explicit null params became %q", back.Outbound.Params)
	}
	if back.ByHost[0].Params != nil || string(back.ByHost[1].Params) != `{"x":[1]}` || back.ByHost[1].Host != "*.b.com" {
		t.Errorf("by-host round trip: %s → %+v", b, back.ByHost)
	}
	c := back.Clone()
	c.AllowedHosts = append(c.AllowedHosts, "x")
	c.ByHost[0].Method = "changed"
	c.Outbound.Method = "changed"
	if len(back.AllowedHosts) != 0 || back.ByHost[0].Method != "g" || back.Outbound.Method != "h" {
		t.Error("Clone shares state")
	}
}

func TestNilScriptPolicy(t *testing.T) {
	var s *ScriptPolicy
	if s.Class("x") != nil {
		t.Fatal("nil policy has a class")
	}
	if _, ok := s.DefaultClass(); ok {
		t.Fatal("nil policy has a default class")
	}
}
