import { test } from "outbound:test";

test("registers a test inside a test", () => {
  test("inner", () => {});
});
