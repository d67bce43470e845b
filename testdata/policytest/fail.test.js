// Every test here fails; the Go test checks each message and location.
import { test, assert, dispatch, mockFetch } from "outbound:test";

test("equal", async () => {
  const res = await dispatch("https://evil.example.com/");
  assert.equal(res.status, 200);
});

test("deepEqual", () => {
  assert.deepEqual({ status: 520, body: "x" }, { status: 200, body: "x" });
});

test("unmocked fetch", async () => {
  const res = await dispatch("https://api.example.com/user", { env: { TOKEN: "x" } });
  assert.equal(res.status, 500);
});

test("message", () => {
  assert.equal(1, 2, "status of the blocked request");
});

test("same rendering", () => {
  assert.equal({}, {});
});

test("ok", () => {
  assert.ok("");
});

test("match", () => {
  assert.match(520, /52/);
});

test("rejects resolved", async () => {
  await assert.rejects(Promise.resolve("fine"));
});

test("rejects wrong error", async () => {
  await assert.rejects(Promise.reject(new TypeError("bad")), RangeError);
});

test("throws", () => {
  assert.throws(() => {});
});

test("thrown TypeError", () => {
  undefined.x;
});

test("thrown string", async () => {
  throw "just a string";
});

test("responder returns a string", async () => {
  mockFetch("http://plain.test/*", () => "not a response");
  const res = await dispatch("http://plain.test/");
  assert.equal(res.status, 502);
});

test("fail", () => {
  assert.fail("never here");
});

test("long strings", () => {
  assert.equal("a".repeat(60), "b".repeat(60));
});
