package jsapi

import (
	"errors"
	"fmt"
	"io"
	"net/url"

	"github.com/dop251/goja"
)

// body is a Request or Response body. It stays the Go stream it came from
// until JS reads it, so passing it on (fetch(request), new Response(r.body))
// moves the same io.ReadCloser without copying a byte.
type body struct {
	rc     io.ReadCloser // the stream, until taken or read
	buf    []byte        // an in-memory body
	inMem  bool          // buf is the body (an empty buf is an empty body)
	length int64         // byte length, -1 when unknown
	used   bool          // disturbed: read, or moved to another object
	stream *goja.Object  // the ReadableStream given to JS, created on demand
	locked bool          // a reader holds the stream
}

func nullBody() body { return body{length: 0} }

func memBody(b []byte) body { return body{buf: b, inMem: true, length: int64(len(b))} }

func streamBody(rc io.ReadCloser, length int64) body {
	if rc == nil {
		return nullBody()
	}
	return body{rc: rc, length: length}
}

func (b *body) isNull() bool { return b.rc == nil && !b.inMem && b.stream == nil }

// take moves the content out, leaving b used. It is how bodies pass from
// object to object and from JS to Go.
func (b *body) take() body {
	out := body{rc: b.rc, buf: b.buf, inMem: b.inMem, length: b.length}
	if !b.isNull() {
		b.used = true
	}
	b.rc, b.buf, b.inMem = nil, nil, false
	return out
}

// clone splits b in two for Request.clone and Response.clone. An in-memory
// body is shared; a stream is not: cloning it would mean buffering, so that
// is refused rather than done silently.
func (r *Realm) cloneBody(b *body) body {
	if b.used {
		r.throwType("Body has already been used. It can only be used once.")
	}
	switch {
	case b.inMem:
		return memBody(b.buf)
	case b.rc == nil:
		return nullBody()
	}
	r.throwType("clone() of a streaming body is not supported: read it once with text(), arrayBuffer() or json() and build new objects from the result")
	return body{}
}

var errTooLarge = errors.New("body too large")

// readAll reads at most limit bytes of rc and closes it.
func readAll(rc io.ReadCloser, limit int64) ([]byte, error) {
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, errTooLarge
	}
	return b, nil
}

func (r *Realm) tooLarge() *goja.Object {
	return r.typeError("body is larger than the %d-byte limit for reading it in JS (pass it through without reading, e.g. return fetch(request))", r.cfg.MaxBodyBytes)
}

// consume reads the whole body for text(), json() or arrayBuffer() and
// returns a promise of conv(bytes).
func (r *Realm) consume(b *body, conv func([]byte) goja.Value) goja.Value {
	return r.asPromise(func() goja.Value {
		if b.used || b.locked {
			r.throwType("Body has already been used. It can only be used once.")
		}
		if b.length > r.cfg.MaxBodyBytes {
			panic(r.tooLarge())
		}
		c := b.take()
		switch {
		case c.inMem:
			return r.resolved(conv(c.buf))
		case c.rc == nil:
			return r.resolved(conv(nil))
		}
		limit := r.cfg.MaxBodyBytes
		return r.goAsync(func() (any, error) {
			return readAll(c.rc, limit)
		}, func(v any, err error) goja.Value {
			if errors.Is(err, errTooLarge) {
				panic(r.tooLarge())
			}
			if err != nil {
				r.throwType("reading body: %v", err)
			}
			return conv(v.([]byte))
		})
	})
}

