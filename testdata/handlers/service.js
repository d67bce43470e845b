// Policy for handlers.Service tests: every chain outcome reachable from
// two classes, plus a blocked hook.
import { Sandbox } from "@cloudflare/sandbox";

export class Open extends Sandbox {
  enableInternet = true;
  interceptHttps = true;
  deniedHosts = ["evil.test", "throwblock.test"];
}
Open.outboundByHost = {
  "byhost.test": (req, env, ctx) => new Response(`byhost ${ctx.containerId} ${ctx.className} ${env.GREETING}`),
  "throws.test": () => { throw new Error("SECRET-EXCEPTION-TEXT"); },
  "loop.test": () => { for (;;) {} },
  "notresponse.test": () => 42,
};
Open.outboundHandlers = {
  echo: (req, env, ctx) => Response.json({
    params: "params" in ctx ? (ctx.params === undefined ? "undefined" : ctx.params) : "absent",
    url: req.url,
    auth: req.headers.get("proxy-authorization"),
  }),
};

export class Closed extends Sandbox {
  enableInternet = false;
  allowedHosts = ["allowed.test", "*.allowed.test"];
}
Closed.outbound = (req, env, ctx) => new Response(`outbound ${req.method} ${req.url}`, { status: 201 });

export function blocked(req, env, ctx) {
  if (req.url.includes("throwblock")) throw new Error("SECRET-BLOCKED-TEXT");
  return Response.json({ blocked: true, reason: ctx.reason, url: req.url }, { status: 520 });
}
