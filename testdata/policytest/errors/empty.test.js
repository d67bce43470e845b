import { assert } from "outbound:test";

assert.ok(true);
