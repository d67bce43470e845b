package jsapi

import (
	"math"
	"sort"
	"time"

	"github.com/dop251/goja"
	"github.com/outbound-dev/outbound/internal/store"
)

// maxEnvCache bounds the env objects a realm keeps; an Env is replaced on
// every rotation, so old ones must fall out.
const maxEnvCache = 8

// kvBinding is a KV namespace as JS sees it. Every call runs on its own
// goroutine (the store does I/O) and settles back on the loop.
type kvBinding struct {
	Expando
	kv   store.KV
	name string
}

// Env returns the frozen JS env object for env. It is cached per *Env, which
// is immutable by contract.
func (r *Realm) Env(env *Env) goja.Value {
	if o, ok := r.envCache[env]; ok {
		return o
	}
	if len(r.envCache) >= maxEnvCache {
		clear(r.envCache)
	}
	o := r.vm.NewObject()
	if env != nil {
		names := make([]string, 0, len(env.Vars))
		for k := range env.Vars {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			_ = o.Set(k, env.Vars[k])
		}
		names = names[:0]
		for k := range env.KV {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			_ = o.Set(k, r.wrap(&kvBinding{kv: env.KV[k], name: k}, r.kvProto))
		}
	}
	freeze, _ := goja.AssertFunction(r.vm.Get("Object").ToObject(r.vm).Get("freeze"))
	if _, err := freeze(goja.Undefined(), o); err != nil {
		panic(err)
	}
	r.envCache[env] = o
	return o
}

