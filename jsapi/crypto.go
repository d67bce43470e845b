package jsapi

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"hash"
	"reflect"
	"strings"

	"github.com/dop251/goja"
)

// cryptoKey is a CryptoKey. Only HMAC secret keys exist here; the key bytes
// never become visible to JS unless the key is extractable and exported.
type cryptoKey struct {
	Expando
	hash        string // SHA-256, ...
	secret      []byte
	extractable bool
	usages      []string
	algorithm   *goja.Object
}

func hashFunc(name string) (func() hash.Hash, string, bool) {
	switch strings.ToUpper(name) {
	case "SHA-1":
		return sha1.New, "SHA-1", true
	case "SHA-256":
		return sha256.New, "SHA-256", true
	case "SHA-384":
		return sha512.New384, "SHA-384", true
	case "SHA-512":
		return sha512.New, "SHA-512", true
	}
	return nil, "", false
}

// algName reads an AlgorithmIdentifier: a string or {name}.
func algName(v goja.Value) string {
	if o, ok := v.(*goja.Object); ok {
		if n := o.Get("name"); n != nil && !goja.IsUndefined(n) {
			return n.String()
		}
		return ""
	}
	if v == nil || goja.IsUndefined(v) {
		return ""
	}
	return v.String()
}

func (r *Realm) notSupported(format string, args ...any) goja.Value {
	return r.domException(fmt.Sprintf(format, args...), "NotSupportedError")
}

