// The blocked hook written where the rest of a class's policy is: a static
// method, a static assigned afterwards, one inherited from a base class,
// and the module's named export for a class with none of its own.
import { Sandbox } from "@cloudflare/sandbox";

export class StaticHook extends Sandbox {
  enableInternet = false;
  static blocked(request, env, ctx) {
    return Response.json({ hook: "static", reason: ctx.reason, className: ctx.className, self: this.name }, { status: 403 });
  }
}

export class AssignedHook extends Sandbox {
  enableInternet = false;
}
AssignedHook.blocked = (request, env, ctx) => new Response(`assigned ${ctx.reason}`, { status: 451 });

export class InheritedHook extends StaticHook {}

export class ModuleHook extends Sandbox {
  enableInternet = false;
}

export function blocked(request, env, ctx) {
  return new Response(`module ${ctx.className} ${ctx.reason}`, { status: 403 });
}
