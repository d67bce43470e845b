// Handler tests for github-token.js: run with `outbound test`.
import { test, assert, dispatch, decide, mockFetch } from "outbound:test";

const env = { GITHUB_TOKEN: "ghp_test123" };

test("injects the GitHub token", async () => {
  const github = mockFetch("https://api.github.com/*", () => new Response("{}", { status: 200 }));
  const res = await dispatch("https://api.github.com/user", { env });
  assert.equal(res.status, 200);
  assert.equal(github.calls.length, 1);
  assert.equal(github.calls[0].headers.get("authorization"), "Bearer ghp_test123");
});

test("answers 503 when the token is missing", async () => {
  const res = await dispatch("https://github.com/org/repo.git/info/refs");
  assert.equal(res.status, 503);
  assert.match(await res.text(), /GITHUB_TOKEN is not set/);
});

test("everything else is blocked", async () => {
  const res = await dispatch("https://example.com/");
  assert.equal(res.status, 520);
  assert.deepEqual(await decide("https://example.com/"), {
    step: 2, handler: null, blocked: true, reason: "not_allowed",
  });
});
