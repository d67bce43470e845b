package jsapi

import (
	"context"
	"net/http"
	"testing"

	"github.com/dop251/goja"
)

// TakeReturnedFetch hands over a returned fetch only when no JS could see
// the difference. If goja stops recording whether a promise was observed
// where promiseObserved looks, "plain" fails here.
func TestTakeReturnedFetch(t *testing.T) {
	srv := testUpstream(t)
	h := newHarness(t, Config{Fetch: http.DefaultTransport})
	src := `({
		plain: (u) => fetch(u),
		viaRequest: (u) => { const r = new Request(u); r.headers.set("x", "1"); return fetch(r); },
		then: (u) => { const p = fetch(u); p.then(() => {}); return p; },
		awaited: (u) => { const p = fetch(u); (async () => { await p; })(); return p; },
		all: (u) => { const p = fetch(u); Promise.all([p]); return p; },
		timer: (u) => { setTimeout(() => {}, 10000); return fetch(u); },
		two: (u) => { fetch(u); return fetch(u); },
		signal: (u) => fetch(u, { signal: new AbortController().signal }),
		thenable: (u) => { Response.prototype.then = () => {}; return fetch(u); },
	})`
	want := map[string]bool{"plain": true, "viaRequest": true}
	var fns *goja.Object
	h.do(func(vm *goja.Runtime) {
		v, err := vm.RunString(src)
		if err != nil {
			t.Fatal(err)
		}
		fns = v.ToObject(vm)
	})
	for _, name := range []string{"plain", "viaRequest", "then", "awaited", "all", "timer", "two", "signal", "thenable"} {
		t.Run(name, func(t *testing.T) {
			var rf *ReturnedFetch
			h.do(func(vm *goja.Runtime) {
				s := h.realm.Begin(context.Background(), nil, "sbx", "C", nil)
				h.realm.Enter(s)
				fn, _ := goja.AssertFunction(fns.Get(name))
				v, err := fn(goja.Undefined(), vm.ToValue(srv.URL+"/echo"))
				if err != nil {
					t.Fatal(err)
				}
				p, ok := v.Export().(*goja.Promise)
				if !ok {
					t.Fatalf("%s returned %v", name, v)
				}
				rf = h.realm.TakeReturnedFetch(s, p)
				h.realm.Leave()
				h.realm.End(s, nil) // aborts what was not taken
				if _, err := vm.RunString(`delete Response.prototype.then`); err != nil {
					t.Fatal(err)
				}
			})
			if (rf != nil) != want[name] {
				t.Fatalf("taken = %v, want %v", rf != nil, want[name])
			}
			if rf == nil {
				return
			}
			resp, err := rf.Do()
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
		})
	}
}
