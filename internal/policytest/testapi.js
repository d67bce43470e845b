// The module handler tests import as "outbound:test". The runner (Go)
// provides the natives as globalThis.__outbound_test before the test file
// runs; this file turns them into the API that docs/testing.md describes.
const native = globalThis.__outbound_test;
delete globalThis.__outbound_test;

// ---- test ----------------------------------------------------------------

export function test(name, fn) {
  if (typeof name !== "string" || name === "") {
    throw new TypeError("test(name, fn): name must be a non-empty string");
  }
  if (typeof fn !== "function") {
    throw new TypeError(`test(${JSON.stringify(name)}, fn): fn must be a function`);
  }
  native.register(name, fn);
}

// ---- dispatch and decide ---------------------------------------------------

const optionKeys = new Set([
  "instance", "class", "env", "outboundHandler", "outboundByHost",
  "allowedHosts", "deniedHosts", "method", "headers", "body",
]);

function checkOptions(fn, opts) {
  if (opts === undefined || opts === null) return {};
  if (typeof opts !== "object") throw new TypeError(`${fn}: options must be an object`);
  for (const k of Object.keys(opts)) {
    if (!optionKeys.has(k)) {
      throw new TypeError(`${fn}: unknown option ${JSON.stringify(k)} (want one of ${[...optionKeys].join(", ")})`);
    }
  }
  return opts;
}

const encoder = new TextEncoder();

function kvBytes(fn, binding, key, v) {
  if (typeof v === "string") return encoder.encode(v);
  if (v instanceof ArrayBuffer) return new Uint8Array(v.slice(0));
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength));
  if (v === undefined || typeof v === "function" || typeof v === "symbol") {
    throw new TypeError(`${fn}: env.${binding}[${JSON.stringify(key)}] must be a string, bytes or JSON, got ${typeof v}`);
  }
  return encoder.encode(JSON.stringify(v));
}

// setup turns the options into what the runner applies: vars, KV bindings
// with their initial contents, and runtime method calls.
function setup(fn, opts) {
  const s = { instance: "test", class: "", vars: {}, kv: {}, kvObjects: {}, calls: [] };
  if (opts.instance !== undefined) s.instance = String(opts.instance);
  if (opts.class !== undefined) s.class = String(opts.class);
  if (opts.env !== undefined && opts.env !== null) {
    if (typeof opts.env !== "object") throw new TypeError(`${fn}: env must be an object`);
    for (const [name, v] of Object.entries(opts.env)) {
      if (v === undefined || v === null) continue;
      if (typeof v === "object" && !ArrayBuffer.isView(v) && !(v instanceof ArrayBuffer)) {
        if (Array.isArray(v)) {
          throw new TypeError(`${fn}: env.${name} is an array; a KV binding is an object of key to value`);
        }
        const contents = {};
        for (const [key, value] of Object.entries(v)) contents[key] = kvBytes(fn, name, key, value);
        s.kv[name] = contents;
        s.kvObjects[name] = v;
      } else if (typeof v === "function" || typeof v === "symbol") {
        throw new TypeError(`${fn}: env.${name} must be a string (a var or secret) or an object (a KV binding)`);
      } else {
        s.vars[name] = String(v);
      }
    }
  }
  const call = (option, method, args) => s.calls.push([option, method, JSON.stringify(args)]);
  if (opts.allowedHosts !== undefined) call("allowedHosts", "setAllowedHosts", [opts.allowedHosts]);
  if (opts.deniedHosts !== undefined) call("deniedHosts", "setDeniedHosts", [opts.deniedHosts]);
  if (opts.outboundHandler !== undefined) {
    const h = opts.outboundHandler;
    if (typeof h === "string") call("outboundHandler", "setOutboundHandler", [h]);
    else if (Array.isArray(h) && h.length >= 1 && h.length <= 2) call("outboundHandler", "setOutboundHandler", h);
    else throw new TypeError(`${fn}: outboundHandler must be a handler name or [name, params]`);
  }
  if (opts.outboundByHost !== undefined) {
    const m = opts.outboundByHost;
    if (m === null || typeof m !== "object" || Array.isArray(m)) {
      throw new TypeError(`${fn}: outboundByHost must be an object of host to handler name or [name, params]`);
    }
    const out = {};
    for (const [host, h] of Object.entries(m)) {
      if (typeof h === "string") out[host] = h;
      else if (Array.isArray(h) && h.length === 1) out[host] = { method: h[0] };
      else if (Array.isArray(h) && h.length === 2) out[host] = { method: h[0], params: h[1] };
      else throw new TypeError(`${fn}: outboundByHost[${JSON.stringify(host)}] must be a handler name or [name, params]`);
    }
    call("outboundByHost", "setOutboundByHosts", [out]);
  }
  return s;
}

