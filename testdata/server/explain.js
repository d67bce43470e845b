// Policy for the test that explain and live traffic agree: every step of
// the chain is reachable, over HTTP, intercepted HTTPS and raw tunnels.
import { Sandbox } from "@cloudflare/sandbox";

const say = (what) => () => new Response(what);

export class Open extends Sandbox {
  enableInternet = true;
  interceptHttps = true;
  deniedHosts = ["evil.test"];
}
Open.outboundByHost = { "byhost.test": say("by-host"), "*.glob.test": say("glob") };
Open.outboundHandlers = { named: say("named"), other: say("other") };

export class Closed extends Sandbox {
  enableInternet = false;
  allowedHosts = ["allowed.test", "*.allowed.test"];
}
Closed.outbound = say("outbound");

export class Plain extends Sandbox {
  enableInternet = false;
  allowedHosts = ["allowed.test"];
}
Plain.outboundHandlers = { named: say("named") };

export function blocked(request, env, ctx) {
  return new Response("blocked " + ctx.reason, { status: 451 });
}
