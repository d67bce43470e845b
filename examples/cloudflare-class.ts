// The Cloudflare form, as a Workers project writes it: a class extending
// Sandbox with its outbound handlers. outbound runs it unchanged.
import { Sandbox } from "@cloudflare/sandbox";

interface Env {
  GITHUB_TOKEN: string;
}

export class MySandbox extends Sandbox<Env> {
  enableInternet = false;
  interceptHttps = true;
  allowedHosts = ["github.com", "api.github.com"];
}

MySandbox.outboundByHost = {
  "api.github.com": (request: Request, env: Env): Promise<Response> => {
    const r = new Request(request);
    r.headers.set("Authorization", `Bearer ${env.GITHUB_TOKEN}`);
    return fetch(r);
  },
};

MySandbox.outboundHandlers = {
  noHttp: (): Response => new Response(null, { status: 403 }),
};