// writeBack makes each KV object hold its namespace's contents after the
// request: keys the handler wrote are set (as strings), deleted ones removed.
function writeBack(objects, result) {
  for (const [name, obj] of Object.entries(objects)) {
    const r = result[name];
    if (!r) continue;
    for (const key of Object.keys(obj)) {
      if (!(key in r.set) && !r.keep.includes(key)) delete obj[key];
    }
    for (const [key, value] of Object.entries(r.set)) obj[key] = value;
  }
}

export async function dispatch(input, options) {
  const where = native.where();
  const opts = checkOptions("dispatch", options);
  const s = setup("dispatch", opts);
  const init = {};
  if (opts.method !== undefined) init.method = opts.method;
  if (opts.headers !== undefined) init.headers = opts.headers;
  if (opts.body !== undefined) init.body = opts.body;
  const req = input instanceof Request && Object.keys(init).length === 0 ? input : new Request(input, init);
  const body = req.body === null ? null : new Uint8Array(await req.arrayBuffer());
  const r = await native.dispatch(req.url, req.method, [...req.headers], body, s, where);
  writeBack(s.kvObjects, r.kv);
  return r.response;
}

export async function decide(input, options) {
  const where = native.where();
  const opts = checkOptions("decide", options);
  const s = setup("decide", opts);
  const url = input instanceof Request ? input.url : String(input);
  return native.decide(url, s, where);
}

// ---- mockFetch -------------------------------------------------------------

export function mockFetch(pattern, responder) {
  if (typeof pattern !== "string" || pattern === "") {
    throw new TypeError("mockFetch(pattern, responder): pattern must be a URL glob such as \"https://api.github.com/*\"");
  }
  if (typeof responder !== "function" && !(responder instanceof Response)) {
    throw new TypeError("mockFetch(pattern, responder): responder must be a function (request) => Response, or a Response");
  }
  const calls = [];
  native.mock(pattern, responder, calls);
  return { calls };
}

// ---- assert ----------------------------------------------------------------

export class AssertionError extends Error {
  constructor(message, where, props) {
    super(message);
    Object.defineProperty(this, "name", { value: "AssertionError", writable: true, configurable: true });
    Object.defineProperty(this, "where", { value: where, configurable: true });
    Object.assign(this, props);
  }
}

function failAt(where, message, op, detail, props) {
  const prefix = message !== undefined ? `${message}: ` : "";
  throw new AssertionError(`${prefix}${op}: ${detail}`, where, { operator: op, ...props });
}

const identifier = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const maxWidth = 72;
const maxDepth = 8;

function ctorName(v) {
  const p = Object.getPrototypeOf(v);
  if (p === null) return "[Object: null prototype]";
  const c = p.constructor;
  return typeof c === "function" && c.name ? c.name : "Object";
}