func (r *Realm) installKV() {
	vm := r.vm
	r.kvProto = vm.NewObject()
	_ = r.kvProto.DefineDataPropertySymbol(goja.SymToStringTag, vm.ToValue("KvNamespace"), goja.FLAG_FALSE, goja.FLAG_TRUE, goja.FLAG_FALSE)
	this := func(call goja.FunctionCall) *kvBinding { return thisAs[*kvBinding](r, call, "KV namespace") }
	key := func(v goja.Value, what string) string {
		if v == nil || goja.IsUndefined(v) || goja.IsNull(v) {
			r.throwType("KV %s: a key is required", what)
		}
		k := v.String()
		if k == "" || k == "." || k == ".." {
			r.throwType("KV %s: invalid key %q", what, k)
		}
		if len(k) > 512 {
			r.throwType("KV %s: key is longer than 512 bytes", what)
		}
		return k
	}
	r.method(r.kvProto, "get", func(call goja.FunctionCall) goja.Value {
		return r.asPromise(func() goja.Value {
			b := this(call)
			k := key(call.Argument(0), "get")
			typ := "text"
			switch a := call.Argument(1).(type) {
			case *goja.Object:
				if t := opt(a, "type"); t != nil {
					typ = t.String()
				}
			default:
				if a != nil && !goja.IsUndefined(a) && !goja.IsNull(a) {
					typ = a.String()
				}
			}
			switch typ {
			case "text", "json", "arrayBuffer", "stream":
			default:
				r.throwType("KV get: unknown type %q (want \"text\", \"json\", \"arrayBuffer\" or \"stream\")", typ)
			}
			ctx := r.curScope().ctx
			return r.goAsync(func() (any, error) {
				v, ok, err := b.kv.Get(ctx, k)
				if !ok && err == nil {
					return nil, nil
				}
				return v, err
			}, func(v any, err error) goja.Value {
				if err != nil {
					r.throwType("KV get %q from %s: %v", k, b.name, err)
				}
				if v == nil {
					return goja.Null()
				}
				data := v.([]byte)
				switch typ {
				case "json":
					out, err := r.jsonParse(goja.Undefined(), vm.ToValue(string(data)))
					if err != nil {
						panic(err)
					}
					return out
				case "arrayBuffer":
					return vm.ToValue(vm.NewArrayBuffer(data))
				case "stream":
					bd := memBody(data)
					st := r.wrap(&stream{b: &bd}, r.streamProto)
					bd.stream = st
					return st
				}
				return vm.ToValue(string(data))
			})
		})
	})
	r.method(r.kvProto, "put", func(call goja.FunctionCall) goja.Value {
		return r.asPromise(func() goja.Value {
			b := this(call)
			k := key(call.Argument(0), "put")
			val := call.Argument(1)
			var data []byte
			if s, ok := val.(goja.String); ok {
				data = []byte(s.String())
			} else if bs, ok := r.bufferSourceBytes(val); ok {
				data = append([]byte(nil), bs...)
			} else if val == nil || goja.IsUndefined(val) || goja.IsNull(val) {
				r.throwType("KV put: a value is required")
			} else {
				data = []byte(val.String())
			}
			var expires time.Time
			if o, ok := call.Argument(2).(*goja.Object); ok {
				if v := opt(o, "expirationTtl"); v != nil {
					ttl := v.ToFloat()
					if math.IsNaN(ttl) || ttl <= 0 || math.IsInf(ttl, 0) {
						r.throwType("KV put: expirationTtl must be a positive number of seconds, got %s", v.String())
					}
					expires = time.Now().Add(time.Duration(ttl * float64(time.Second)))
				} else if v := opt(o, "expiration"); v != nil {
					sec := v.ToFloat()
					if math.IsNaN(sec) || sec <= 0 || math.IsInf(sec, 0) {
						r.throwType("KV put: expiration must be a positive number of seconds since the epoch, got %s", v.String())
					}
					expires = time.Unix(int64(sec), 0)
				}
			}
			ctx := r.curScope().ctx
			return r.goAsync(func() (any, error) {
				return nil, b.kv.Put(ctx, k, data, expires)
			}, func(_ any, err error) goja.Value {
				if err != nil {
					r.throwType("KV put %q into %s: %v", k, b.name, err)
				}
				return goja.Undefined()
			})
		})
	})
	r.method(r.kvProto, "delete", func(call goja.FunctionCall) goja.Value {
		return r.asPromise(func() goja.Value {
			b := this(call)
			k := key(call.Argument(0), "delete")
			ctx := r.curScope().ctx
			return r.goAsync(func() (any, error) {
				return nil, b.kv.Delete(ctx, k)
			}, func(_ any, err error) goja.Value {
				if err != nil {
					r.throwType("KV delete %q from %s: %v", k, b.name, err)
				}
				return goja.Undefined()
			})
		})
	})
	r.method(r.kvProto, "list", func(call goja.FunctionCall) goja.Value {
		return r.asPromise(func() goja.Value {
			b := this(call)
			var prefix, cursor string
			limit := 1000
			if o, ok := call.Argument(0).(*goja.Object); ok {
				if v := opt(o, "prefix"); v != nil && !goja.IsNull(v) {
					prefix = v.String()
				}
				if v := opt(o, "cursor"); v != nil && !goja.IsNull(v) {
					cursor = v.String()
				}
				if v := opt(o, "limit"); v != nil {
					limit = int(v.ToInteger())
					if limit < 1 || limit > 1000 {
						r.throwType("KV list: limit must be between 1 and 1000, got %s", v.String())
					}
				}
			}
			ctx := r.curScope().ctx
			type page struct {
				keys []string
				next string
			}
			return r.goAsync(func() (any, error) {
				keys, next, err := b.kv.List(ctx, prefix, cursor, limit)
				return page{keys, next}, err
			}, func(v any, err error) goja.Value {
				if err != nil {
					r.throwType("KV list %s: %v", b.name, err)
				}
				p := v.(page)
				items := make([]any, len(p.keys))
				for i, k := range p.keys {
					o := vm.NewObject()
					_ = o.Set("name", k)
					items[i] = o
				}
				out := vm.NewObject()
				_ = out.Set("keys", vm.NewArray(items...))
				_ = out.Set("list_complete", p.next == "")
				_ = out.Set("cursor", p.next)
				return out
			})
		})
	})
}
