package jsapi

import (
	"net/http"
	"testing"

	"github.com/dop251/goja"
)

const constructAll = `(function (name, value, url) {
  const expectTypeError = (f) => {
    try { return f(); } catch (e) {
      if (!(e instanceof TypeError)) throw new Error("not a TypeError: " + e);
    }
  };
  const h = expectTypeError(() => new Headers([[name, value]]));
  if (h !== undefined) {
    const got = h.get(name);
    if (typeof got !== "string") throw new Error("Headers.get returned " + typeof got);
    for (const [k] of h) if (k !== k.toLowerCase()) throw new Error("header name not lower-cased: " + k);
  }
  const u = expectTypeError(() => new URL(url));
  if (u !== undefined && typeof u.href !== "string") throw new Error("URL without href");
  expectTypeError(() => new URLSearchParams(value).toString());
  const r = expectTypeError(() => new Request(url, { headers: [[name, value]] }));
  if (r !== undefined) {
    const copy = new Request(r);
    if (copy.url !== r.url) throw new Error("copy changed the URL");
  }
})`

// FuzzHeadersAndURL: whatever names, values and URLs a script builds
// objects from, construction either works or throws a TypeError; nothing
// panics in Go or breaks the runtime.
func FuzzHeadersAndURL(f *testing.F) {
	for _, s := range [][3]string{
		{"x-auth", "token", "https://api.example.com/a?b=c"},
		{"Content-Type", "text/plain; charset=utf-8", "http://[::1]:8080/"},
		{"bad name", "v", "not a url"},
		{"x", "line\r\nbreak", "https://xn--80ak6aa92e.com/"},
		{"", "", ""},
		{"x\x00", "\x00", "http://a\x00b/"},
		{"set-cookie", "a=b; Path=/", "https://user:pass@example.com:443/p#f"},
		{"x", "\u00e9\u4e16", "http://例え.テスト/パス"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	h := newHarness(f, Config{Fetch: http.DefaultTransport})
	var fn goja.Callable
	h.do(func(vm *goja.Runtime) {
		v, err := vm.RunString(constructAll)
		if err != nil {
			f.Fatal(err)
		}
		fn, _ = goja.AssertFunction(v)
	})
	f.Fuzz(func(t *testing.T, name, value, url string) {
		var err error
		h.do(func(vm *goja.Runtime) {
			_, err = fn(goja.Undefined(), vm.ToValue(name), vm.ToValue(value), vm.ToValue(url))
		})
		if err != nil {
			t.Fatalf("Headers(%q: %q) / URL(%q): %v", name, value, url, err)
		}
	})
}
