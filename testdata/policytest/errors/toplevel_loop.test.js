import { test } from "outbound:test";

test("never runs", () => {});
for (;;) {}
