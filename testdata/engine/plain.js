export default {
  enableInternet: false,
  interceptHttps: true,
  allowedHosts: ["github.com", "*.npmjs.org", "10.1.0.0/16"],
  deniedHosts: ["evil.com"],
  outboundByHost: {
    "github.com": (request, env, ctx) => new Response("gh " + ctx.containerId),
    "*.example.com": () => new Response("glob"),
  },
  outboundHandlers: {
    allowHosts(request, env, ctx) {
      return Response.json({ params: ctx.params === undefined ? "undefined" : ctx.params, id: ctx.containerId, cls: ctx.className, hasParams: "params" in ctx });
    },
    noHttp() { return new Response(null, { status: 403 }); },
  },
  outbound(request, env, ctx) {
    return new Response(`hello ${request.method} ${request.url} ${env.GREETING}`, { status: 201, headers: { "x-class": ctx.className } });
  },
};

export function blocked(request, env, ctx) {
  return Response.json({ blocked: true, reason: ctx.reason, url: request.url }, { status: 520 });
}
