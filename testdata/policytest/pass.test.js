// Every test here passes: it pins down what dispatch, decide and mockFetch
// do, through the real evaluation order.
import { test, assert, dispatch, decide, mockFetch } from "outbound:test";

mockFetch("https://shared.example.com/*", () => new Response("from a file-wide mock"));

test("a handler's fetch is answered by the mock, and recorded", async () => {
  const api = mockFetch("https://api.example.com/*", (req) => new Response(`upstream saw ${req.headers.get("authorization")}`));
  const res = await dispatch("https://api.example.com/v1/user?x=1", { env: { TOKEN: "t0k" }, instance: "sbx-7" });
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "upstream saw Bearer t0k");
  assert.equal(api.calls.length, 1);
  assert.equal(api.calls[0].url, "https://api.example.com/v1/user?x=1");
  assert.equal(api.calls[0].method, "GET");
});

test("forwarding at step 7 goes to the mocks too", async () => {
  const up = mockFetch("http://plain.test/*", async (req) => new Response(`${req.method} ${await req.text()}`, { status: 201 }));
  const res = await dispatch("http://plain.test/upload", { method: "PUT", body: "payload", headers: { "x-a": "1" } });
  assert.equal(res.status, 201);
  assert.equal(await res.text(), "PUT payload");
  assert.equal(up.calls[0].headers.get("x-a"), "1");
  assert.equal(await up.calls[0].text(), "payload");
  assert.deepEqual(await decide("http://plain.test/"), { step: 7, handler: null, blocked: false, reason: null });
});

test("a mock made at the top level serves every test", async () => {
  const res = await dispatch("https://shared.example.com/");
  assert.equal(await res.text(), "from a file-wide mock");
});

test("the blocked hook answers blocked requests, with the reason", async () => {
  const denied = await dispatch("https://evil.example.com/");
  assert.equal(denied.status, 403);
  assert.deepEqual(await denied.json(), { reason: "denied", host: "evil.example.com" });
  const notAllowed = await dispatch("http://elsewhere.test/");
  assert.deepEqual(await notAllowed.json(), { reason: "not_allowed", host: "elsewhere.test" });
  assert.deepEqual(await decide("https://evil.example.com/"), { step: 1, handler: "blocked", blocked: true, reason: "denied" });
});

test("runtime overrides go through the runtime methods", async () => {
  const res = await dispatch("https://www.example.com/", { outboundHandler: ["tag", { n: 1 }], class: "default", instance: "sbx-1" });
  assert.deepEqual(await res.json(), { params: { n: 1 }, id: "sbx-1", class: "default" });
  const byHost = await dispatch("https://api.example.com/", { outboundByHost: { "*.example.com": "refuse" } });
  assert.equal(byHost.status, 403);
  assert.deepEqual(await decide("https://api.example.com/", { outboundByHost: { "*.example.com": ["tag", null] } }), {
    step: 3, handler: "tag", blocked: false, reason: null,
  });
  assert.equal((await decide("https://www.example.com/", { deniedHosts: ["www.example.com"] })).reason, "denied");
  assert.equal((await decide("http://plain.test/", { allowedHosts: [] })).reason, "not_allowed");
  assert.equal((await decide("https://api.example.com/", { allowedHosts: ["*.example.com"] })).step, 4);
});

test("a bad override is refused with upstream's message", async () => {
  await assert.rejects(dispatch("https://www.example.com/", { outboundHandler: "nope" }),
    /outboundHandler: Outbound handler method 'nope' not found in outboundHandlers for default/);
  await assert.rejects(decide("https://www.example.com/", { class: "Missing" }), /class: unknown class/);
  await assert.rejects(dispatch("https://www.example.com/", { instance: "bad id!" }), /invalid instance id/);
  await assert.rejects(dispatch("https://www.example.com/", { allowHosts: [] }), { name: "TypeError", message: /unknown option "allowHosts"/ });
});

test("KV bindings are plain objects, and show what the handler wrote", async () => {
  const STORE = { counter: "41", stale: "x", untouched: "y" };
  const res = await dispatch("https://kv.example.com/", { env: { STORE }, instance: "sbx-2", method: "POST" });
  assert.equal(await res.text(), "42");
  assert.deepEqual(STORE, { counter: "42", untouched: "y", "seen/sbx-2": "POST" });
});

test("the request reaches the handler as the proxy would hand it over", async () => {
  const res = await dispatch(new Request("https://ECHO.example.com./p?q=1", { method: "POST", body: "hi", headers: { "x-test": "yes", "proxy-authorization": "Basic c2VjcmV0" } }));
  assert.deepEqual(await res.json(), {
    method: "POST", url: "https://echo.example.com/p?q=1", header: "yes", proxyAuth: null, body: "hi",
  });
});

test("a handler that throws gets 500, as in serve", async () => {
  const res = await dispatch("https://throws.example.com/");
  assert.equal(res.status, 500);
  assert.equal(await res.text(), "Handler failed");
});

test("a Response can be the responder, and the test's own fetch is mocked", async () => {
  const m = mockFetch("https://static.example.com", new Response("same every time"));
  assert.equal(await (await fetch("https://static.example.com/")).text(), "same every time");
  assert.equal(await (await fetch("https://static.example.com")).text(), "same every time");
  assert.equal(m.calls.length, 2);
});

test("dispatches may run at once", async () => {
  mockFetch("https://api.example.com/*", (req) => new Response(req.url));
  const urls = [1, 2, 3, 4].map((i) => `https://api.example.com/${i}`);
  const bodies = await Promise.all(urls.map(async (u) => (await dispatch(u, { env: { TOKEN: "t" } })).text()));
  assert.deepEqual(bodies, urls);
});

test("assert helpers that pass", async () => {
  assert(true);
  assert.ok(1);
  assert.notEqual(1, "1");
  assert.deepEqual({ a: [1, { b: new Map([["k", new Set([1])]]) }] }, { a: [1, { b: new Map([["k", new Set([1])]]) }] });
  assert.notDeepEqual({ a: 1 }, { a: "1" });
  assert.deepEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2]));
  assert.match("hello", /ell/);
  assert.doesNotMatch("hello", /xyz/);
  assert.throws(() => { throw new RangeError("r") }, RangeError);
  await assert.rejects(async () => { throw new Error("e1") }, /e1/);
  await assert.rejects(Promise.reject(new TypeError("t")), TypeError);
  await assert.rejects(Promise.reject(new Error("x")), (e) => e.message === "x");
});
