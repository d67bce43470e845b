// Timeouts: a handler that runs away, a test that spins, and tests after
// them that still run.
import { test, assert, dispatch } from "outbound:test";

test("handler runs away", async () => {
  await dispatch("https://loop.example.com/");
});

test("runs after a handler timeout", async () => {
  assert.equal((await dispatch("https://evil.example.com/")).status, 403);
});

test("test spins", () => {
  for (;;) {}
});

test("test never settles", () => new Promise(() => {}));

test("runs after the runtime was replaced", () => {
  console.log("still here");
});