// bodyMethods adds text, json, arrayBuffer, bytes, body and bodyUsed to a
// Request or Response prototype; get returns the object's body.
func (r *Realm) bodyMethods(proto *goja.Object, get func(goja.FunctionCall) *body) {
	r.method(proto, "text", func(call goja.FunctionCall) goja.Value {
		return r.consume(get(call), func(b []byte) goja.Value { return r.vm.ToValue(decodeUTF8(b)) })
	})
	r.method(proto, "json", func(call goja.FunctionCall) goja.Value {
		return r.consume(get(call), func(b []byte) goja.Value {
			v, err := r.jsonParse(goja.Undefined(), r.vm.ToValue(decodeUTF8(b)))
			if err != nil {
				panic(err)
			}
			return v
		})
	})
	r.method(proto, "arrayBuffer", func(call goja.FunctionCall) goja.Value {
		return r.consume(get(call), func(b []byte) goja.Value {
			return r.vm.ToValue(r.vm.NewArrayBuffer(append([]byte(nil), b...)))
		})
	})
	r.method(proto, "bytes", func(call goja.FunctionCall) goja.Value {
		return r.consume(get(call), func(b []byte) goja.Value { return r.newUint8Array(append([]byte(nil), b...)) })
	})
	r.method(proto, "formData", func(call goja.FunctionCall) goja.Value {
		return r.rejected(r.typeError("formData() is not supported; use text() and URLSearchParams"))
	})
	r.method(proto, "blob", func(call goja.FunctionCall) goja.Value {
		return r.rejected(r.typeError("blob() is not supported; use arrayBuffer()"))
	})
	r.getter(proto, "bodyUsed", func(call goja.FunctionCall) goja.Value {
		return r.vm.ToValue(get(call).used)
	})
	r.getter(proto, "body", func(call goja.FunctionCall) goja.Value {
		b := get(call)
		if b.stream != nil {
			return b.stream
		}
		if b.isNull() {
			return goja.Null()
		}
		b.stream = r.wrap(&stream{b: b}, r.streamProto)
		return b.stream
	})
}

func decodeUTF8(b []byte) string {
	if len(b) >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF {
		b = b[3:]
	}
	return string(b) // goja replaces invalid sequences with U+FFFD
}

// bodyInit converts a BodyInit into a body and the Content-Type it implies.
func (r *Realm) bodyInit(v goja.Value) (body, string) {
	if v == nil || goja.IsUndefined(v) || goja.IsNull(v) {
		return nullBody(), ""
	}
	if s, ok := v.(goja.String); ok {
		return memBody([]byte(s.String())), "text/plain;charset=UTF-8"
	}
	if st, ok := valueAs[*stream](v); ok {
		if st.b.used || st.b.locked {
			r.throwType("The ReadableStream has already been used or is locked")
		}
		return st.b.take(), ""
	}
	if b, ok := r.bufferSourceBytes(v); ok {
		return memBody(append([]byte(nil), b...)), ""
	}
	if o, ok := v.(*goja.Object); ok {
		if usp := r.vm.Get("URLSearchParams"); usp != nil && o.Get("constructor") == usp {
			return memBody([]byte(o.String())), "application/x-www-form-urlencoded;charset=UTF-8"
		}
	}
	return memBody([]byte(v.String())), "text/plain;charset=UTF-8"
}

// stream is the minimal ReadableStream over a body: getReader().read(),
// cancel, and async iteration. JS cannot construct one; it only sees the
// bodies of requests and responses.
type stream struct {
	Expando
	b *body
}

type streamReader struct {
	Expando
	s        *stream
	released bool
	reading  bool
	total    int64
}

const chunkSize = 64 << 10

func (r *Realm) installStreams() {
	ctor, proto := r.constructor("ReadableStream", func(call goja.ConstructorCall, proto *goja.Object) *goja.Object {
		r.throwType("new ReadableStream() is not supported; bodies are streamed from requests and responses only")
		return nil
	})
	_ = ctor
	r.streamProto = proto
	this := func(call goja.FunctionCall) *stream { return thisAs[*stream](r, call, "ReadableStream") }
	getReader := func(call goja.FunctionCall) goja.Value {
		s := this(call)
		if s.b.locked {
			r.throwType("ReadableStream is locked to a reader")
		}
		s.b.locked = true
		return r.wrap(&streamReader{s: s}, r.readerProto)
	}
	r.method(proto, "getReader", getReader)
	r.getter(proto, "locked", func(call goja.FunctionCall) goja.Value { return r.vm.ToValue(this(call).b.locked) })
	r.method(proto, "cancel", func(call goja.FunctionCall) goja.Value {
		s := this(call)
		if s.b.locked {
			return r.rejected(r.typeError("ReadableStream is locked to a reader"))
		}
		c := s.b.take()
		s.b.used = true
		if c.rc != nil {
			_ = c.rc.Close()
		}
		return r.resolved(goja.Undefined())
	})
	asyncIter := func(call goja.FunctionCall) goja.Value {
		reader := getReader(call).(*goja.Object)
		read, _ := goja.AssertFunction(reader.Get("read"))
		it := r.vm.NewObject()
		_ = it.Set("next", func(goja.FunctionCall) goja.Value {
			v, err := read(reader)
			if err != nil {
				panic(err)
			}
			return v
		})
		_ = it.Set("return", func(goja.FunctionCall) goja.Value {
			rd := reader.Export().(*streamReader)
			r.cancelReader(rd)
			o := r.vm.NewObject()
			_ = o.Set("done", true)
			_ = o.Set("value", goja.Undefined())
			return r.resolved(o)
		})
		return it
	}
	r.method(proto, "values", asyncIter)
	_ = proto.DefineDataPropertySymbol(r.asyncIteratorSymbol(), r.vm.ToValue(asyncIter), goja.FLAG_TRUE, goja.FLAG_TRUE, goja.FLAG_FALSE)

	r.readerProto = r.vm.NewObject()
	rthis := func(call goja.FunctionCall) *streamReader {
		rd := thisAs[*streamReader](r, call, "ReadableStreamDefaultReader")
		return rd
	}
	r.method(r.readerProto, "read", func(call goja.FunctionCall) goja.Value {
		rd := rthis(call)
		return r.asPromise(func() goja.Value { return r.readChunk(rd) })
	})
	r.method(r.readerProto, "releaseLock", func(call goja.FunctionCall) goja.Value {
		rd := rthis(call)
		if !rd.released {
			rd.released = true
			rd.s.b.locked = false
		}
		return goja.Undefined()
	})
	r.method(r.readerProto, "cancel", func(call goja.FunctionCall) goja.Value {
		r.cancelReader(rthis(call))
		return r.resolved(goja.Undefined())
	})
}

