// __TARGET__ is replaced by the Go test with a loopback server that counts
// what reaches it: nothing may.
import { test, assert, dispatch } from "outbound:test";

test("a handler's fetch without a mock", async () => {
  const res = await dispatch("http://fetcher.test/?target=" + encodeURIComponent("__TARGET__"));
  assert.equal(res.status, 500);
});

test("forwarding at step 8 without a mock", async () => {
  const res = await dispatch("__TARGET__");
  assert.equal(res.status, 502);
});

test("the test's own fetch without a mock", async () => {
  await fetch("__TARGET__");
});
