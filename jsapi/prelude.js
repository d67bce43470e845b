// The parts of the Workers platform that are plain JavaScript. Go calls this
// function once per runtime with its native helpers and keeps what it returns.
(function (native) {
  "use strict";
  const g = globalThis;
  const def = (o, name, value) =>
    Object.defineProperty(o, name, { value, writable: true, configurable: true, enumerable: false });

  const codes = {
    IndexSizeError: 1, HierarchyRequestError: 3, WrongDocumentError: 4, InvalidCharacterError: 5,
    NoModificationAllowedError: 7, NotFoundError: 8, NotSupportedError: 9, InvalidStateError: 11,
    SyntaxError: 12, InvalidModificationError: 13, NamespaceError: 14, InvalidAccessError: 15,
    TypeMismatchError: 17, SecurityError: 18, NetworkError: 19, AbortError: 20, URLMismatchError: 21,
    QuotaExceededError: 22, TimeoutError: 23, InvalidNodeTypeError: 24, DataCloneError: 25,
  };
  class DOMException extends Error {
    constructor(message = "", name = "Error") {
      super(String(message));
      def(this, "name", String(name));
    }
    get code() { return codes[this.name] || 0; }
  }
  def(g, "DOMException", DOMException);

  // EventTarget is the minimum AbortSignal needs.
  const listeners = Symbol("listeners");
  class EventTarget {
    constructor() { def(this, listeners, new Map()); }
    addEventListener(type, fn, opts) {
      if (typeof fn !== "function" && !(fn && typeof fn.handleEvent === "function")) return;
      const once = !!(opts && typeof opts === "object" && opts.once);
      let l = this[listeners].get(type);
      if (!l) this[listeners].set(type, (l = []));
      if (!l.some((e) => e.fn === fn)) l.push({ fn, once });
    }
    removeEventListener(type, fn) {
      const l = this[listeners].get(type);
      if (!l) return;
      const i = l.findIndex((e) => e.fn === fn);
      if (i >= 0) l.splice(i, 1);
    }
    dispatchEvent(event) {
      const l = this[listeners].get(event.type);
      const h = this["on" + event.type];
      if (typeof h === "function") callListener(h, this, event);
      if (!l) return true;
      for (const e of l.slice()) {
        if (e.once) this.removeEventListener(event.type, e.fn);
        callListener(e.fn, this, event);
      }
      return true;
    }
  }
  function callListener(fn, target, event) {
    try {
      if (typeof fn === "function") fn.call(target, event);
      else fn.handleEvent(event);
    } catch (e) {
      native.reportError(e);
    }
  }
  class Event {
    constructor(type, init) {
      def(this, "type", String(type));
      def(this, "timeStamp", Date.now());
      this.cancelable = !!(init && init.cancelable);
      this.defaultPrevented = false;
    }
    preventDefault() { if (this.cancelable) this.defaultPrevented = true; }
  }
  def(g, "EventTarget", EventTarget);
  def(g, "Event", Event);

  const signalState = Symbol("state");
  let constructing = false;
  class AbortSignal extends EventTarget {
    constructor() {
      if (!constructing) throw new TypeError("Illegal constructor");
      super();
      def(this, signalState, { aborted: false, reason: undefined });
      this.onabort = null;
    }
    get aborted() { return this[signalState].aborted; }
    get reason() { return this[signalState].reason; }
    throwIfAborted() { if (this.aborted) throw this.reason; }
    static abort(reason) {
      const s = newSignal();
      abortSignal(s, reason);
      return s;
    }
    static timeout(ms) {
      ms = Number(ms);
      if (!(ms >= 0)) throw new TypeError("AbortSignal.timeout: delay must be a non-negative number");
      const s = newSignal();
      setTimeout(() => abortSignal(s, new DOMException("The operation was aborted due to timeout", "TimeoutError")), ms);
      return s;
    }
    static any(signals) {
      const s = newSignal();
      for (const x of signals) {
        if (x.aborted) { abortSignal(s, x.reason); return s; }
      }
      for (const x of signals) x.addEventListener("abort", () => abortSignal(s, x.reason), { once: true });
      return s;
    }
  }
  function newSignal() {
    constructing = true;
    try { return new AbortSignal(); } finally { constructing = false; }
  }
  function abortSignal(s, reason) {
    const st = s[signalState];
    if (st.aborted) return;
    st.aborted = true;
    st.reason = reason === undefined ? new DOMException("The operation was aborted", "AbortError") : reason;
    s.dispatchEvent(new Event("abort"));
  }
  class AbortController {
    constructor() { def(this, "signal", newSignal()); }
    abort(reason) { abortSignal(this.signal, reason); }
  }
  def(g, "AbortSignal", AbortSignal);
  def(g, "AbortController", AbortController);

  def(g, "queueMicrotask", function queueMicrotask(fn) {
    if (typeof fn !== "function") throw new TypeError("queueMicrotask: callback is not a function");
    Promise.resolve().then(() => fn()).catch((e) => native.reportError(e));
  });

  // structuredClone for the values JSON-like data is made of, plus the
  // built-ins with obvious copies. Functions, symbols and host objects throw
  // DataCloneError as in browsers.
  function clone(v, seen) {
    if (v === null || typeof v !== "object") {
      if (typeof v === "function" || typeof v === "symbol") {
        throw new DOMException(`${String(v)} could not be cloned.`, "DataCloneError");
      }
      return v;
    }
    if (seen.has(v)) return seen.get(v);
    let out;
    if (Array.isArray(v)) {
      out = new Array(v.length);
      seen.set(v, out);
      for (let i = 0; i < v.length; i++) if (i in v) out[i] = clone(v[i], seen);
      return out;
    }
    if (v instanceof Date) out = new Date(v.getTime());
    else if (v instanceof RegExp) out = new RegExp(v.source, v.flags);
    else if (v instanceof ArrayBuffer) out = v.slice(0);
    else if (ArrayBuffer.isView(v)) {
      const C = v.constructor;
      out = v instanceof DataView ? new DataView(v.buffer.slice(0), v.byteOffset, v.byteLength) : new C(v);
    } else if (v instanceof Map) {
      out = new Map();
      seen.set(v, out);
      for (const [k, x] of v) out.set(clone(k, seen), clone(x, seen));
      return out;
    } else if (v instanceof Set) {
      out = new Set();
      seen.set(v, out);
      for (const x of v) out.add(clone(x, seen));
      return out;
    } else if (v instanceof Error) {
      out = new Error(v.message);
      def(out, "name", v.name);
      if (v.stack) def(out, "stack", v.stack);
    } else if (v instanceof Boolean || v instanceof Number || v instanceof String) {
      out = Object(v.valueOf());
    } else {
      const proto = Object.getPrototypeOf(v);
      if (proto !== Object.prototype && proto !== null) {
        throw new DOMException(`${Object.prototype.toString.call(v)} could not be cloned.`, "DataCloneError");
      }
      out = {};
      seen.set(v, out);
      for (const k of Object.keys(v)) out[k] = clone(v[k], seen);
      return out;
    }
    seen.set(v, out);
    return out;
  }
  def(g, "structuredClone", function structuredClone(value) {
    if (arguments.length === 0) throw new TypeError("structuredClone: 1 argument required, but only 0 present");
    return clone(value, new Map());
  });

  class TextEncoder {
    get encoding() { return "utf-8"; }
    encode(input = "") { return native.encode(String(input)); }
    encodeInto(source, dest) {
      if (!(dest instanceof Uint8Array)) throw new TypeError("TextEncoder.encodeInto: destination must be a Uint8Array");
      return native.encodeInto(String(source), dest);
    }
  }
  const utf8Labels = new Set(["utf-8", "utf8", "unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "x-unicode20utf8"]);
  const decoderState = Symbol("decoder");
  class TextDecoder {
    constructor(label = "utf-8", options = {}) {
      const l = String(label).trim().toLowerCase();
      if (!utf8Labels.has(l)) throw new RangeError(`TextDecoder: unsupported encoding '${label}' (only utf-8)`);
      def(this, decoderState, { fatal: !!(options && options.fatal), ignoreBOM: !!(options && options.ignoreBOM), pending: null, bomSeen: false });
    }
    get encoding() { return "utf-8"; }
    get fatal() { return this[decoderState].fatal; }
    get ignoreBOM() { return this[decoderState].ignoreBOM; }
    decode(input, options) {
      const st = this[decoderState];
      const stream = !!(options && options.stream);
      const res = native.decode(input === undefined ? new Uint8Array(0) : input, st.pending, stream, st.fatal, st.ignoreBOM || st.bomSeen);
      st.pending = stream ? res.pending : null;
      st.bomSeen = stream ? res.bomSeen : false;
      return res.text;
    }
  }
  def(g, "TextEncoder", TextEncoder);
  def(g, "TextDecoder", TextDecoder);

  // goja sizes the result of these up front in Go, so "x".repeat(2 ** 40)
  // asks the Go runtime for a terabyte and kills the whole process with a
  // fatal, unrecoverable out-of-memory error. Refuse results past V8's own
  // string length limit with the RangeError V8 throws.
  const maxStringLength = 2 ** 29 - 24;
  const checkLength = (n) => {
    if (n > maxStringLength) throw new RangeError("Invalid string length");
  };
  const { repeat, padStart, padEnd } = String.prototype;
  def(String.prototype, "repeat", function repeat_(count) {
    const n = Math.trunc(Number(count));
    if (n > 0) checkLength(String(this).length * n);
    return repeat.call(this, count);
  });
  def(String.prototype, "padStart", function padStart_(len, fill) {
    checkLength(Number(len));
    return padStart.call(this, len, fill);
  });
  def(String.prototype, "padEnd", function padEnd_(len, fill) {
    checkLength(Number(len));
    return padEnd.call(this, len, fill);
  });
  def(String.prototype.repeat, "name", "repeat");
  def(String.prototype.padStart, "name", "padStart");
  def(String.prototype.padEnd, "name", "padEnd");

  return {
    DOMException,
    abortError: () => new DOMException("The operation was aborted", "AbortError"),
    isSignal: (s) => s instanceof AbortSignal,
  };
});