// inspect renders a value the way a reader compares it: strings quoted,
// objects by their contents. multiline expands every non-empty object so
// that two renderings diff line by line.
function inspect(v, multiline = false, indent = "", seen = []) {
  switch (typeof v) {
    case "string": return JSON.stringify(v);
    case "number": return Object.is(v, -0) ? "-0" : String(v);
    case "bigint": return `${v}n`;
    case "undefined": return "undefined";
    case "boolean": return String(v);
    case "symbol": return v.toString();
    case "function": {
      const src = Function.prototype.toString.call(v);
      if (src.startsWith("class")) return `[class ${v.name || "(anonymous)"}]`;
      return `[Function: ${v.name || "(anonymous)"}]`;
    }
  }
  if (v === null) return "null";
  if (seen.includes(v)) return "[Circular]";
  if (seen.length >= maxDepth) return `[${ctorName(v)}]`;
  if (v instanceof Error) return `[${v.name}: ${v.message}]`;
  if (v instanceof RegExp) return String(v);
  if (v instanceof Date) return isNaN(v.getTime()) ? "Invalid Date" : v.toISOString();
  if (v instanceof Promise) return "Promise";
  if (v instanceof Response) return `Response { status: ${v.status}, url: ${JSON.stringify(v.url)} }`;
  if (v instanceof Request) return `Request { method: ${JSON.stringify(v.method)}, url: ${JSON.stringify(v.url)} }`;
  if (v instanceof ArrayBuffer) return `ArrayBuffer { byteLength: ${v.byteLength} }`;
  const inner = seen.concat([v]);
  const child = (x) => inspect(x, multiline, indent + "  ", inner);
  let head = "", open = "{", close = "}", items = [];
  if (Array.isArray(v)) {
    open = "[", close = "]";
    items = v.map(child);
  } else if (ArrayBuffer.isView(v)) {
    head = `${ctorName(v)}(${v.length}) `, open = "[", close = "]";
    items = Array.from(v, (x) => inspect(x));
  } else if (v instanceof Map) {
    head = `Map(${v.size}) `;
    items = [...v].map(([k, x]) => `${child(k)} => ${child(x)}`);
  } else if (v instanceof Set) {
    head = `Set(${v.size}) `;
    items = [...v].map(child);
  } else if (v instanceof Headers) {
    head = "Headers ";
    items = [...v].map(([k, x]) => `${JSON.stringify(k)}: ${JSON.stringify(x)}`);
  } else {
    const name = ctorName(v);
    if (name !== "Object") head = name + " ";
    items = Object.keys(v).map((k) => `${identifier.test(k) ? k : JSON.stringify(k)}: ${child(v[k])}`);
  }
  if (items.length === 0) return `${head}${open}${close}`;
  const flat = `${head}${open}${open === "{" ? " " : ""}${items.join(", ")}${open === "{" ? " " : ""}${close}`;
  if (!multiline && !flat.includes("\n") && indent.length + flat.length <= maxWidth) return flat;
  return `${head}${open}\n${items.map((x) => `${indent}  ${x},`).join("\n")}\n${indent}${close}`;
}

