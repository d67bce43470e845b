// Handler tests for json-block.js: run with `outbound test`.
import { test, assert, dispatch, decide, mockFetch } from "outbound:test";

test("denied hosts get a JSON refusal with the reason", async () => {
  const res = await dispatch("http://private.example.org/secrets");
  assert.equal(res.status, 403);
  assert.deepEqual(await res.json(), { error: "egress_blocked", reason: "denied", host: "private.example.org" });
});

test("over HTTPS without interception the CONNECT is refused with the default 520", async () => {
  // The tunnel is opaque, so there is no request for the hook to answer.
  const res = await dispatch("https://private.example.org/secrets");
  assert.equal(res.status, 520);
  assert.equal(await res.text(), "Origin is disallowed");
  assert.deepEqual(await decide("https://private.example.org/"), { step: 1, handler: null, blocked: true, reason: "denied" });
});

test("hosts outside the allow list are not_allowed", async () => {
  const res = await dispatch("http://nowhere.example.net/");
  assert.deepEqual(await res.json(), { error: "egress_blocked", reason: "not_allowed", host: "nowhere.example.net" });
  assert.deepEqual(await decide("http://nowhere.example.net/"), {
    step: 2, handler: "blocked", blocked: true, reason: "not_allowed",
  });
});

test("deniedHosts wins over a matching allowedHosts glob", async () => {
  assert.equal((await decide("https://private.example.org/")).reason, "denied");
  assert.equal((await decide("https://public.example.org/")).blocked, false);
});

test("allowed hosts are forwarded as they are (step 7)", async () => {
  const api = mockFetch("https://api.example.com/*", (req) => new Response(`hello ${req.method}`));
  const res = await dispatch("https://api.example.com/v1/things", { method: "POST", body: "{}" });
  assert.equal(await res.text(), "hello POST");
  assert.equal(await api.calls[0].text(), "{}");
  assert.equal((await decide("https://api.example.com/")).step, 7);
});

test("a runtime allow list replaces the class's", async () => {
  const opts = { allowedHosts: ["api.example.com"] };
  assert.equal((await decide("https://cdn.example.org/", opts)).reason, "not_allowed");
});
