// Package jsapi is the Workers platform as goja sees it: Request, Response,
// Headers, fetch, URL, crypto, encoding, timers, console, and the env object.
// It knows nothing of policy, instances or sockets: fetch goes through an
// injected http.RoundTripper and KV through the KV interface.
package jsapi

import (
	"context"
	"time"
)

// Env is what a handler sees as its env argument. An Env value is immutable
// once built: a rotation of the env file builds a new one, so runtimes may
// cache the JS object made from it keyed by the pointer.
type Env struct {
	Vars map[string]string // vars and secrets, by name
	KV   map[string]KV     // KV namespace bindings, by binding name
}

// KV is one KV namespace binding. The embedded store implements it.
type KV interface {
	Get(ctx context.Context, key string) (value []byte, ok bool, err error)
	// Put stores value; a zero expires means it never expires.
	Put(ctx context.Context, key string, value []byte, expires time.Time) error
	Delete(ctx context.Context, key string) error
	// List returns up to limit keys with prefix, after cursor, in key order.
	// next is "" when the listing is complete.
	List(ctx context.Context, prefix, cursor string, limit int) (keys []string, next string, err error)
}
