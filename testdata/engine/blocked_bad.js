import { Sandbox } from "@cloudflare/sandbox";

export class Bad extends Sandbox {
  static blocked = "not a function";
}
