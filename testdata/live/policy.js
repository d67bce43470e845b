// The live view's tests: handlers that log, a denied host, and two
// outboundHandlers to switch between.
export default {
  deniedHosts: ["blocked.example"],
  outboundHandlers: {
    tag(request, env, ctx) {
      console.log("tag handler", new URL(request.url).pathname);
      return new Response("tag " + JSON.stringify(ctx.params));
    },
    quiet() {
      return new Response("quiet");
    },
  },
  outbound(request, env) {
    console.warn("outbound sees key", env.API_KEY);
    return new Response("static");
  },
};
