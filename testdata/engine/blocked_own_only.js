// One class has its own blocked hook and the module exports none: the
// other class gets the default block response.
import { Sandbox } from "@cloudflare/sandbox";

export class WithHook extends Sandbox {
  enableInternet = false;
  static blocked(request, env, ctx) {
    return new Response(`own ${ctx.reason}`, { status: 403 });
  }
}

export class WithoutHook extends Sandbox {
  enableInternet = false;
}
