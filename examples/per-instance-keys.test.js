// Handler tests for per-instance-keys.js: run with `outbound test`.
import { test, assert, dispatch, mockFetch } from "outbound:test";

const KEYS = { "sbx-1": "sk-one", "sbx-2": "sk-two" };

test("each instance gets its own key", async () => {
  const openai = mockFetch("https://api.openai.com/*", () => new Response("{}"));
  for (const instance of ["sbx-1", "sbx-2"]) {
    const res = await dispatch("https://api.openai.com/v1/chat/completions", {
      instance, env: { KEYS }, method: "POST", body: "{}",
    });
    assert.equal(res.status, 200);
  }
  assert.deepEqual(openai.calls.map((r) => r.headers.get("authorization")), ["Bearer sk-one", "Bearer sk-two"]);
});

test("an instance without a key is refused, and nothing leaves", async () => {
  const res = await dispatch("https://api.anthropic.com/v1/messages", { instance: "sbx-3", env: { KEYS } });
  assert.equal(res.status, 403);
  assert.match(await res.text(), /no key stored for sbx-3/);
});

test("other hosts go out untouched (enableInternet defaults to true)", async () => {
  const other = mockFetch("https://example.com/*", () => new Response("ok"));
  const res = await dispatch("https://example.com/", { instance: "sbx-1", env: { KEYS } });
  assert.equal(res.status, 200);
  assert.equal(other.calls[0].headers.get("authorization"), null);
});
