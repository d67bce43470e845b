// Handler tests for virtual-kv.js: run with `outbound test`.
import { test, assert, dispatch } from "outbound:test";

test("a PUT stores under the instance's prefix, a GET reads it back", async () => {
  const STORE = {};
  const put = await dispatch("http://my.kv/greeting", { instance: "sbx-1", env: { STORE }, method: "PUT", body: "hello" });
  assert.equal(put.status, 204);
  assert.deepEqual(STORE, { "sbx-1/greeting": "hello" });
  const get = await dispatch("http://my.kv/greeting", { instance: "sbx-1", env: { STORE } });
  assert.equal(await get.text(), "hello");
});

test("one instance cannot read another's keys", async () => {
  const STORE = { "sbx-1/greeting": "hello" };
  const res = await dispatch("http://my.kv/greeting", { instance: "sbx-2", env: { STORE } });
  assert.equal(res.status, 404);
});

test("DELETE removes the key", async () => {
  const STORE = { "sbx-1/greeting": "hello", "sbx-1/other": "kept" };
  const res = await dispatch("http://my.kv/greeting", { instance: "sbx-1", env: { STORE }, method: "DELETE" });
  assert.equal(res.status, 204);
  assert.deepEqual(STORE, { "sbx-1/other": "kept" });
});

test("other hosts are blocked", async () => {
  assert.equal((await dispatch("http://elsewhere.example/", { env: { STORE: {} } })).status, 520);
});