function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function viewBytes(v) {
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

// deepEq is strict deep equality, as node's assert.deepStrictEqual: same
// prototypes, same own enumerable keys, primitives compared with Object.is.
function deepEq(a, b, pairs = new Map()) {
  if (Object.is(a, b)) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;
  if (pairs.get(a) === b) return true;
  pairs.set(a, b);
  if (a instanceof Date) return Object.is(a.getTime(), b.getTime());
  if (a instanceof RegExp) return a.source === b.source && a.flags === b.flags;
  if (a instanceof Error && (a.name !== b.name || a.message !== b.message)) return false;
  if (a instanceof ArrayBuffer) return sameBytes(new Uint8Array(a), new Uint8Array(b));
  if (ArrayBuffer.isView(a)) return sameBytes(viewBytes(a), viewBytes(b));
  if (a instanceof Headers) return deepEq([...a], [...b], pairs);
  if (a instanceof Map) {
    if (a.size !== b.size) return false;
    for (const [k, v] of a) if (!b.has(k) || !deepEq(v, b.get(k), pairs)) return false;
    return true;
  }
  if (a instanceof Set) {
    if (a.size !== b.size) return false;
    outer: for (const x of a) {
      if (b.has(x)) continue;
      if (typeof x === "object" && x !== null) {
        for (const y of b) if (deepEq(x, y, pairs)) continue outer;
      }
      return false;
    }
    return true;
  }
  if (Array.isArray(a) && a.length !== b.length) return false;
  const ka = Object.keys(a), kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  for (const k of ka) {
    if (!Object.prototype.hasOwnProperty.call(b, k) || !deepEq(a[k], b[k], pairs)) return false;
  }
  return true;
}

// diff shows expected and actual line by line, as node's assert does:
// "-" lines are only in expected, "+" lines only in actual.
function diff(expected, actual) {
  const e = expected.split("\n"), a = actual.split("\n");
  const n = e.length, m = a.length;
  const lcs = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = e[i] === a[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && e[i] === a[j]) out.push(["  ", e[i++], j++]);
    else if (j < m && (i === n || lcs[i][j + 1] >= lcs[i + 1][j])) out.push(["+ ", a[j++]]);
    else out.push(["- ", e[i++]]);
  }
  // Keep three lines of context around each change.
  const keep = out.map(() => false);
  out.forEach(([mark], k) => {
    if (mark !== "  ") for (let d = -3; d <= 3; d++) if (k + d >= 0 && k + d < out.length) keep[k + d] = true;
  });
  const lines = [];
  let skipped = false;
  out.forEach(([mark, text], k) => {
    if (keep[k]) {
      lines.push(mark + text);
      skipped = false;
    } else if (!skipped) {
      lines.push("  ...");
      skipped = true;
    }
  });
  const max = 80;
  if (lines.length > max) lines.splice(max, lines.length - max, `  ... (${lines.length - max} more lines)`);
  return lines.join("\n");
}

// differ describes two values that should have been equal: objects as a
// diff, anything else side by side.
function differ(actual, expected, op) {
  const a = inspect(actual), e = inspect(expected);
  if (a === e) {
    const why = op === "assert.equal"
      ? "they look alike but are not the same value; assert.deepEqual compares contents"
      : "they look alike: they differ in what is not shown, such as prototypes or non-enumerable properties";
    return `actual ${a}, expected ${e} (${why})`;
  }
  const isObj = (x) => typeof x === "object" && x !== null;
  if (isObj(actual) && isObj(expected)) {
    return `values differ (+ actual, - expected)\n${diff(inspect(expected, true), inspect(actual, true))}`;
  }
  if (!a.includes("\n") && !e.includes("\n") && a.length + e.length <= 100) {
    return `actual ${a}, expected ${e}`;
  }
  return `values differ\nactual:   ${a}\nexpected: ${e}`;
}

function describeError(err) {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return inspect(err);
}

// checkError validates what was thrown or rejected against expected: a
// RegExp tested on String(err), an Error class, a predicate, or an object
// whose properties must match.
function checkError(where, op, message, err, expected) {
  if (expected instanceof RegExp) {
    if (!expected.test(String(err))) failAt(where, message, op, `${describeError(err)} does not match ${expected}`);
    return;
  }
  if (typeof expected === "function") {
    if (expected === Error || expected.prototype instanceof Error) {
      if (!(err instanceof expected)) failAt(where, message, op, `got ${describeError(err)}, expected a ${expected.name}`);
      return;
    }
    if (expected(err) !== true) failAt(where, message, op, `the validation function rejected ${describeError(err)}`);
    return;
  }
  if (typeof expected === "object" && expected !== null) {
    for (const [k, want] of Object.entries(expected)) {
      const got = err === null || err === undefined ? undefined : err[k];
      const ok = want instanceof RegExp && typeof got === "string" ? want.test(got) : deepEq(got, want);
      if (!ok) failAt(where, message, op, `${describeError(err)}: its ${k} is ${inspect(got)}, expected ${inspect(want)}`);
    }
    return;
  }
  throw new TypeError(`${op}: expected must be a RegExp, an Error class, a function or an object`);
}

