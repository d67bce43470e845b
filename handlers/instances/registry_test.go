package instances

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outbound-dev/outbound/handlers/chain"
	"github.com/outbound-dev/outbound/internal/store"
	"github.com/outbound-dev/outbound/internal/store/bolt"
)

// policies is a swappable current script, as hot reload would have.
type policies struct {
	p atomic.Pointer[chain.ScriptPolicy]
}

func (p *policies) set(t testing.TB, classes ...chain.ClassSpec) {
	t.Helper()
	sp, err := chain.CompileScript(classes)
	if err != nil {
		t.Fatal(err)
	}
	p.p.Store(sp)
}

func (p *policies) get() *chain.ScriptPolicy { return p.p.Load() }

var sandboxClass = chain.ClassSpec{
	Name:           "MySandbox",
	EnableInternet: false,
	InterceptHTTPS: true,
	AllowedHosts:   []string{"github.com", "*.npmjs.org"},
	Handlers:       []string{"allowHosts", "noHttp"},
	ByHostKeys:     []string{"github.com"},
}

var openClass = chain.ClassSpec{Name: "Open", EnableInternet: true, Handlers: []string{"h"}}

func newRegistry(t testing.TB, st store.Store, classes ...chain.ClassSpec) (*Registry, *policies) {
	t.Helper()
	var pol policies
	if len(classes) == 0 {
		classes = []chain.ClassSpec{sandboxClass, openClass}
	}
	pol.set(t, classes...)
	r, err := Open(context.Background(), Options{Store: st, Policy: pol.get, Home: "127.0.0.1:3128", Now: func() time.Time { return time.Unix(1700000000, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	return r, &pol
}

func openStore(t testing.TB, dir string) *bolt.Bolt {
	t.Helper()
	s, err := bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func raws(js ...string) []json.RawMessage {
	out := make([]json.RawMessage, len(js))
	for i, s := range js {
		out[i] = json.RawMessage(s)
	}
	return out
}

func TestCreateDeleteAuthenticate(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t, openStore(t, t.TempDir()))

	inst, tok, err := r.Create(ctx, "sbx-1", "MySandbox")
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) < 32 || inst.ID() != "sbx-1" || inst.Class() != "MySandbox" {
		t.Fatalf("Create = %s %s %q", inst.ID(), inst.Class(), tok)
	}
	gen, tok2, err := r.Create(ctx, "", "Open")
	if err != nil || !strings.HasPrefix(gen.ID(), "sbx-") || len(gen.ID()) < 12 || tok2 == tok {
		t.Fatalf("generated id %q, %v", gen.ID(), err)
	}
	errCases := []struct {
		id, class string
		want      error
		status    int
	}{
		{"sbx-1", "MySandbox", ErrExists, 409},
		{"sbx-2", "Nope", ErrUnknownClass, 400},
		{"sbx-2", "", ErrUnknownClass, 400}, // two classes: no default
		{"bad id", "Open", ErrBadID, 400},
		{"a:b", "Open", ErrBadID, 400},
		{"a/b", "Open", ErrBadID, 400},
		{strings.Repeat("x", 129), "Open", ErrBadID, 400},
	}
	for _, c := range errCases {
		_, _, err := r.Create(ctx, c.id, c.class)
		if !errors.Is(err, c.want) || Status(err) != c.status {
			t.Errorf("Create(%q, %q) = %v (status %d), want %v (%d)", c.id, c.class, err, Status(err), c.want, c.status)
		}
	}

	if got, ok := r.Authenticate("sbx-1", tok); !ok || got != inst {
		t.Fatal("right token refused")
	}
	for _, c := range [][2]string{{"sbx-1", tok2}, {"sbx-1", ""}, {"sbx-1", tok + "x"}, {"nobody", tok}, {"", ""}} {
		if _, ok := r.Authenticate(c[0], c[1]); ok {
			t.Errorf("Authenticate(%q, %q) succeeded", c[0], c[1])
		}
	}
	if r.Len() != 2 || len(r.List()) != 2 || r.List()[0].ID() > r.List()[1].ID() {
		t.Fatal("List wrong")
	}
	if err := r.Delete(ctx, "sbx-1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Authenticate("sbx-1", tok); ok {
		t.Fatal("deleted instance authenticates")
	}
	if inst.Alive() {
		t.Fatal("deleted instance handle is alive")
	}
	if err := r.Delete(ctx, "sbx-1"); !errors.Is(err, ErrNotFound) || Status(err) != 404 {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := r.Call(ctx, "sbx-1", "allowHost", raws(`"x.com"`)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("method on a deleted instance: %v", err)
	}
	// the id can be reused, with a new token and no old overrides
	if _, tok3, err := r.Create(ctx, "sbx-1", "Open"); err != nil || tok3 == tok {
		t.Fatal(err)
	}
}

func TestDefaultClass(t *testing.T) {
	r, _ := newRegistry(t, nil, chain.ClassSpec{Name: "default"})
	inst, _, err := r.Create(context.Background(), "", "")
	if err != nil || inst.Class() != "default" {
		t.Fatalf("%v %v", inst, err)
	}
}

func viewJSON(t *testing.T, v View) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestViewJSON pins the instance view of docs/control-api.md.
func TestViewJSON(t *testing.T) {
	ctx := context.Background()
	r, _ := newRegistry(t, nil)
	inst, _, _ := r.Create(ctx, "sbx-1", "MySandbox")
	got := viewJSON(t, r.View(inst))
	want := `{"id":"sbx-1","class":"MySandbox","home":"127.0.0.1:3128","enableInternet":false,"interceptHttps":true,"allowedHosts":["github.com","*.npmjs.org"],"deniedHosts":null,"outboundHandler":null,"outboundByHost":{},"created":"2023-11-14T22:13:20Z","caPersisted":false}`
	if got != want {
		t.Fatalf("view\n got %s\nwant %s", got, want)
	}
	r.Call(ctx, "sbx-1", "setOutboundHandler", raws(`"allowHosts"`, `{"allowedHostnames": ["github.com"]}`))
	r.Call(ctx, "sbx-1", "setOutboundByHost", raws(`"Z.example.COM"`, `"noHttp"`))
	v, err := r.Call(ctx, "sbx-1", "setOutboundByHost", raws(`"*.a.com"`, `"allowHosts"`, `null`))
	if err != nil {
		t.Fatal(err)
	}
	got = viewJSON(t, v)
	want = `{"id":"sbx-1","class":"MySandbox","home":"127.0.0.1:3128","enableInternet":false,"interceptHttps":true,"allowedHosts":["github.com","*.npmjs.org"],"deniedHosts":null,"outboundHandler":{"method":"allowHosts","params":{"allowedHostnames":["github.com"]}},"outboundByHost":{"z.example.com":{"method":"noHttp","params":null},"*.a.com":{"method":"allowHosts","params":null}},"created":"2023-11-14T22:13:20Z","caPersisted":false}`
	if got != want {
		t.Fatalf("view\n got %s\nwant %s", got, want)
	}
	var back View
	if err := json.Unmarshal([]byte(got), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.OutboundByHost) != 2 || back.OutboundByHost[0].Host != "z.example.com" || back.OutboundByHost[1].Host != "*.a.com" {
		t.Fatalf("ordered round trip: %+v", back.OutboundByHost)
	}
}

func TestRuntimeMethods(t *testing.T) {
	type step struct {
		method string
		args   []string
		// check is a substring of the view JSON that must appear, or, when
		// err is set, a substring of the error.
		check  string
		err    error
		status int
	}
	tests := []struct {
		name  string
		class string
		steps []step
	}{
		{"setOutboundHandler with and without params", "MySandbox", []step{
			{"setOutboundHandler", []string{`"noHttp"`}, `"outboundHandler":{"method":"noHttp","params":null}`, nil, 0},
			{"setOutboundHandler", []string{`"allowHosts"`, `{"a": [1, 2]}`}, `"outboundHandler":{"method":"allowHosts","params":{"a":[1,2]}}`, nil, 0},
			{"setOutboundHandler", []string{`"missing"`}, `Outbound handler method 'missing' not found in outboundHandlers for MySandbox`, ErrUnknownHandler, 400},
		}},
		{"setOutboundByHost keeps position when replaced", "MySandbox", []step{
			{"setOutboundByHost", []string{`"a.com"`, `"noHttp"`}, `"outboundByHost":{"a.com":{"method":"noHttp","params":null}}`, nil, 0},
			{"setOutboundByHost", []string{`"*.b.com"`, `"noHttp"`}, `"a.com":{"method":"noHttp","params":null},"*.b.com"`, nil, 0},
			{"setOutboundByHost", []string{`"A.com."`, `"allowHosts"`, `7`}, `"outboundByHost":{"a.com":{"method":"allowHosts","params":7},"*.b.com"`, nil, 0},
			{"setOutboundByHost", []string{`"c.com"`, `"nope"`}, `Outbound handler method 'nope' not found in outboundHandlers for MySandbox`, ErrUnknownHandler, 400},
			{"setOutboundByHost", []string{`"bad host"`, `"noHttp"`}, `"bad host"`, ErrBadArgs, 400},
		}},
		{"setOutboundByHosts replaces; fails atomically on one bad name", "MySandbox", []step{
			{"setOutboundByHost", []string{`"old.com"`, `"noHttp"`}, `"old.com"`, nil, 0},
			{"setOutboundByHosts", []string{`{"z.com": "noHttp", "a.com": {"method": "allowHosts", "params": {"x": 1}}, "m.com": {"method": "noHttp"}}`},
				`"outboundByHost":{"z.com":{"method":"noHttp","params":null},"a.com":{"method":"allowHosts","params":{"x":1}},"m.com":{"method":"noHttp","params":null}}`, nil, 0},
			{"setOutboundByHosts", []string{`{"n.com": "noHttp", "q.com": "ghost"}`}, `Outbound handler method 'ghost' not found in outboundHandlers for MySandbox`, ErrUnknownHandler, 400},
			{"setOutboundByHosts", []string{`{"n.com": "noHttp", "bad host": "noHttp"}`}, `"bad host"`, ErrBadArgs, 400},
			{"setOutboundByHosts", []string{`{"n.com": 5}`}, `n.com`, ErrBadArgs, 400},
			{"setOutboundByHosts", []string{`{"n.com": {"params": 1}}`}, `method`, ErrBadArgs, 400},
			{"setOutboundByHosts", []string{`["n.com"]`}, `object`, ErrBadArgs, 400},
			{"setOutboundByHosts", []string{`{}`}, `"outboundByHost":{}`, nil, 0},
		}},
		{"removeOutboundByHost", "MySandbox", []step{
			{"setOutboundByHosts", []string{`{"a.com": "noHttp", "b.com": "noHttp"}`}, `"b.com"`, nil, 0},
			{"removeOutboundByHost", []string{`"A.COM"`}, `"outboundByHost":{"b.com":{"method":"noHttp","params":null}}`, nil, 0},
			{"removeOutboundByHost", []string{`"never.com"`}, `"outboundByHost":{"b.com"`, nil, 0},
		}},
		{"setAllowedHosts and setDeniedHosts", "MySandbox", []step{
			{"setAllowedHosts", []string{`["x.com", "*.y.com", "10.0.0.0/8"]`}, `"allowedHosts":["x.com","*.y.com","10.0.0.0/8"]`, nil, 0},
			{"setAllowedHosts", []string{`[]`}, `"allowedHosts":[]`, nil, 0},
			{"setDeniedHosts", []string{`["Evil.com"]`}, `"deniedHosts":["Evil.com"]`, nil, 0},
			{"setDeniedHosts", []string{`["ok.com", "10.0.0.0/99"]`}, `10.0.0.0/99`, ErrBadArgs, 400},
			{"setAllowedHosts", []string{`"x.com"`}, `array of strings`, ErrBadArgs, 400},
			{"setAllowedHosts", []string{`[1]`}, `array of strings`, ErrBadArgs, 400},
			{"setAllowedHosts", []string{`null`}, `array of strings`, ErrBadArgs, 400},
		}},
		{"allowHost starts from the class list and skips duplicates", "MySandbox", []step{
			{"allowHost", []string{`"new.com"`}, `"allowedHosts":["github.com","*.npmjs.org","new.com"]`, nil, 0},
			{"allowHost", []string{`"github.com"`}, `"allowedHosts":["github.com","*.npmjs.org","new.com"]`, nil, 0},
			{"allowHost", []string{`"bad host"`}, `"bad host"`, ErrBadArgs, 400},
			{"removeAllowedHost", []string{`"GITHUB.com"`}, `"allowedHosts":["github.com","*.npmjs.org","new.com"]`, nil, 0}, // exact only
			{"removeAllowedHost", []string{`"github.com"`}, `"allowedHosts":["*.npmjs.org","new.com"]`, nil, 0},
		}},
		{"allowHost on an unset class list starts from []", "Open", []step{
			{"allowHost", []string{`"only.com"`}, `"allowedHosts":["only.com"]`, nil, 0},
		}},
		{"denyHost and removeDeniedHost", "Open", []step{
			{"removeDeniedHost", []string{`"x.com"`}, `"deniedHosts":null`, nil, 0}, // nothing in effect: stays unset
			{"denyHost", []string{`"x.com"`}, `"deniedHosts":["x.com"]`, nil, 0},
			{"denyHost", []string{`"x.com"`}, `"deniedHosts":["x.com"]`, nil, 0},
			{"denyHost", []string{`"*.y.com"`}, `"deniedHosts":["x.com","*.y.com"]`, nil, 0},
			{"removeDeniedHost", []string{`"x.com"`}, `"deniedHosts":["*.y.com"]`, nil, 0},
			{"removeDeniedHost", []string{`"*.y.com"`}, `"deniedHosts":[]`, nil, 0},
		}},
		{"removeAllowedHost on the class list", "MySandbox", []step{
			{"removeAllowedHost", []string{`"*.npmjs.org"`}, `"allowedHosts":["github.com"]`, nil, 0},
		}},
		{"arity, types and unknown methods", "MySandbox", []step{
			{"setOutboundHandler", nil, `takes 1 to 2 arguments, got 0`, ErrBadArgs, 400},
			{"setOutboundHandler", []string{`"noHttp"`, `1`, `2`}, `got 3`, ErrBadArgs, 400},
			{"setOutboundHandler", []string{`5`}, `argument 1 (name) must be a string`, ErrBadArgs, 400},
			{"setOutboundByHost", []string{`"a.com"`}, `takes 2 to 3`, ErrBadArgs, 400},
			{"setOutboundByHost", []string{`"a.com"`, `null`}, `argument 2 (name) must be a string`, ErrBadArgs, 400},
			{"allowHost", []string{`["a.com"]`}, `must be a string`, ErrBadArgs, 400},
			{"allowHost", []string{`"a.com"`, `"b.com"`}, `takes 1 arguments, got 2`, ErrBadArgs, 400},
			{"removeOutboundByHost", []string{`{}`}, `must be a string`, ErrBadArgs, 400},
			{"dropTables", []string{}, `unknown runtime method`, ErrUnknownMethod, 404},
			{"constructor", []string{}, `unknown runtime method`, ErrUnknownMethod, 404},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			r, _ := newRegistry(t, nil)
			inst, _, err := r.Create(ctx, "sbx", tt.class)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tt.steps {
				before := viewJSON(t, r.View(inst))
				beforeRT := inst.Runtime()
				v, err := r.Call(ctx, "sbx", s.method, raws(s.args...))
				if s.err != nil {
					if !errors.Is(err, s.err) || Status(err) != s.status || !strings.Contains(err.Error(), s.check) {
						t.Fatalf("step %d %s%v: err %v (status %d), want %v (%d) containing %q", i, s.method, s.args, err, Status(err), s.err, s.status, s.check)
					}
					if after := viewJSON(t, r.View(inst)); after != before || inst.Runtime() != beforeRT {
						t.Fatalf("step %d: a failed call changed the instance:\n%s\n%s", i, before, after)
					}
					continue
				}
				if err != nil {
					t.Fatalf("step %d %s%v: %v", i, s.method, s.args, err)
				}
				if got := viewJSON(t, v); !strings.Contains(got, s.check) {
					t.Fatalf("step %d %s%v: view %s lacks %s", i, s.method, s.args, got, s.check)
				}
				if viewJSON(t, r.View(inst)) != viewJSON(t, v) {
					t.Fatalf("step %d: returned view differs from stored view", i)
				}
			}
		})
	}
	if len(Methods()) != 10 {
		t.Fatalf("%d methods: %v", len(Methods()), Methods())
	}
}

func TestUnknownInstance(t *testing.T) {
	r, _ := newRegistry(t, nil)
	_, err := r.Call(context.Background(), "ghost", "allowHost", raws(`"a.com"`))
	if !errors.Is(err, ErrNotFound) || Status(err) != 404 {
		t.Fatalf("%v", err)
	}
}

// TestOverridesDecide checks that method calls reach the chain.
func TestOverridesDecide(t *testing.T) {
	ctx := context.Background()
	r, pol := newRegistry(t, nil)
	inst, _, _ := r.Create(ctx, "sbx", "MySandbox")
	decide := func(h string) chain.Decision {
		return chain.Decide(pol.get().Class(inst.Class()), inst.Runtime(), h)
	}
	if d := decide("github.com"); d.Step != chain.StepByHost {
		t.Fatalf("static: %v", d.Step)
	}
	r.SetOutboundByHost(ctx, "sbx", "*.com", "noHttp", nil)
	if d := decide("github.com"); d.Step != chain.StepByHostRuntime || d.Handler.Key != "noHttp" || d.Params != nil {
		t.Fatalf("runtime glob beats static exact: %+v", d)
	}
	r.SetDeniedHosts(ctx, "sbx", []string{"github.com"})
	if d := decide("github.com"); d.Step != chain.StepDenied {
		t.Fatalf("deny: %v", d.Step)
	}
	r.SetAllowedHosts(ctx, "sbx", nil)
	if d := decide("x.npmjs.org"); d.Step != chain.StepNotAllowed {
		t.Fatalf("empty allow: %v", d.Step)
	}
}

func TestStaleAfterReload(t *testing.T) {
	ctx := context.Background()
	r, pol := newRegistry(t, nil)
	inst, _, _ := r.Create(ctx, "sbx", "MySandbox")
	if _, err := r.SetOutboundHandler(ctx, "sbx", "noHttp", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SetOutboundByHost(ctx, "sbx", "github.com", "allowHosts", json.RawMessage(`1`)); err != nil {
		t.Fatal(err)
	}
	// reload: noHttp and allowHosts are gone
	reloaded := sandboxClass
	reloaded.Handlers = []string{"other"}
	reloaded.HasOutbound = true
	pol.set(t, reloaded)
	v := r.View(inst)
	if len(v.Stale) != 2 || v.Stale[0].Method != "noHttp" || v.Stale[1].Host != "github.com" {
		t.Fatalf("stale = %+v", v.Stale)
	}
	if !strings.Contains(viewJSON(t, v), `"stale":[{"override":"outboundHandler","method":"noHttp"},{"override":"outboundByHost","host":"github.com","method":"allowHosts"}]`) {
		t.Fatalf("view JSON: %s", viewJSON(t, v))
	}
	d := chain.Decide(pol.get().Class("MySandbox"), inst.Runtime(), "github.com")
	if d.Step != chain.StepByHost || d.StaleByHost != "allowHosts" {
		t.Fatalf("stale by-host should fall through to static: %+v", d)
	}
	d = chain.Decide(pol.get().Class("MySandbox"), inst.Runtime(), "x.npmjs.org")
	if d.Step != chain.StepOutbound || d.StaleOutbound != "noHttp" {
		t.Fatalf("stale catch-all should fall through to static outbound: %+v", d)
	}
	// new calls validate against the new script
	if _, err := r.SetOutboundHandler(ctx, "sbx", "noHttp", nil); !errors.Is(err, ErrUnknownHandler) {
		t.Fatalf("%v", err)
	}
	// the handlers come back: the overrides work again
	pol.set(t, sandboxClass)
	if v := r.View(inst); len(v.Stale) != 0 {
		t.Fatalf("still stale: %+v", v.Stale)
	}
	if d := chain.Decide(pol.get().Class("MySandbox"), inst.Runtime(), "github.com"); d.Step != chain.StepByHostRuntime || string(d.Params) != "1" {
		t.Fatalf("%+v", d)
	}
	// the class disappears entirely
	pol.set(t, openClass)
	if v := r.View(inst); !v.ClassMissing {
		t.Fatal("class missing not flagged")
	}
	if _, err := r.SetOutboundHandler(ctx, "sbx", "h", nil); err == nil || err.Error() != "Outbound handler method 'h' not found in outboundHandlers for MySandbox" {
		t.Fatalf("%v", err)
	}
}

func TestPersistenceAcrossReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := bolt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := newRegistry(t, st)
	_, tok, _ := r.Create(ctx, "sbx-1", "MySandbox")
	r.Create(ctx, "sbx-2", "Open")
	_, tok3, _ := r.Create(ctx, "sbx-3", "Open")
	steps := [][]string{
		{"setOutboundHandler", `"allowHosts"`, `{"allowedHostnames":["github.com"]}`},
		{"setOutboundByHosts", `{"z.com": "noHttp", "*.a.com": {"method": "allowHosts", "params": null}}`},
		{"allowHost", `"new.com"`},
		{"setDeniedHosts", `[]`},
	}
	for _, s := range steps {
		if _, err := r.Call(ctx, "sbx-1", s[0], raws(s[1:]...)); err != nil {
			t.Fatal(err)
		}
	}
	r.Delete(ctx, "sbx-2")
	in1, _ := r.Get("sbx-1")
	wantView := viewJSON(t, r.View(in1))
	st.Close()

	st2 := openStore(t, dir)
	r2, _ := newRegistry(t, st2)
	if r2.Len() != 2 {
		t.Fatalf("%d instances after reopen", r2.Len())
	}
	got, ok := r2.Authenticate("sbx-1", tok)
	if !ok {
		t.Fatal("token does not work after reopen")
	}
	if v := viewJSON(t, r2.View(got)); v != wantView {
		t.Fatalf("view after reopen\n got %s\nwant %s", v, wantView)
	}
	if _, ok := r2.Authenticate("sbx-3", tok3); !ok {
		t.Fatal("sbx-3 lost")
	}
	if _, ok := r2.Get("sbx-2"); ok {
		t.Fatal("deleted instance came back")
	}
	// the restored runtime decides as before
	d := chain.Decide(r2.opts.Policy().Class("MySandbox"), got.Runtime(), "x.a.com")
	if d.Step != chain.StepNotAllowed {
		t.Fatalf("x.a.com is not in the allow list: %v", d.Step)
	}
	d = chain.Decide(r2.opts.Policy().Class("MySandbox"), got.Runtime(), "z.com")
	if d.Step != chain.StepNotAllowed {
		t.Fatalf("%v", d.Step)
	}
	d = chain.Decide(r2.opts.Policy().Class("MySandbox"), got.Runtime(), "new.com")
	if d.Step != chain.StepOutboundRuntime || string(d.Params) != `{"allowedHostnames":["github.com"]}` {
		t.Fatalf("%+v", d)
	}
}

// TestConcurrentDecisions races deciders against method calls: each
// decision sees one consistent snapshot (the allow and deny lists of a
// snapshot always agree on the marker host).
func TestConcurrentDecisions(t *testing.T) {
	ctx := context.Background()
	r, pol := newRegistry(t, openStore(t, t.TempDir()))
	inst, _, _ := r.Create(ctx, "sbx", "Open")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var decisions atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				rt := inst.Runtime()
				cls := pol.get().Class("Open")
				a := chain.Decide(cls, rt, "a.com")
				b := chain.Decide(cls, rt, "b.com")
				// setOutboundByHosts always maps both hosts to the same handler
				if a.Step != b.Step || a.Handler != b.Handler {
					t.Errorf("torn snapshot: %+v vs %+v", a, b)
					return
				}
				decisions.Add(1)
			}
		}()
	}
	for i := range 50 {
		m := "h"
		if _, err := r.SetOutboundByHosts(ctx, "sbx", []chain.HostChoice{
			{Host: "a.com", Choice: chain.Choice{Method: m, Params: json.RawMessage(fmt.Sprint(i))}},
			{Host: "b.com", Choice: chain.Choice{Method: m, Params: json.RawMessage(fmt.Sprint(i))}},
		}); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			r.SetOutboundByHosts(ctx, "sbx", nil)
		}
	}
	close(stop)
	wg.Wait()
	if decisions.Load() == 0 {
		t.Fatal("no decisions ran")
	}
}

