// Policy under test for internal/policytest: a plain class with every
// kind of handler, and a blocked hook.
export default {
  enableInternet: false,
  interceptHttps: true,
  allowedHosts: ["*.example.com", "plain.test"],
  deniedHosts: ["evil.example.com"],
  outboundByHost: {
    "api.example.com": async (request, env, ctx) => {
      console.log("api handler for", ctx.containerId);
      const r = new Request(request);
      r.headers.set("authorization", `Bearer ${env.TOKEN}`);
      return fetch(r);
    },
    "loop.example.com": () => {
      for (;;) {}
    },
    "throws.example.com": () => {
      throw new TypeError("the handler broke");
    },
    "kv.example.com": async (request, env, ctx) => {
      const before = await env.STORE.get("counter");
      const next = String(Number(before ?? "0") + 1);
      await env.STORE.put("counter", next);
      await env.STORE.put(`seen/${ctx.containerId}`, request.method);
      await env.STORE.delete("stale");
      return new Response(next);
    },
    "echo.example.com": async (request) =>
      Response.json({
        method: request.method,
        url: request.url,
        header: request.headers.get("x-test"),
        proxyAuth: request.headers.get("proxy-authorization"),
        body: await request.text(),
      }),
  },
  outboundHandlers: {
    tag: (request, env, ctx) => Response.json({ params: ctx.params ?? null, id: ctx.containerId, class: ctx.className }),
    refuse: () => new Response("refused", { status: 403 }),
  },
};

export function blocked(request, env, ctx) {
  return Response.json({ reason: ctx.reason, host: new URL(request.url).hostname }, { status: 403 });
}
