// A TypeScript policy in the Cloudflare form, for a TypeScript test file.
import { Sandbox } from "@cloudflare/sandbox";
import { greeting } from "./greeting";

interface Env {
  NAME: string;
}

export class Agent extends Sandbox<Env> {
  enableInternet = false;
  interceptHttps = true;
}

Agent.outboundByHost = {
  "hello.test": (request: Request, env: Env): Response => {
    console.log(`greeting ${env.NAME}`);
    return new Response(greeting(env.NAME));
  },
};
