import { Sandbox } from "@cloudflare/sandbox";
import { Container, ContainerProxy, getContainer } from "@cloudflare/containers";
import { helper, type Greeting } from "./lib/helper.ts";

interface Params { allowedHostnames: string[] }

export class MySandbox extends Sandbox {
  enableInternet = false;
  interceptHttps = true;
  allowedHosts: string[] = ["github.com"];
}
MySandbox.outboundByHost = { "github.com": (req: Request, env: any, ctx: any): Response => new Response(helper("gh")) };
MySandbox.outboundHandlers = { noHttp: () => new Response(null, { status: 403 }) };
MySandbox.outboundHandlers = {
  allowHosts: (req: Request, env: unknown, ctx: { params: Params }) => Response.json(ctx.params.allowedHostnames),
};
MySandbox.outboundProxy = async (req: Request): Promise<Response> => fetch(req);

export class FieldForm extends Container {
  static outboundByHost = { "a.com": () => new Response("a"), "b.com": () => new Response("b") };
  static outboundHandlers = { z: () => new Response("z"), a: () => new Response("a") };
  deniedHosts = ["evil.com"];
}

export class Replaced extends Container {}
Replaced.outboundByHost = { "one.com": () => new Response("1") };
Replaced.outboundByHost = { "two.com": () => new Response("2") };

export const inert = [typeof ContainerProxy, typeof getContainer];
const g: Greeting = "hi";
export { g };
