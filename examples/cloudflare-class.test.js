// Handler tests for cloudflare-class.ts: run with `outbound test`.
import { test, assert, dispatch, decide, mockFetch } from "outbound:test";

const opts = { class: "MySandbox", env: { GITHUB_TOKEN: "ghp_ts" } };

test("api.github.com gets the token", async () => {
  const api = mockFetch("https://api.github.com/*", () => new Response("{}"));
  const res = await dispatch("https://api.github.com/user", opts);
  assert.equal(res.status, 200);
  assert.equal(api.calls[0].headers.get("authorization"), "Bearer ghp_ts");
});

test("github.com is allowed with no handler and forwarded as is", async () => {
  const gh = mockFetch("https://github.com/*", () => new Response("page"));
  const res = await dispatch("https://github.com/", opts);
  assert.equal(await res.text(), "page");
  assert.equal(gh.calls[0].headers.get("authorization"), null);
  assert.deepEqual(await decide("https://github.com/", opts), { step: 7, handler: null, blocked: false, reason: null });
});

test("noHttp at runtime beats the allow-list fallback", async () => {
  const res = await dispatch("https://github.com/", { ...opts, outboundHandler: "noHttp" });
  assert.equal(res.status, 403);
});

test("everything else is blocked", async () => {
  assert.equal((await dispatch("https://example.com/", opts)).status, 520);
});
