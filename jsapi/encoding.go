package jsapi

import (
	_ "embed"
	"encoding/base64"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/dop251/goja"
)

//go:embed prelude.js
var preludeSrc string

// prelude is compiled once per process and run in every runtime.
var prelude = goja.MustCompile("outbound:prelude.js", preludeSrc, true)

func (r *Realm) installPrelude() {
	vm := r.vm
	native := vm.NewObject()
	_ = native.Set("reportError", func(call goja.FunctionCall) goja.Value {
		r.logUncaught(call.Argument(0))
		return goja.Undefined()
	})
	_ = native.Set("encode", func(call goja.FunctionCall) goja.Value {
		return r.newUint8Array([]byte(call.Argument(0).String()))
	})
	_ = native.Set("encodeInto", r.encodeInto)
	_ = native.Set("decode", r.decode)

	fnv, err := vm.RunProgram(prelude)
	if err != nil {
		panic(err)
	}
	fn, _ := goja.AssertFunction(fnv)
	out, err := fn(goja.Undefined(), native)
	if err != nil {
		panic(err)
	}
	r.helpers = out.ToObject(vm)
	r.newDOMExc = func(this goja.Value, args ...goja.Value) (goja.Value, error) {
		return vm.New(r.helpers.Get("DOMException"), args...)
	}
	r.newAbortErr, _ = goja.AssertFunction(r.helpers.Get("abortError"))

	g := vm.GlobalObject()
	_ = g.Set("atob", r.atob)
	_ = g.Set("btoa", r.btoa)
}

func (r *Realm) encodeInto(call goja.FunctionCall) goja.Value {
	src := call.Argument(0).String()
	dst, _ := r.bufferSourceBytes(call.Argument(1))
	read, written := 0, 0
	for _, c := range src {
		n := utf8.RuneLen(c)
		if n < 0 {
			c, n = utf8.RuneError, 3
		}
		if written+n > len(dst) {
			break
		}
		utf8.EncodeRune(dst[written:], c)
		written += n
		read += utf16.RuneLen(c)
	}
	o := r.vm.NewObject()
	_ = o.Set("read", read)
	_ = o.Set("written", written)
	return o
}

// decode(input, pending, stream, fatal, skipBOM) -> {text, pending, bomSeen}
func (r *Realm) decode(call goja.FunctionCall) goja.Value {
	in, ok := r.bufferSourceBytes(call.Argument(0))
	if !ok {
		r.throwType("TextDecoder.decode: input must be an ArrayBuffer or a view")
	}
	var data []byte
	if p, ok := r.bufferSourceBytes(call.Argument(1)); ok && len(p) > 0 {
		data = append(append(data, p...), in...)
	} else {
		data = in
	}
	stream := call.Argument(2).ToBoolean()
	fatal := call.Argument(3).ToBoolean()
	skipBOM := call.Argument(4).ToBoolean()

	var pending []byte
	if stream {
		// Hold back an incomplete sequence at the end for the next chunk.
		for i := 1; i <= 3 && i <= len(data); i++ {
			b := data[len(data)-i]
			if b&0xC0 != 0x80 { // a lead byte or ASCII
				if need := seqLen(b); need > i {
					pending = append([]byte(nil), data[len(data)-i:]...)
					data = data[:len(data)-i]
				}
				break
			}
		}
	}
	if !skipBOM && len(data) >= 3 && data[0] == 0xEF && data[1] == 0xBB && data[2] == 0xBF {
		data = data[3:]
	}
	var text string
	if utf8.Valid(data) {
		text = string(data)
	} else if fatal {
		r.throwType("TextDecoder.decode: the encoded data was not valid utf-8")
	} else {
		var sb strings.Builder
		for len(data) > 0 {
			c, n := utf8.DecodeRune(data)
			sb.WriteRune(c)
			data = data[n:]
		}
		text = sb.String()
	}
	o := r.vm.NewObject()
	_ = o.Set("text", text)
	if pending != nil {
		_ = o.Set("pending", r.newUint8Array(pending))
	}
	_ = o.Set("bomSeen", stream)
	return o
}

func seqLen(b byte) int {
	switch {
	case b < 0x80:
		return 1
	case b&0xE0 == 0xC0:
		return 2
	case b&0xF0 == 0xE0:
		return 3
	case b&0xF8 == 0xF0:
		return 4
	}
	return 1
}

func (r *Realm) atob(call goja.FunctionCall) goja.Value {
	if len(call.Arguments) == 0 {
		r.throwType("atob: 1 argument required")
	}
	s := strings.Map(func(c rune) rune {
		switch c {
		case ' ', '\t', '\n', '\f', '\r':
			return -1
		}
		return c
	}, call.Argument(0).String())
	if len(s)%4 == 0 {
		s = strings.TrimSuffix(strings.TrimSuffix(s, "="), "=")
	}
	if len(s)%4 == 1 || strings.ContainsRune(s, '=') {
		panic(r.domException("atob: the string to be decoded is not correctly encoded", "InvalidCharacterError"))
	}
	b, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		panic(r.domException("atob: the string to be decoded is not correctly encoded", "InvalidCharacterError"))
	}
	return r.vm.ToValue(latin1(b))
}

// latin1 returns the JS "binary string" of b: one UTF-16 unit per byte.
func latin1(b []byte) string {
	ascii := true
	for _, c := range b {
		if c >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) * 2)
	for _, c := range b {
		sb.WriteRune(rune(c))
	}
	return sb.String()
}

func (r *Realm) btoa(call goja.FunctionCall) goja.Value {
	if len(call.Arguments) == 0 {
		r.throwType("btoa: 1 argument required")
	}
	s := call.Argument(0).String()
	b := make([]byte, 0, len(s))
	for _, c := range s {
		if c > 0xFF {
			panic(r.domException("btoa: the string contains characters outside of the Latin1 range", "InvalidCharacterError"))
		}
		b = append(b, byte(c))
	}
	return r.vm.ToValue(base64.StdEncoding.EncodeToString(b))
}
