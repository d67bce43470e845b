import { test } from "outbound:test";

test("has no script beside it", () => {});
