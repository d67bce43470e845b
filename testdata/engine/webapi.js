// Web API checks run by jsapi's tests. Each entry of `tests` is one subtest;
// it passes when its promise fulfils. UPSTREAM is set by the Go harness.
function assert(cond, msg) {
  if (!cond) throw new Error("assertion failed: " + msg);
}
function eq(a, b, msg) {
  if (a !== b) throw new Error(`${msg}: got ${JSON.stringify(a)}, want ${JSON.stringify(b)}`);
}
function throws(fn, kind, msg) {
  try {
    fn();
  } catch (e) {
    if (kind && !(e instanceof kind) && e.name !== kind.name) throw new Error(`${msg}: threw ${e}, want ${kind.name}`);
    return e;
  }
  throw new Error(msg + ": did not throw");
}
async function rejects(p, kind, msg) {
  try {
    await p;
  } catch (e) {
    const name = typeof kind === "function" ? kind.name : kind;
    if (kind && !(typeof kind === "function" && e instanceof kind) && e.name !== name) throw new Error(`${msg}: rejected with ${e}, want ${kind.name || kind}`);
    return e;
  }
  throw new Error(msg + ": did not reject");
}

var tests = {
  async headers() {
    const h = new Headers({ "Content-Type": "text/plain", "X-A": "1" });
    eq(h.get("content-type"), "text/plain", "case-insensitive get");
    h.append("x-a", "2");
    eq(h.get("X-A"), "1, 2", "append combines");
    assert(h.has("x-a") && !h.has("x-b"), "has");
    h.set("x-a", "3");
    eq(h.get("x-a"), "3", "set replaces");
    h.delete("X-A");
    eq(h.get("x-a"), null, "delete");
    h.append("Set-Cookie", "a=1");
    h.append("Set-Cookie", "b=2");
    eq(JSON.stringify(h.getSetCookie()), '["a=1","b=2"]', "getSetCookie");
    eq(JSON.stringify([...h]), '[["content-type","text/plain"],["set-cookie","a=1"],["set-cookie","b=2"]]', "iteration sorted, lower case");
    eq(JSON.stringify([...h.keys()]), '["content-type","set-cookie","set-cookie"]', "keys");
    const seen = [];
    h.forEach((v, k) => seen.push(k + "=" + v));
    eq(seen.join(";"), "content-type=text/plain;set-cookie=a=1;set-cookie=b=2", "forEach");
    eq(new Headers([["a", "1"], ["b", "2"]]).get("b"), "2", "pairs init");
    eq(new Headers(h).get("content-type"), "text/plain", "Headers init");
    assert(h instanceof Headers, "instanceof");
    eq(Object.prototype.toString.call(h), "[object Headers]", "toStringTag");
    throws(() => h.set("bad name", "x"), TypeError, "invalid name");
    throws(() => h.set("x", "a\nb"), TypeError, "invalid value");
    throws(() => new Headers([["a"]]), TypeError, "bad pair");
  },

  async request() {
    const r = new Request("https://example.com/a?b=1", { method: "post", headers: { "x-a": "1" }, body: "hi" });
    eq(r.method, "POST", "method normalised");
    eq(r.url, "https://example.com/a?b=1", "url");
    eq(r.headers.get("content-type"), "text/plain;charset=UTF-8", "content-type from string body");
    eq(r.redirect, "follow", "redirect default");
    const copy = new Request(r);
    assert(r.bodyUsed, "body moved to the copy");
    copy.headers.set("x-auth", "secret");
    eq(r.headers.get("x-auth"), null, "copy headers are independent");
    eq(await copy.text(), "hi", "copy body");
    await rejects(copy.text(), TypeError, "body used twice");
    const withInit = new Request(new Request("https://a.com/", { method: "PUT", body: "x" }), { method: "PATCH", body: "y" });
    eq(withInit.method, "PATCH", "init overrides method");
    eq(await withInit.text(), "y", "init overrides body");
    const c = new Request("https://a.com/", { method: "POST", body: "z" }).clone();
    eq(await c.json().catch(() => "not json"), "not json", "json of non-JSON rejects");
    throws(() => new Request("/relative"), TypeError, "relative URL");
    throws(() => new Request("https://a.com/", { method: "GET", body: "x" }), TypeError, "GET with body");
    throws(() => new Request("https://a.com/", { method: "CONNECT" }), TypeError, "forbidden method");
    throws(() => new Request("https://a.com/", { redirect: "sideways" }), TypeError, "bad redirect");
    eq(new Request(new URL("https://u.com/x")).url, "https://u.com/x", "URL input");
  },

  async response() {
    const r = new Response("body", { status: 201, statusText: "Made", headers: { "x-a": "1" } });
    eq(r.status, 201, "status");
    eq(r.statusText, "Made", "statusText");
    assert(r.ok, "ok");
    eq(r.headers.get("x-a"), "1", "headers");
    eq(r.redirected, false, "redirected");
    eq(r.url, "", "url");
    eq(await r.clone().text(), "body", "clone");
    eq(await r.text(), "body", "text");
    const j = Response.json({ a: [1, 2] }, { status: 202 });
    eq(j.headers.get("content-type"), "application/json", "json content-type");
    eq((await j.json()).a[1], 2, "json body");
    const red = Response.redirect("https://example.com/x", 301);
    eq(red.status, 301, "redirect status");
    eq(red.headers.get("location"), "https://example.com/x", "location");
    throws(() => red.headers.set("x", "y"), TypeError, "redirect headers immutable");
    const empty = new Response(null, { status: 204 });
    eq(empty.body, null, "null body");
    eq(await empty.text(), "", "null body text");
    const ab = await new Response(new Uint8Array([104, 105])).arrayBuffer();
    eq(new TextDecoder().decode(ab), "hi", "arrayBuffer");
    const bs = await new Response("yo").body.getReader().read();
    eq(new TextDecoder().decode(bs.value), "yo", "body stream read");
    throws(() => new Response("x", { status: 700 }), RangeError, "status out of range");
    throws(() => new Response("x", { status: 204 }), TypeError, "body with null-body status");
    throws(() => Response.redirect("https://a.com/", 200), RangeError, "bad redirect status");
    throws(() => Response.json(undefined), TypeError, "json of undefined");
    assert(new Response() instanceof Response, "instanceof");
  },

  async fetchUpstream() {
    const res = await fetch(UPSTREAM + "/echo?x=1", { method: "POST", body: "payload", headers: { "x-auth-token": "tok" } });
    eq(res.status, 200, "status");
    eq(res.headers.get("x-seen"), "tok", "header reached upstream");
    throws(() => res.headers.set("a", "b"), TypeError, "fetched headers immutable");
    eq(await res.text(), "POST /echo payload", "body");
    eq(res.url, UPSTREAM + "/echo?x=1", "url");
    const red = await fetch(UPSTREAM + "/redirect");
    assert(red.redirected, "redirected");
    eq(await red.text(), "GET /echo ", "followed redirect");
    const manual = await fetch(UPSTREAM + "/redirect", { redirect: "manual" });
    eq(manual.status, 302, "manual redirect");
    await rejects(fetch(UPSTREAM + "/redirect", { redirect: "error" }), TypeError, "redirect error mode");
    await rejects(fetch("http://127.0.0.1:1/"), TypeError, "connection refused");
    await rejects(fetch("not a url"), TypeError, "invalid URL");
  },

  async fetchStreamRead() {
    const res = await fetch(UPSTREAM + "/big");
    const reader = res.body.getReader();
    let n = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      n += value.length;
    }
    eq(n, 200000, "streamed bytes");
    const res2 = await fetch(UPSTREAM + "/big");
    let m = 0;
    // goja has no for-await; scripts get it lowered by esbuild, which uses this.
    const it = res2.body[Symbol.asyncIterator]();
    for (;;) {
      const { value, done } = await it.next();
      if (done) break;
      m += value.length;
    }
    eq(m, 200000, "async iterator bytes");
    const res3 = await fetch(UPSTREAM + "/big");
    res3.body.getReader();
    await rejects(res3.text(), TypeError, "locked body");
  },

  async abort() {
    const ac = new AbortController();
    const p = fetch(UPSTREAM + "/slow", { signal: ac.signal });
    setTimeout(() => ac.abort(), 10);
    const e = await rejects(p, "AbortError", "aborted fetch");
    eq(e.name, "AbortError", "abort reason");
    assert(ac.signal.aborted, "signal aborted");
    let fired = 0;
    const ac2 = new AbortController();
    ac2.signal.addEventListener("abort", () => fired++);
    ac2.abort("why");
    ac2.abort("again");
    eq(fired, 1, "abort event once");
    eq(ac2.signal.reason, "why", "custom reason");
    throws(() => ac2.signal.throwIfAborted(), undefined, "throwIfAborted");
    const t = AbortSignal.timeout(5);
    const e2 = await rejects(fetch(UPSTREAM + "/slow", { signal: t }), "TimeoutError", "timeout signal");
    eq(e2.name, "TimeoutError", "timeout reason");
    assert(AbortSignal.abort().aborted, "AbortSignal.abort");
    throws(() => new AbortSignal(), TypeError, "AbortSignal constructor");
    await rejects(fetch(UPSTREAM + "/echo", { signal: AbortSignal.abort() }), "AbortError", "pre-aborted");
  },

  async url() {
    const u = new URL("https://user@example.com:8443/p/a?x=1&y=2#h");
    eq(u.hostname, "example.com", "hostname");
    eq(u.port, "8443", "port");
    eq(u.searchParams.get("y"), "2", "searchParams");
    const sp = new URLSearchParams("a=1&b=2");
    sp.append("c", "3");
    eq(sp.toString(), "a=1&b=2&c=3", "URLSearchParams");
    const r = new Request("https://a.com/", { method: "POST", body: sp });
    eq(r.headers.get("content-type"), "application/x-www-form-urlencoded;charset=UTF-8", "form content-type");
    eq(await r.text(), "a=1&b=2&c=3", "form body");
    throws(() => new URL("no scheme"), TypeError, "invalid URL");
  },

  async encoding() {
    const bytes = new TextEncoder().encode("héllo €");
    eq(bytes.length, 10, "utf-8 length");
    eq(new TextDecoder().decode(bytes), "héllo €", "round trip");
    const into = new Uint8Array(3);
    const res = new TextEncoder().encodeInto("aé€", into);
    eq(res.read, 2, "encodeInto read");
    eq(res.written, 3, "encodeInto written");
    const dec = new TextDecoder();
    eq(dec.decode(new Uint8Array([0xe2, 0x82]), { stream: true }) + dec.decode(new Uint8Array([0xac])), "€", "streaming decode");
    eq(new TextDecoder().decode(new Uint8Array([0xff])), "\ufffd", "replacement");
    throws(() => new TextDecoder("utf-8", { fatal: true }).decode(new Uint8Array([0xff])), TypeError, "fatal");
    throws(() => new TextDecoder("latin2"), RangeError, "unsupported label");
    eq(btoa("hello"), "aGVsbG8=", "btoa");
    eq(atob("aGVsbG8="), "hello", "atob");
    eq(atob(" aGVs bG8 "), "hello", "atob whitespace");
    eq(atob(btoa("\xff\x00")), "\xff\x00", "binary round trip");
    eq(throws(() => btoa("€"), undefined, "btoa non-latin1").name, "InvalidCharacterError", "btoa error name");
    eq(throws(() => atob("a"), undefined, "atob bad").name, "InvalidCharacterError", "atob error name");
  },

  async crypto() {
    const a = new Uint8Array(16);
    crypto.getRandomValues(a);
    assert(a.some((x) => x !== 0), "random bytes");
    assert(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(crypto.randomUUID()), "uuid v4");
    throws(() => crypto.getRandomValues(new Float32Array(4)), undefined, "float array");
    eq(throws(() => crypto.getRandomValues(new Uint8Array(65537)), undefined, "quota").name, "QuotaExceededError", "quota name");
    const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
    const data = new TextEncoder().encode("abc");
    eq(hex(await crypto.subtle.digest("SHA-256", data)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "sha-256");
    eq(hex(await crypto.subtle.digest({ name: "SHA-1" }, data)), "a9993e364706816aba3e25717850c26c9cd0d89d", "sha-1");
    eq((await crypto.subtle.digest("SHA-384", data)).byteLength, 48, "sha-384");
    eq((await crypto.subtle.digest("SHA-512", data)).byteLength, 64, "sha-512");
    await rejects(crypto.subtle.digest("MD5", data), "NotSupportedError", "md5");
    for (const [hash, want] of [
      ["SHA-256", "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"],
      ["SHA-384", null],
      ["SHA-512", null],
    ]) {
      const key = await crypto.subtle.importKey("raw", new TextEncoder().encode("key"), { name: "HMAC", hash }, false, ["sign", "verify"]);
      eq(key.type, "secret", "key type");
      eq(key.algorithm.hash.name, hash, "key hash");
      const msg = new TextEncoder().encode("The quick brown fox jumps over the lazy dog");
      const sig = await crypto.subtle.sign("HMAC", key, msg);
      if (want) eq(hex(sig), want, "hmac " + hash);
      assert(await crypto.subtle.verify("HMAC", key, sig, msg), "verify " + hash);
      assert(!(await crypto.subtle.verify("HMAC", key, sig, new TextEncoder().encode("tampered"))), "verify tampered " + hash);
    }
    const signOnly = await crypto.subtle.importKey("raw", new Uint8Array([1, 2, 3]), { name: "HMAC", hash: { name: "SHA-256" } }, false, ["sign"]);
    await rejects(crypto.subtle.verify("HMAC", signOnly, new Uint8Array(32), data), "InvalidAccessError", "usage not allowed");
    await rejects(crypto.subtle.importKey("raw", data, { name: "AES-GCM" }, false, ["encrypt"]), "NotSupportedError", "aes");
    await rejects(crypto.subtle.importKey("jwk", {}, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]), "NotSupportedError", "jwk");
    await rejects(crypto.subtle.importKey("raw", data, { name: "HMAC", hash: "SHA-999" }, false, ["sign"]), "NotSupportedError", "bad hash");
  },

  async timers() {
    const order = [];
    await new Promise((resolve) => {
      setTimeout((x) => order.push(x), 20, "late");
      const cancelled = setTimeout(() => order.push("cancelled"), 5);
      clearTimeout(cancelled);
      setTimeout(() => order.push("early"), 1);
      let n = 0;
      const iv = setInterval(() => {
        order.push("tick");
        if (++n === 3) clearInterval(iv);
      }, 2);
      setTimeout(resolve, 60);
    });
    eq(order.filter((x) => x === "tick").length, 3, "interval ran 3 times");
    assert(!order.includes("cancelled"), "clearTimeout");
    assert(order.indexOf("early") < order.indexOf("late"), "order");
    throws(() => setTimeout("code string", 1), TypeError, "string callback");
  },

  async microtasks() {
    const order = [];
    queueMicrotask(() => order.push("micro"));
    order.push("sync");
    await null;
    await null;
    eq(order.join(","), "sync,micro", "queueMicrotask");
    throws(() => queueMicrotask("nope"), TypeError, "non-function");
  },

  async clone() {
    const src = { a: [1, { b: "x" }], d: new Date(0), m: new Map([[1, 2]]), s: new Set([3]), u: new Uint8Array([1, 2]) };
    src.self = src;
    const c = structuredClone(src);
    assert(c !== src && c.a[1] !== src.a[1], "deep copy");
    eq(c.a[1].b, "x", "nested value");
    eq(c.d.getTime(), 0, "date");
    eq(c.m.get(1), 2, "map");
    assert(c.s.has(3), "set");
    eq(c.u[1], 2, "typed array");
    assert(c.self === c, "cycle");
    eq(throws(() => structuredClone({ f() {} }), undefined, "function").name, "DataCloneError", "function not clonable");
    eq(throws(() => structuredClone(new Request("https://a.com/")), undefined, "host object").name, "DataCloneError", "host objects not clonable");
  },

  async console() {
    console.log("hello", { a: 1 }, [1, "x"], null, undefined, 5);
    console.warn("careful");
    console.error(new Error("bad thing"));
    console.debug("details");
  },

  async kv() {
    eq(await env.KV.get("missing"), null, "missing key");
    await env.KV.put("k1", "v1");
    eq(await env.KV.get("k1"), "v1", "text");
    await env.KV.put("j", JSON.stringify({ a: 1 }));
    eq((await env.KV.get("j", "json")).a, 1, "json");
    eq((await env.KV.get("j", { type: "json" })).a, 1, "json via options");
    await env.KV.put("bin", new Uint8Array([1, 2, 3]));
    const ab = await env.KV.get("bin", "arrayBuffer");
    eq(new Uint8Array(ab)[2], 3, "arrayBuffer");
    await env.KV.put("ttl", "x", { expirationTtl: 60 });
    eq(await env.KV.get("ttl"), "x", "ttl value");
    for (const k of ["p/1", "p/2", "p/3"]) await env.KV.put(k, "v");
    const page1 = await env.KV.list({ prefix: "p/", limit: 2 });
    eq(page1.keys.map((k) => k.name).join(","), "p/1,p/2", "list page 1");
    eq(page1.list_complete, false, "page 1 incomplete");
    const page2 = await env.KV.list({ prefix: "p/", cursor: page1.cursor });
    eq(page2.keys.map((k) => k.name).join(","), "p/3", "list page 2");
    eq(page2.list_complete, true, "page 2 complete");
    await env.KV.delete("k1");
    eq(await env.KV.get("k1"), null, "deleted");
    await rejects(env.KV.get("k1", "xml"), TypeError, "bad type");
    await rejects(env.KV.put("x", "y", { expirationTtl: -1 }), TypeError, "bad ttl");
    await rejects(env.KV.get(""), TypeError, "empty key");
    await rejects(env.KV.list({ limit: 5000 }), TypeError, "bad limit");
    await rejects(env.BROKEN.get("a"), TypeError, "store error");
  },

  async env() {
    eq(env.SECRET, "s3cr3t", "var");
    assert(Object.isFrozen(env), "frozen");
    throws(() => { "use strict"; env.SECRET = "x"; }, TypeError, "assign to frozen env");
    eq(env.SECRET, "s3cr3t", "unchanged");
  },
};