func TestNoScriptLoaded(t *testing.T) {
	r, err := Open(context.Background(), Options{Policy: func() *chain.ScriptPolicy { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Create(context.Background(), "x", "C"); !errors.Is(err, ErrUnknownClass) {
		t.Fatalf("%v", err)
	}
}

// TestSources: the transparent listener's client ranges name one instance
// each, survive a restart, show in the view, and are gone with the
// instance.
func TestSources(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	r, _ := newRegistry(t, st, chain.ClassSpec{Name: "A"})
	ctx := context.Background()
	p := netip.MustParsePrefix
	a, _, err := r.Create(ctx, "sbx-a", "", p("10.0.3.7/32"), p("fd00:1::/64"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Create(ctx, "sbx-b", "", p("10.0.3.0/24")); !errors.Is(err, ErrSourceTaken) || Status(err) != 409 {
		t.Fatalf("overlapping sources: %v", err)
	}
	if _, _, err := r.Create(ctx, "sbx-c", "", p("10.0.4.0/24"), p("10.0.4.8/29")); !errors.Is(err, ErrBadArgs) {
		t.Fatalf("self-overlapping sources: %v", err)
	}
	if _, _, err := r.Create(ctx, "sbx-d", "", p("::ffff:10.0.5.0/120")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ addr, want string }{
		{"10.0.3.7", "sbx-a"}, {"::ffff:10.0.3.7", "sbx-a"}, {"fd00:1::9", "sbx-a"}, {"10.0.5.3", "sbx-d"}, {"10.0.3.8", ""},
	} {
		got, ok := r.BySource(netip.MustParseAddr(tc.addr))
		if (tc.want == "") == ok || ok && got.ID() != tc.want {
			t.Errorf("BySource(%s) = %v, %v; want %q", tc.addr, got, ok, tc.want)
		}
	}
	if v := viewJSON(t, r.View(a)); !strings.Contains(v, `"sources":["10.0.3.7/32","fd00:1::/64"]`) {
		t.Fatalf("view: %s", v)
	}
	st.Close()
	r2, _ := newRegistry(t, openStore(t, dir), chain.ClassSpec{Name: "A"})
	if got, ok := r2.BySource(netip.MustParseAddr("10.0.3.7")); !ok || got.ID() != "sbx-a" {
		t.Fatal("sources lost on restart")
	}
	if err := r2.Delete(ctx, "sbx-a"); err != nil {
		t.Fatal(err)
	}
	if _, ok := r2.BySource(netip.MustParseAddr("10.0.3.7")); ok {
		t.Fatal("a deleted instance still owns its sources")
	}
}

// OnChange hears of every method call that changed an instance, after it is
// published (a decision made inside the callback sees the new state), and of
// nothing that failed.
func TestOnChange(t *testing.T) {
	ctx := context.Background()
	var pol policies
	pol.set(t, sandboxClass, openClass)
	var r *Registry
	var heard []string
	r, err := Open(ctx, Options{Policy: pol.get, OnChange: func(id string) {
		inst, _ := r.Get(id)
		heard = append(heard, fmt.Sprintf("%s %q", id, inst.Overrides().DeniedHosts))
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Create(ctx, "sbx-1", "Open"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		method string
		args   []json.RawMessage
		ok     bool
	}{
		{"denyHost", raws(`"a.test"`), true},
		{"setDeniedHosts", raws(`["b.test"]`), true},
		{"setDeniedHosts", raws(`["bad["]`), false},
		{"setOutboundHandler", raws(`"missing"`), false},
		{"setOutboundHandler", raws(`"h"`), true},
	} {
		if _, err := r.Call(ctx, "sbx-1", c.method, c.args); (err == nil) != c.ok {
			t.Fatalf("%s: %v", c.method, err)
		}
	}
	want := []string{`sbx-1 ["a.test"]`, `sbx-1 ["b.test"]`, `sbx-1 ["b.test"]`}
	if !slices.Equal(heard, want) {
		t.Fatalf("OnChange heard %q, want %q", heard, want)
	}
}
