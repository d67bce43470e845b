// Handler tests for setup-then-lockdown.js: run with `outbound test`.
import { test, assert, dispatch, decide, mockFetch } from "outbound:test";

const npm = "https://registry.npmjs.org/left-pad";
const setup = { outboundHandler: ["allowHosts", { allowedHostnames: ["registry.npmjs.org"] }] };
const lockdown = { outboundHandler: "noHttp" };

test("before setup nothing leaves", async () => {
  const res = await dispatch(npm);
  assert.equal(res.status, 520);
  assert.deepEqual(await decide(npm), { step: 9, handler: null, blocked: true, reason: "default_deny" });
});

test("during setup npm is reachable", async () => {
  const registry = mockFetch("https://registry.npmjs.org/*", () => Response.json({ name: "left-pad" }));
  const res = await dispatch(npm, setup);
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { name: "left-pad" });
  assert.equal(registry.calls.length, 1);
  assert.equal(registry.calls[0].url, npm);
});

test("during setup other hosts are refused", async () => {
  const res = await dispatch("https://evil.example/x", setup);
  assert.equal(res.status, 403);
  assert.match(await res.text(), /evil\.example is not allowed during setup/);
});

test("the lockdown handler refuses npm after setup", async () => {
  const res = await dispatch(npm, lockdown);
  assert.equal(res.status, 403);
  assert.deepEqual(await decide(npm, lockdown), { step: 5, handler: "noHttp", blocked: false, reason: null });
});

test("an unknown handler name is refused as upstream refuses it", async () => {
  await assert.rejects(
    dispatch(npm, { outboundHandler: "allowEverything" }),
    /Outbound handler method 'allowEverything' not found in outboundHandlers for default/,
  );
});
