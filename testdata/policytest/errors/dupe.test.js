import { test } from "outbound:test";

test("same name", () => {});
test("same name", () => {});
