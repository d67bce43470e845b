import { test, assert, dispatch, decide } from "outbound:test";

type Decision = { step: number; handler: string | null; blocked: boolean; reason: string | null };

test("a TypeScript test of a TypeScript policy", async () => {
  const res: Response = await dispatch("https://hello.test/", { class: "Agent", env: { NAME: "ts" } });
  assert.equal(await res.text(), "hello, ts");
  const d: Decision = await decide("https://other.test/", { class: "Agent" });
  assert.equal(d.reason, "default_deny");
});

test("a failure points into the .ts file", () => {
  const n: number = 1;
  assert.equal(n, 2);
});