func (r *Realm) cancelReader(rd *streamReader) {
	b := rd.s.b
	b.used = true
	if b.rc != nil {
		_ = b.rc.Close()
	}
	b.rc, b.buf, b.inMem = nil, nil, false
}

func (r *Realm) readResult(value goja.Value, done bool) goja.Value {
	o := r.vm.NewObject()
	_ = o.Set("value", value)
	_ = o.Set("done", done)
	return o
}

// readChunk returns a promise of the next {value, done} of the reader's body.
func (r *Realm) readChunk(rd *streamReader) goja.Value {
	if rd.released {
		r.throwType("the reader has been released")
	}
	if rd.reading {
		r.throwType("a read is already pending on this reader")
	}
	b := rd.s.b
	b.used = true
	switch {
	case b.inMem:
		buf := b.buf
		b.buf, b.inMem = nil, false
		if len(buf) > 0 {
			return r.resolved(r.readResult(r.newUint8Array(append([]byte(nil), buf...)), false))
		}
		return r.resolved(r.readResult(goja.Undefined(), true))
	case b.rc == nil:
		return r.resolved(r.readResult(goja.Undefined(), true))
	}
	if rd.total >= r.cfg.MaxBodyBytes {
		panic(r.tooLarge())
	}
	rc := b.rc
	rd.reading = true
	return r.goAsync(func() (any, error) {
		p := make([]byte, chunkSize)
		n, err := rc.Read(p)
		if n > 0 {
			return p[:n], nil
		}
		if err == nil {
			return p[:0], nil
		}
		return nil, err
	}, func(v any, err error) goja.Value {
		rd.reading = false
		if err == io.EOF {
			_ = rc.Close()
			if b.rc == rc {
				b.rc = nil
			}
			return r.readResult(goja.Undefined(), true)
		}
		if err != nil {
			r.throwType("reading body: %v", err)
		}
		p := v.([]byte)
		rd.total += int64(len(p))
		return r.readResult(r.newUint8Array(p), false)
	})
}

func itoa(i int64) string { return fmt.Sprint(i) }

// asyncIteratorSymbol returns Symbol.asyncIterator, defining it if goja
// lacks it as the symbol esbuild's lowered for-await falls back to.
func (r *Realm) asyncIteratorSymbol() *goja.Symbol {
	sym := r.vm.Get("Symbol").ToObject(r.vm)
	if s, ok := sym.Get("asyncIterator").(*goja.Symbol); ok {
		return s
	}
	forFn, _ := goja.AssertFunction(sym.Get("for"))
	v, err := forFn(sym, r.vm.ToValue("Symbol.asyncIterator"))
	if err != nil {
		panic(err)
	}
	_ = sym.DefineDataProperty("asyncIterator", v, goja.FLAG_FALSE, goja.FLAG_FALSE, goja.FLAG_FALSE)
	return v.(*goja.Symbol)
}

// parseURL resolves a Request URL: it must be absolute (there is no base in
// a handler).
func (r *Realm) parseURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" {
		r.throwType("Invalid URL: %q", s)
	}
	return u
}