function optionalMessage(expected, message) {
  return typeof expected === "string" && message === undefined ? [undefined, expected] : [expected, message];
}

function ok(value, message) {
  if (!value) failAt(native.where(), message, "assert.ok", `expected a truthy value, actual ${inspect(value)}`, { actual: value, expected: true });
}

export const assert = Object.assign(function assert(value, message) { ok(value, message); }, {
  ok,
  equal(actual, expected, message) {
    if (!Object.is(actual, expected)) failAt(native.where(), message, "assert.equal", differ(actual, expected, "assert.equal"), { actual, expected });
  },
  notEqual(actual, expected, message) {
    if (Object.is(actual, expected)) failAt(native.where(), message, "assert.notEqual", `both are ${inspect(actual)}`, { actual, expected });
  },
  deepEqual(actual, expected, message) {
    if (!deepEq(actual, expected)) failAt(native.where(), message, "assert.deepEqual", differ(actual, expected, "assert.deepEqual"), { actual, expected });
  },
  notDeepEqual(actual, expected, message) {
    if (deepEq(actual, expected)) failAt(native.where(), message, "assert.notDeepEqual", `both are ${inspect(actual)}`, { actual, expected });
  },
  match(string, regexp, message) {
    const where = native.where();
    if (!(regexp instanceof RegExp)) throw new TypeError("assert.match(string, regexp): regexp must be a RegExp");
    if (typeof string !== "string") {
      failAt(where, message, "assert.match", `actual must be a string, got ${inspect(string)} (${typeof string})`, { actual: string, expected: regexp });
    }
    if (string.search(regexp) < 0) failAt(where, message, "assert.match", `actual ${inspect(string)} does not match ${regexp}`, { actual: string, expected: regexp });
  },
  doesNotMatch(string, regexp, message) {
    const where = native.where();
    if (!(regexp instanceof RegExp)) throw new TypeError("assert.doesNotMatch(string, regexp): regexp must be a RegExp");
    if (typeof string !== "string") {
      failAt(where, message, "assert.doesNotMatch", `actual must be a string, got ${inspect(string)} (${typeof string})`, { actual: string, expected: regexp });
    }
    if (string.search(regexp) >= 0) failAt(where, message, "assert.doesNotMatch", `actual ${inspect(string)} matches ${regexp}`, { actual: string, expected: regexp });
  },
  throws(fn, expectedArg, messageArg) {
    const where = native.where();
    const [expected, message] = optionalMessage(expectedArg, messageArg);
    if (typeof fn !== "function") throw new TypeError("assert.throws(fn): fn must be a function");
    let threw = false, err;
    try {
      fn();
    } catch (e) {
      threw = true;
      err = e;
    }
    if (!threw) failAt(where, message, "assert.throws", "the function did not throw");
    if (expected !== undefined) checkError(where, "assert.throws", message, err, expected);
  },
  async rejects(promiseOrFn, expectedArg, messageArg) {
    const where = native.where();
    const [expected, message] = optionalMessage(expectedArg, messageArg);
    let p = promiseOrFn;
    if (typeof p === "function") {
      try {
        p = p();
      } catch (e) {
        failAt(where, message, "assert.rejects", `the function threw ${describeError(e)} instead of returning a promise`);
      }
    }
    if (p === null || typeof p !== "object" || typeof p.then !== "function") {
      failAt(where, message, "assert.rejects", `expected a promise, got ${inspect(p)}`);
    }
    let rejected = false, err, value;
    try {
      value = await p;
    } catch (e) {
      rejected = true;
      err = e;
    }
    if (!rejected) failAt(where, message, "assert.rejects", `the promise resolved${value === undefined ? "" : ` with ${inspect(value)}`} instead of rejecting`);
    if (expected !== undefined) checkError(where, "assert.rejects", message, err, expected);
  },
  fail(message) {
    failAt(native.where(), undefined, "assert.fail", message === undefined ? "failed" : String(message));
  },
});
