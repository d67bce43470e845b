import { test } from "outbound:test";

test("its script does not compile", () => {});
