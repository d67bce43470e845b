// Package jsapi is the Workers platform as goja sees it: Request, Response,
// Headers, fetch, URL, crypto, encoding, timers, console, and the env object.
// It knows nothing of policy, instances or sockets: fetch goes through an
// injected http.RoundTripper and KV through store.KV.
//
// Bodies stream. A Request or Response body stays the Go io.ReadCloser it
// came from until JS reads it with text(), json(), arrayBuffer() or bytes(),
// which are capped by Config.MaxBodyBytes. Handing a body on — fetch(request),
// new Request(request), new Response(upstream.body, upstream) — moves that
// same io.ReadCloser, and a fetched Response returned untouched comes out of
// Realm.ToResponse as the RoundTripper's own *http.Response, so downloads,
// uploads and upgrades pass through without a copy. request.body and
// response.body are a minimal ReadableStream: getReader().read(),
// releaseLock(), cancel() and for-await; JS cannot construct its own streams,
// and clone() of a streaming body is refused rather than buffered.
package jsapi

import "github.com/outbound-dev/outbound/internal/store"

// Env is what a handler sees as its env argument. An Env value is immutable
// once built: a rotation of the env file builds a new one, so runtimes may
// cache the JS object made from it keyed by the pointer.
type Env struct {
	Vars map[string]string   // vars and secrets, by name
	KV   map[string]store.KV // KV namespace bindings, by binding name
}