func (r *Realm) installCrypto() {
	vm := r.vm
	c := vm.NewObject()
	r.method(c, "getRandomValues", func(call goja.FunctionCall) goja.Value {
		a := call.Argument(0)
		o, ok := a.(*goja.Object)
		if !ok {
			r.throwType("crypto.getRandomValues: argument must be an integer typed array")
		}
		if !isIntegerArray(o) {
			name := "value"
			if ctor, ok := o.Get("constructor").(*goja.Object); ok {
				name = ctor.Get("name").String()
			}
			panic(r.domException("crypto.getRandomValues: "+name+" is not an integer typed array", "TypeMismatchError"))
		}
		b, ok := r.bufferSourceBytes(o)
		if !ok {
			r.throwType("crypto.getRandomValues: argument must be an integer typed array")
		}
		if len(b) > 65536 {
			panic(r.domException(fmt.Sprintf("crypto.getRandomValues: the array's byte length (%d) exceeds 65536", len(b)), "QuotaExceededError"))
		}
		_, _ = rand.Read(b)
		return a
	})
	r.method(c, "randomUUID", func(call goja.FunctionCall) goja.Value {
		return vm.ToValue(uuid4())
	})
	subtle := vm.NewObject()
	r.method(subtle, "digest", func(call goja.FunctionCall) goja.Value {
		return r.asPromise(func() goja.Value {
			name := algName(call.Argument(0))
			h, _, ok := hashFunc(name)
			if !ok {
				panic(r.notSupported("crypto.subtle.digest: unsupported algorithm %q (want SHA-1, SHA-256, SHA-384 or SHA-512)", name))
			}
			data, ok := r.bufferSourceBytes(call.Argument(1))
			if !ok {
				r.throwType("crypto.subtle.digest: data must be an ArrayBuffer or a view")
			}
			d := h()
			d.Write(data)
			return r.resolved(vm.ToValue(vm.NewArrayBuffer(d.Sum(nil))))
		})
	})
	r.keyProto = vm.NewObject()
	_ = r.keyProto.DefineDataPropertySymbol(goja.SymToStringTag, vm.ToValue("CryptoKey"), goja.FLAG_FALSE, goja.FLAG_TRUE, goja.FLAG_FALSE)
	keyThis := func(call goja.FunctionCall) *cryptoKey { return thisAs[*cryptoKey](r, call, "CryptoKey") }
	r.getter(r.keyProto, "type", func(call goja.FunctionCall) goja.Value { keyThis(call); return vm.ToValue("secret") })
	r.getter(r.keyProto, "extractable", func(call goja.FunctionCall) goja.Value { return vm.ToValue(keyThis(call).extractable) })
	r.getter(r.keyProto, "algorithm", func(call goja.FunctionCall) goja.Value { return keyThis(call).algorithm })
	r.getter(r.keyProto, "usages", func(call goja.FunctionCall) goja.Value { return r.stringArray(keyThis(call).usages) })

	r.method(subtle, "importKey", func(call goja.FunctionCall) goja.Value {
		return r.asPromise(func() goja.Value {
			format := call.Argument(0).String()
			if format != "raw" {
				panic(r.notSupported("crypto.subtle.importKey: unsupported format %q (only \"raw\")", format))
			}
			data, ok := r.bufferSourceBytes(call.Argument(1))
			if !ok {
				r.throwType("crypto.subtle.importKey: keyData must be an ArrayBuffer or a view")
			}
			alg := call.Argument(2)
			if n := algName(alg); !strings.EqualFold(n, "HMAC") {
				panic(r.notSupported("crypto.subtle.importKey: unsupported algorithm %q (only HMAC)", n))
			}
			ao, _ := alg.(*goja.Object)
			var hashName string
			if ao != nil {
				hashName = algName(ao.Get("hash"))
			}
			_, canon, ok := hashFunc(hashName)
			if !ok {
				panic(r.notSupported("crypto.subtle.importKey: unsupported HMAC hash %q (want SHA-1, SHA-256, SHA-384 or SHA-512)", hashName))
			}
			if len(data) == 0 {
				panic(r.domException("crypto.subtle.importKey: HMAC key data must not be empty", "DataError"))
			}
			var usages []string
			if u, ok := call.Argument(4).(*goja.Object); ok {
				n := u.Get("length").ToInteger()
				for i := int64(0); i < n; i++ {
					us := u.Get(itoa(i)).String()
					if us != "sign" && us != "verify" {
						panic(r.domException(fmt.Sprintf("crypto.subtle.importKey: usage %q is not valid for an HMAC key", us), "SyntaxError"))
					}
					usages = append(usages, us)
				}
			}
			if len(usages) == 0 {
				panic(r.domException("crypto.subtle.importKey: usages must not be empty for a secret key", "SyntaxError"))
			}
			algo := vm.NewObject()
			_ = algo.Set("name", "HMAC")
			ho := vm.NewObject()
			_ = ho.Set("name", canon)
			_ = algo.Set("hash", ho)
			_ = algo.Set("length", len(data)*8)
			k := &cryptoKey{
				hash:        canon,
				secret:      append([]byte(nil), data...),
				extractable: call.Argument(3).ToBoolean(),
				usages:      usages,
				algorithm:   algo,
			}
			return r.resolved(r.wrap(k, r.keyProto))
		})
	})
	mac := func(call goja.FunctionCall, what string, keyArg goja.Value, dataArg goja.Value) []byte {
		if n := algName(call.Argument(0)); !strings.EqualFold(n, "HMAC") {
			panic(r.notSupported("crypto.subtle.%s: unsupported algorithm %q (only HMAC)", what, n))
		}
		k, ok := valueAs[*cryptoKey](keyArg)
		if !ok {
			r.throwType("crypto.subtle.%s: key is not a CryptoKey", what)
		}
		allowed := false
		for _, u := range k.usages {
			allowed = allowed || u == what
		}
		if !allowed {
			panic(r.domException(fmt.Sprintf("crypto.subtle.%s: the key does not allow %q", what, what), "InvalidAccessError"))
		}
		data, ok := r.bufferSourceBytes(dataArg)
		if !ok {
			r.throwType("crypto.subtle.%s: data must be an ArrayBuffer or a view", what)
		}
		h, _, _ := hashFunc(k.hash)
		m := hmac.New(h, k.secret)
		m.Write(data)
		return m.Sum(nil)
	}
	r.method(subtle, "sign", func(call goja.FunctionCall) goja.Value {
		return r.asPromise(func() goja.Value {
			sum := mac(call, "sign", call.Argument(1), call.Argument(2))
			return r.resolved(vm.ToValue(vm.NewArrayBuffer(sum)))
		})
	})
	r.method(subtle, "verify", func(call goja.FunctionCall) goja.Value {
		return r.asPromise(func() goja.Value {
			sig, ok := r.bufferSourceBytes(call.Argument(2))
			if !ok {
				r.throwType("crypto.subtle.verify: signature must be an ArrayBuffer or a view")
			}
			sum := mac(call, "verify", call.Argument(1), call.Argument(3))
			return r.resolved(vm.ToValue(hmac.Equal(sum, sig)))
		})
	})
	_ = c.Set("subtle", subtle)
	_ = vm.GlobalObject().DefineDataProperty("crypto", c, goja.FLAG_TRUE, goja.FLAG_TRUE, goja.FLAG_FALSE)
}

// isIntegerArray reports whether o is an integer typed array: goja exports
// those as slices of Go integers.
func isIntegerArray(o *goja.Object) bool {
	t := o.ExportType()
	if t == nil || t.Kind() != reflect.Slice {
		return false
	}
	switch t.Elem().Kind() {
	case reflect.Int8, reflect.Uint8, reflect.Int16, reflect.Uint16, reflect.Int32, reflect.Uint32, reflect.Int64, reflect.Uint64:
		return true
	}
	return false
}

func uuid4() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
